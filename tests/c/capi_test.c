/*
 * capi_test: the C API from C. Built and run by `cargo test --test capi` (tests/capi.rs),
 * also under valgrind there.
 *
 *   capi_test MODEL_DIR TMP_DIR [OTHER_MODEL_DIR]
 *
 * MODEL_DIR is a small checkpoint; TMP_DIR a writable folder; OTHER_MODEL_DIR a different
 * model (for the save/restore mismatch check; skipped if absent). Every check prints a line
 * only when it fails; the last line is "capi_test: N passed, M failed". Exit status 0 when
 * nothing failed.
 */
#define _POSIX_C_SOURCE 200809L

#include "wv.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_int passed;
static atomic_int failed;
static const char *model_dir;
static const char *tmp_dir;
static const char *other_model_dir;
static int under_valgrind;

#define CHECK(cond)                                                                             \
    do {                                                                                        \
        if (cond) {                                                                             \
            passed++;                                                                           \
        } else {                                                                                \
            failed++;                                                                           \
            printf("FAIL %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond,              \
                   wv_last_error());                                                            \
        }                                                                                       \
    } while (0)

/* The call must return `want`; for an error status, wv_last_error must say something. */
#define EXPECT(call, want)                                                                      \
    do {                                                                                        \
        wv_status got_ = (call);                                                                \
        wv_status want_ = (want);                                                               \
        if (got_ == want_ && (want_ == WV_OK || want_ == WV_DONE || want_ == WV_TIMEOUT ||      \
                              wv_last_error()[0] != '\0')) {                                    \
            passed++;                                                                           \
        } else {                                                                                \
            failed++;                                                                           \
            printf("FAIL %s:%d: %s returned %d (%s), expected %d (%s); last error: %s\n",       \
                   __FILE__, __LINE__, #call, got_, wv_status_name(got_), want_,                \
                   wv_status_name(want_), wv_last_error());                                     \
        }                                                                                       \
    } while (0)

#define REQUIRE_OK(call)                                                                        \
    do {                                                                                        \
        wv_status st_ = (call);                                                                 \
        if (st_ != WV_OK) {                                                                     \
            printf("FATAL %s:%d: %s returned %d (%s): %s\n", __FILE__, __LINE__, #call, st_,    \
                   wv_status_name(st_), wv_last_error());                                       \
            exit(2);                                                                            \
        }                                                                                       \
    } while (0)

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static wv_generate_options greedy(uint32_t max_tokens) {
    wv_generate_options o;
    wv_generate_options_init(&o);
    o.temperature = 0.0f;
    o.max_tokens = max_tokens;
    return o;
}

static wv_session *new_session(wv_model *m, uint32_t context_length) {
    wv_session_options so;
    wv_session_options_init(&so);
    so.context_length = context_length;
    wv_session *s = NULL;
    REQUIRE_OK(wv_session_new(m, &so, &s));
    return s;
}

static size_t token_count(wv_session *s) {
    size_t n = (size_t)-1;
    REQUIRE_OK(wv_session_token_count(s, &n));
    return n;
}

/* ---- a token collector, with knobs for the callback tests ---- */

#define MAX_COLLECT 4096
typedef struct {
    int32_t tokens[MAX_COLLECT];
    size_t n_tokens;       /* real tokens (not WV_NO_TOKEN) */
    char text[MAX_COLLECT * 8];
    size_t text_len;
    int calls;
    int no_token_calls;
    int nul_terminated; /* every text had a NUL at text[len] */
    int stop_after;     /* return non-zero after this many tokens (0: never) */
    /* re-entrancy */
    wv_session *self;
    wv_session *other;
    int cancel_self_after; /* call wv_session_cancel(self) after this many tokens */
    int free_self;         /* call wv_session_free(self) on the first token */
    wv_status reenter_generate;
    wv_status reenter_count;
    wv_status reenter_cancel;
    wv_status other_count;
    int reentered;
    /* threads */
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    int *started;
    long sleep_ms_per_token;
} collector;

static collector *collector_new(void) {
    collector *c = calloc(1, sizeof *c);
    if (!c) {
        exit(3);
    }
    c->nul_terminated = 1;
    c->reenter_generate = c->reenter_count = c->reenter_cancel = c->other_count = -100;
    return c;
}

static int32_t collect(void *ud, int32_t token, const char *text, size_t len) {
    collector *c = ud;
    c->calls++;
    if (text == NULL || text[len] != '\0') {
        c->nul_terminated = 0;
    }
    if (c->text_len + len < sizeof c->text) {
        memcpy(c->text + c->text_len, text, len);
        c->text_len += len;
        c->text[c->text_len] = '\0';
    }
    if (token == WV_NO_TOKEN) {
        c->no_token_calls++;
        return 0;
    }
    if (c->n_tokens < MAX_COLLECT) {
        c->tokens[c->n_tokens] = token;
    }
    c->n_tokens++;
    if (c->self && !c->reentered) {
        c->reentered = 1;
        wv_generate_options o = greedy(1);
        size_t n = 0;
        c->reenter_generate = wv_generate(c->self, "again", &o, collect, c);
        c->reenter_count = wv_session_token_count(c->self, &n);
        if (c->other) {
            c->other_count = wv_session_token_count(c->other, &n);
        }
    }
    if (c->self && c->cancel_self_after && (int)c->n_tokens == c->cancel_self_after) {
        c->reenter_cancel = wv_session_cancel(c->self);
    }
    if (c->self && c->free_self && c->n_tokens == 1) {
        wv_session_free(c->self);
    }
    if (c->mu) {
        pthread_mutex_lock(c->mu);
        *c->started = 1;
        pthread_cond_broadcast(c->cv);
        pthread_mutex_unlock(c->mu);
    }
    if (c->sleep_ms_per_token) {
        sleep_ms(c->sleep_ms_per_token);
    }
    return c->stop_after && (int)c->n_tokens >= c->stop_after;
}

static int same_tokens(const collector *a, const collector *b) {
    return a->n_tokens == b->n_tokens &&
           memcmp(a->tokens, b->tokens, a->n_tokens * sizeof a->tokens[0]) == 0;
}

/* ---- logging ---- */

typedef struct {
    atomic_int messages;
    atomic_int info;
    atomic_int bad;
    wv_status reentry;
} log_state;

static log_state logs = {0, 0, 0, -100};

static void on_log(void *ud, int32_t level, const char *message) {
    log_state *l = ud;
    l->messages++;
    if (level == WV_LOG_INFO) {
        l->info++;
    }
    if (level < WV_LOG_ERROR || level > WV_LOG_DEBUG || message == NULL || message[0] == '\0') {
        l->bad++;
    }
    l->reentry = wv_set_log_callback(NULL, NULL, WV_LOG_ERROR);
}

/* ---- progress ---- */

typedef struct {
    int calls;
    float last;
    int decreasing;
    int abort_at; /* return non-zero on this call (0: never) */
} progress_state;

static int32_t on_progress(void *ud, float fraction) {
    progress_state *p = ud;
    p->calls++;
    if (fraction < p->last || fraction < 0.0f || fraction > 1.0f) {
        p->decreasing = 1;
    }
    p->last = fraction;
    return p->abort_at && p->calls >= p->abort_at;
}

/* ================================================================ */

static void test_versions_and_names(void) {
    CHECK(wv_last_error() != NULL && wv_last_error()[0] == '\0');
    CHECK(wv_abi_version() == WV_ABI_VERSION);
    CHECK(wv_abi_version() >> 16 == WV_ABI_VERSION_MAJOR);
    CHECK((wv_abi_version() & 0xffff) == WV_ABI_VERSION_MINOR);
    CHECK(wv_version() != NULL && strlen(wv_version()) >= 5);
    CHECK(strcmp(wv_status_name(WV_OK), "ok") == 0);
    CHECK(strcmp(wv_status_name(WV_ERR_CONTEXT_FULL), "context full") == 0);
    CHECK(strcmp(wv_status_name(WV_ERR_BUSY), "busy") == 0);
    for (wv_status s = WV_OK; s <= WV_ERR_BUFFER_TOO_SMALL; s++) {
        CHECK(strcmp(wv_status_name(s), "unknown status") != 0);
    }
    CHECK(strcmp(wv_status_name(-1), "unknown status") == 0);
    CHECK(strcmp(wv_status_name(1000), "unknown status") == 0);
    CHECK(WV_ERR_INVALID_ARGUMENT == 1 && WV_ERR_IO == 2 && WV_ERR_MODEL_FORMAT == 3 &&
          WV_ERR_UNSUPPORTED == 4 && WV_ERR_OUT_OF_MEMORY == 5 && WV_ERR_DEVICE == 6 &&
          WV_ERR_CONTEXT_FULL == 7 && WV_ERR_CANCELLED == 8 && WV_ERR_BUSY == 9 &&
          WV_ERR_INTERNAL == 10 && WV_DONE == 11 && WV_TIMEOUT == 12 &&
          WV_ERR_BUFFER_TOO_SMALL == 13 && WV_NO_TOKEN == -1);
    /* Freeing NULL is a no-op. */
    wv_model_free(NULL);
    wv_session_free(NULL);
    wv_stream_free(NULL);
    wv_load_options_init(NULL);
    wv_session_options_init(NULL);
    wv_generate_options_init(NULL);
}

static void *read_last_error_thread(void *arg) {
    (void)arg;
    return (void *)(wv_last_error()[0] == '\0' ? "empty" : "set");
}

static void test_last_error_is_per_thread(void) {
    wv_model *m = NULL;
    EXPECT(wv_load(NULL, NULL, &m), WV_ERR_INVALID_ARGUMENT);
    CHECK(strstr(wv_last_error(), "model_dir") != NULL);
    pthread_t t;
    void *res = NULL;
    pthread_create(&t, NULL, read_last_error_thread, NULL);
    pthread_join(t, &res);
    CHECK(res != NULL && strcmp(res, "empty") == 0);
    /* A later success does not clear it. */
    CHECK(wv_abi_version() != 0);
    CHECK(strstr(wv_last_error(), "model_dir") != NULL);
}

static void test_log_callback(void) {
    EXPECT(wv_set_log_callback(on_log, &logs, 7), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_set_log_callback(on_log, &logs, -1), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_set_log_callback(on_log, &logs, WV_LOG_DEBUG), WV_OK);
}

static wv_model *test_load(void) {
    wv_model *sentinel = (wv_model *)&passed; /* must never be overwritten on failure */
    wv_model *m = sentinel;
    wv_load_options lo;

    EXPECT(wv_load(NULL, NULL, &m), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_load(model_dir, NULL, NULL), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_load("", NULL, &m), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_load("/nonexistent/wv-capi-test-model", NULL, &m), WV_ERR_IO);
    CHECK(strstr(wv_last_error(), "nonexistent") != NULL);
    EXPECT(wv_load("bad\xff\xfeutf8", NULL, &m), WV_ERR_INVALID_ARGUMENT);
    CHECK(strstr(wv_last_error(), "UTF-8") != NULL);
    EXPECT(wv_load(tmp_dir, NULL, &m), WV_ERR_IO); /* a folder without a model */

    wv_load_options_init(&lo);
    CHECK(lo.struct_size == sizeof lo && lo.device == NULL && lo.progress == NULL);
    lo.device = "tpu";
    EXPECT(wv_load(model_dir, &lo, &m), WV_ERR_INVALID_ARGUMENT);
    CHECK(strstr(wv_last_error(), "tpu") != NULL);
    lo.device = "cuda:x";
    EXPECT(wv_load(model_dir, &lo, &m), WV_ERR_INVALID_ARGUMENT);
    lo.device = "\xc3\x28";
    EXPECT(wv_load(model_dir, &lo, &m), WV_ERR_INVALID_ARGUMENT);
    lo.device = "cpu";
    lo.struct_size = 0;
    EXPECT(wv_load(model_dir, &lo, &m), WV_ERR_INVALID_ARGUMENT);
    lo.struct_size = 3;
    EXPECT(wv_load(model_dir, &lo, &m), WV_ERR_INVALID_ARGUMENT);
    lo.struct_size = 1u << 30;
    EXPECT(wv_load(model_dir, &lo, &m), WV_ERR_INVALID_ARGUMENT);
    CHECK(m == sentinel);

    /* A progress callback that aborts: WV_ERR_CANCELLED. */
    progress_state ps = {0, 0.0f, 0, 1};
    wv_load_options_init(&lo);
    lo.device = "cpu";
    lo.progress = on_progress;
    lo.progress_user_data = &ps;
    EXPECT(wv_load(model_dir, &lo, &m), WV_ERR_CANCELLED);
    CHECK(ps.calls == 1 && m == sentinel);

    /* A struct from a "newer header": accepted when the unknown tail is zero, else refused. */
    struct {
        wv_load_options o;
        uint64_t newer_field;
    } big;
    memset(&big, 0, sizeof big);
    wv_load_options_init(&big.o);
    big.o.struct_size = sizeof big;
    big.o.device = "cpu";
    big.o.progress = on_progress;
    big.o.progress_user_data = &ps;
    ps.calls = 0;
    EXPECT(wv_load(model_dir, &big.o, &m), WV_ERR_CANCELLED); /* read, then aborted */
    big.newer_field = 1;
    EXPECT(wv_load(model_dir, &big.o, &m), WV_ERR_UNSUPPORTED);

    /* CUDA: either there is a GPU, or it is a device error (never a crash). */
    wv_load_options_init(&lo);
    lo.device = "cuda:7";
    wv_status st = wv_load(model_dir, &lo, &m);
    CHECK(st == WV_ERR_DEVICE || st == WV_OK);
    if (st == WV_OK) {
        wv_model_free(m);
        m = sentinel;
    }

    /* The real load, on the CPU, with progress. */
    int info_before = logs.info;
    ps = (progress_state){0, 0.0f, 0, 0};
    wv_load_options_init(&lo);
    lo.device = "cpu";
    lo.progress = on_progress;
    lo.progress_user_data = &ps;
    EXPECT(wv_load(model_dir, &lo, &m), WV_OK);
    CHECK(m != NULL && m != sentinel);
    CHECK(ps.calls >= 2 && ps.last == 1.0f && !ps.decreasing);
    CHECK(logs.info > info_before && logs.bad == 0);
    CHECK(logs.reentry == WV_ERR_BUSY); /* wv_set_log_callback from inside the callback */

    /* Log level filtering: at WV_LOG_ERROR the "loaded" info line is not delivered. */
    EXPECT(wv_set_log_callback(on_log, &logs, WV_LOG_ERROR), WV_OK);
    int messages = logs.messages;
    wv_model *m2 = NULL;
    EXPECT(wv_load(model_dir, NULL, &m2), WV_OK); /* NULL options: auto device */
    CHECK(logs.messages == messages);
    wv_model_free(m2);
    EXPECT(wv_set_log_callback(NULL, NULL, WV_LOG_DEBUG), WV_OK);
    return m;
}

static void test_model_info(wv_model *m, wv_model_info *info) {
    memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
    EXPECT(wv_model_get_info(NULL, info), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_model_get_info(m, NULL), WV_ERR_INVALID_ARGUMENT);
    info->struct_size = 2;
    EXPECT(wv_model_get_info(m, info), WV_ERR_INVALID_ARGUMENT);
    CHECK(info->vocab_size == 0); /* untouched */
    info->struct_size = sizeof *info;
    EXPECT(wv_model_get_info(m, info), WV_OK);
    CHECK(info->struct_size == sizeof *info);
    CHECK(info->context_length >= 64 && info->vocab_size >= 259);
    CHECK(info->n_layers >= 1 && info->hidden_size >= 1 && info->n_heads >= 1);
    CHECK(info->n_kv_heads >= 1 && info->n_kv_heads <= info->n_heads);
    CHECK(info->quant_bits == 0 || info->quant_bits == 2 || info->quant_bits == 3 ||
          info->quant_bits == 4 || info->quant_bits == 8);
    CHECK(info->quant_group_size == -1 || info->quant_group_size >= 0);
    CHECK(info->quant_act_order <= 1);
    CHECK(info->bos_token >= 0 && info->eos_token >= 0 && info->bos_token != info->eos_token);
    CHECK(info->device != NULL && strcmp(info->device, "cpu") == 0);
    CHECK(info->device_description != NULL && strncmp(info->device_description, "cpu", 3) == 0);
    CHECK(info->weight_bytes > 0 && info->kv_bytes_per_token > 0);

    /* A larger (newer) info struct: the unknown tail is zeroed. */
    struct {
        wv_model_info i;
        uint64_t tail[2];
    } big;
    memset(&big, 0xab, sizeof big);
    big.i.struct_size = sizeof big;
    EXPECT(wv_model_get_info(m, &big.i), WV_OK);
    CHECK(big.i.struct_size == sizeof big && big.i.vocab_size == info->vocab_size);
    CHECK(big.tail[0] == 0 && big.tail[1] == 0);
}

static void test_tokenize(wv_model *m, const wv_model_info *info) {
    const char *text = "Hello world, this is wv.";
    size_t n = 12345;
    int32_t ids[64];

    EXPECT(wv_tokenize(NULL, text, true, ids, 64, &n), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_tokenize(m, NULL, true, ids, 64, &n), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_tokenize(m, text, true, ids, 64, NULL), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_tokenize(m, "\xff", true, ids, 64, &n), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_tokenize(m, text, true, NULL, 5, &n), WV_ERR_INVALID_ARGUMENT);
    CHECK(n == 12345);

    /* Two calls: the size, then the ids. */
    EXPECT(wv_tokenize(m, text, true, NULL, 0, &n), WV_OK);
    CHECK(n >= 3 && n < 64);
    size_t need = n;
    for (size_t i = 0; i < 64; i++) {
        ids[i] = -7;
    }
    EXPECT(wv_tokenize(m, text, true, ids, need - 1, &n), WV_ERR_BUFFER_TOO_SMALL);
    CHECK(n == need && ids[0] == -7);
    EXPECT(wv_tokenize(m, text, true, ids, 64, &n), WV_OK);
    CHECK(n == need && ids[0] == info->bos_token && ids[need] == -7);
    size_t n_plain = 0;
    int32_t plain[64];
    EXPECT(wv_tokenize(m, text, false, plain, 64, &n_plain), WV_OK);
    CHECK(n_plain == need - 1 && memcmp(plain, ids + 1, n_plain * sizeof plain[0]) == 0);
    EXPECT(wv_tokenize(m, "", false, NULL, 0, &n), WV_OK);
    CHECK(n == 0);

    /* Detokenize: the round trip, and the size counts the NUL. */
    char buf[256];
    size_t size = 0;
    EXPECT(wv_detokenize(m, ids, need, NULL, 0, &size), WV_OK);
    CHECK(size == strlen(text) + 1);
    memset(buf, 'x', sizeof buf);
    EXPECT(wv_detokenize(m, ids, need, buf, size - 1, &size), WV_ERR_BUFFER_TOO_SMALL);
    CHECK(size == strlen(text) + 1 && buf[0] == 'x');
    EXPECT(wv_detokenize(m, ids, need, buf, sizeof buf, &size), WV_OK);
    CHECK(strcmp(buf, text) == 0);
    EXPECT(wv_detokenize(m, NULL, 0, buf, sizeof buf, &size), WV_OK);
    CHECK(size == 1 && buf[0] == '\0');
    EXPECT(wv_detokenize(m, NULL, 3, buf, sizeof buf, &size), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_detokenize(m, ids, need, buf, sizeof buf, NULL), WV_ERR_INVALID_ARGUMENT);
    int32_t bad[2] = {ids[1], -5};
    EXPECT(wv_detokenize(m, bad, 2, buf, sizeof buf, &size), WV_ERR_INVALID_ARGUMENT);
    bad[1] = (int32_t)info->vocab_size + 100;
    EXPECT(wv_detokenize(m, bad, 2, buf, sizeof buf, &size), WV_ERR_INVALID_ARGUMENT);

    /* Pieces. */
    EXPECT(wv_token_to_piece(m, info->eos_token, NULL, 0, &size), WV_OK);
    CHECK(size == strlen("</s>") + 1);
    EXPECT(wv_token_to_piece(m, info->eos_token, buf, sizeof buf, &size), WV_OK);
    CHECK(strcmp(buf, "</s>") == 0);
    EXPECT(wv_token_to_piece(m, -1, buf, sizeof buf, &size), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_token_to_piece(m, 1 << 30, buf, sizeof buf, &size), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_token_to_piece(m, 0, buf, sizeof buf, NULL), WV_ERR_INVALID_ARGUMENT);
}

static void test_session_basics(wv_model *m, const wv_model_info *info) {
    wv_session *sentinel = (wv_session *)&failed;
    wv_session *s = sentinel;
    wv_session_options so;
    wv_session_options_init(&so);
    CHECK(so.struct_size == sizeof so && so.context_length == 0 && so.system_prompt == NULL);

    EXPECT(wv_session_new(NULL, &so, &s), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_new(m, &so, NULL), WV_ERR_INVALID_ARGUMENT);
    so.context_length = info->context_length + 1;
    EXPECT(wv_session_new(m, &so, &s), WV_ERR_INVALID_ARGUMENT);
    so.context_length = 1;
    EXPECT(wv_session_new(m, &so, &s), WV_ERR_INVALID_ARGUMENT);
    so.context_length = 16;
    so.system_prompt = "\xe2\x82";
    EXPECT(wv_session_new(m, &so, &s), WV_ERR_INVALID_ARGUMENT);
    so.system_prompt = NULL;
    so.struct_size = 4;
    EXPECT(wv_session_new(m, &so, &s), WV_ERR_INVALID_ARGUMENT);
    CHECK(s == sentinel);

    EXPECT(wv_session_new(m, NULL, &s), WV_OK); /* NULL options: full context */
    size_t n = 99;
    EXPECT(wv_session_context_length(s, &n), WV_OK);
    CHECK(n == info->context_length);
    EXPECT(wv_session_context_length(s, NULL), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_context_length(NULL, &n), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_token_count(s, &n), WV_OK);
    CHECK(n == 0);
    EXPECT(wv_session_token_count(NULL, &n), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_token_count(s, NULL), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_cancel(NULL), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_reset(NULL), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_truncate(NULL, 0), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_cancel(s), WV_OK); /* nothing running: no effect on the next call */

    /* Set and get tokens. */
    int32_t ids[4] = {info->bos_token, 100, 200, 300};
    int32_t got[8];
    EXPECT(wv_session_set_tokens(s, ids, 4), WV_OK);
    EXPECT(wv_session_get_tokens(s, NULL, 0, &n), WV_OK);
    CHECK(n == 4);
    EXPECT(wv_session_get_tokens(s, got, 2, &n), WV_ERR_BUFFER_TOO_SMALL);
    CHECK(n == 4);
    EXPECT(wv_session_get_tokens(s, got, 8, &n), WV_OK);
    CHECK(n == 4 && memcmp(got, ids, sizeof ids) == 0);
    EXPECT(wv_session_get_tokens(s, got, 8, NULL), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_set_tokens(s, NULL, 2), WV_ERR_INVALID_ARGUMENT);
    int32_t bad[2] = {1, -3};
    EXPECT(wv_session_set_tokens(s, bad, 2), WV_ERR_INVALID_ARGUMENT);
    bad[1] = (int32_t)info->vocab_size;
    EXPECT(wv_session_set_tokens(s, bad, 2), WV_ERR_INVALID_ARGUMENT);
    CHECK(token_count(s) == 4); /* unchanged by the failures */

    /* Generating after set_tokens continues from them. */
    wv_generate_options o = greedy(3);
    collector *c = collector_new();
    EXPECT(wv_generate(s, "", &o, collect, c), WV_OK);
    CHECK(c->n_tokens == 3 && token_count(s) == 7);
    free(c);

    EXPECT(wv_session_truncate(s, 8), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_truncate(s, 2), WV_OK);
    CHECK(token_count(s) == 2);
    EXPECT(wv_session_reset(s), WV_OK);
    CHECK(token_count(s) == 0);
    EXPECT(wv_session_set_tokens(s, NULL, 0), WV_OK);
    wv_session_free(s);
}

static void test_generate(wv_model *m) {
    wv_session *s = new_session(m, 0);
    wv_generate_options o = greedy(8);
    collector *c = collector_new();
    collector *c2 = collector_new();

    /* Argument errors change nothing. */
    EXPECT(wv_generate(NULL, "Hi", &o, collect, c), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_generate(s, NULL, &o, collect, c), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_generate(s, "caf\xc3", &o, collect, c), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_chat(s, NULL, &o, collect, c), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_chat(s, "\x80", &o, collect, c), WV_ERR_INVALID_ARGUMENT);
    wv_generate_options bad = o;
    bad.top_p = 1.5f;
    EXPECT(wv_generate(s, "Hi", &bad, collect, c), WV_ERR_INVALID_ARGUMENT);
    bad = o;
    bad.temperature = -1.0f;
    EXPECT(wv_generate(s, "Hi", &bad, collect, c), WV_ERR_INVALID_ARGUMENT);
    bad = o;
    bad.repetition_penalty = -2.0f;
    EXPECT(wv_generate(s, "Hi", &bad, collect, c), WV_ERR_INVALID_ARGUMENT);
    bad = o;
    bad.n_stop = 1;
    EXPECT(wv_generate(s, "Hi", &bad, collect, c), WV_ERR_INVALID_ARGUMENT);
    const char *stops_null[1] = {NULL};
    bad.stop = stops_null;
    EXPECT(wv_generate(s, "Hi", &bad, collect, c), WV_ERR_INVALID_ARGUMENT);
    const char *stops_empty[1] = {""};
    bad.stop = stops_empty;
    EXPECT(wv_generate(s, "Hi", &bad, collect, c), WV_ERR_INVALID_ARGUMENT);
    const char *stops_utf8[1] = {"\xff"};
    bad.stop = stops_utf8;
    EXPECT(wv_generate(s, "Hi", &bad, collect, c), WV_ERR_INVALID_ARGUMENT);
    bad = o;
    bad.struct_size = 8;
    EXPECT(wv_generate(s, "Hi", &bad, collect, c), WV_ERR_INVALID_ARGUMENT);
    CHECK(c->calls == 0 && token_count(s) == 0);

    /* Greedy generation is deterministic, and continues the session. */
    EXPECT(wv_generate(s, "Once upon a time", &o, collect, c), WV_OK);
    CHECK(c->n_tokens >= 1 && c->n_tokens <= 8 && c->nul_terminated);
    size_t after = token_count(s);
    CHECK(after >= 1 + 1 + c->n_tokens);
    /* NULL options: the defaults (sampling, at most 512 tokens; the context ends it sooner). */
    wv_session *s2 = new_session(m, 24);
    wv_status dst = wv_generate(s2, "Once upon a time", NULL, NULL, NULL);
    CHECK(dst == WV_ERR_CONTEXT_FULL || dst == WV_OK);
    CHECK(token_count(s2) >= 6);
    wv_session_free(s2);
    s2 = new_session(m, 0);
    EXPECT(wv_generate(s2, "Once upon a time", &o, collect, c2), WV_OK);
    CHECK(same_tokens(c, c2) && strcmp(c->text, c2->text) == 0);
    wv_session_free(s2);

    /* No callback: the tokens still go into the session. */
    size_t before = token_count(s);
    EXPECT(wv_generate(s, " and", &o, NULL, NULL), WV_OK);
    CHECK(token_count(s) > before);

    /* A non-zero callback return stops generation with WV_OK. */
    collector *c3 = collector_new();
    c3->stop_after = 2;
    o.max_tokens = 0; /* no limit but the callback (and the context) */
    EXPECT(wv_generate(s, " then", &o, collect, c3), WV_OK);
    CHECK(c3->n_tokens == 2);
    free(c3);

    /* Seeded sampling is reproducible. */
    wv_generate_options so;
    wv_generate_options_init(&so);
    CHECK(so.struct_size == sizeof so && so.max_tokens == 512 && so.top_k == 40 &&
          so.seed == WV_SEED_RANDOM && so.stop == NULL && so.n_stop == 0);
    CHECK(so.temperature > 0.69f && so.temperature < 0.71f);
    so.seed = 1234;
    so.temperature = 1.0f;
    so.max_tokens = 6;
    collector *r1 = collector_new(), *r2 = collector_new();
    s2 = new_session(m, 0);
    EXPECT(wv_generate(s2, "Hello", &so, collect, r1), WV_OK);
    wv_session_free(s2);
    s2 = new_session(m, 0);
    EXPECT(wv_generate(s2, "Hello", &so, collect, r2), WV_OK);
    wv_session_free(s2);
    CHECK(r1->n_tokens >= 1 && same_tokens(r1, r2));
    free(r1);
    free(r2);

    /* Zero-initialised options (struct_size set) mean greedy with no filters and no limit. */
    wv_generate_options z;
    memset(&z, 0, sizeof z);
    z.struct_size = sizeof z;
    collector *zc = collector_new();
    zc->stop_after = 8;
    s2 = new_session(m, 0);
    EXPECT(wv_generate(s2, "Once upon a time", &z, collect, zc), WV_OK);
    CHECK(same_tokens(zc, c));
    if (!same_tokens(zc, c)) {
        for (size_t i = 0; i < zc->n_tokens; i++) printf("zc %d\n", zc->tokens[i]);
        for (size_t i = 0; i < c->n_tokens; i++) printf("c %d\n", c->tokens[i]);
    }
    wv_session_free(s2);
    free(zc);

    /* Stop strings: the output is the greedy text up to the stop string, never including it. */
    if (c->n_tokens >= 4) {
        /* The text of the greedy run's 3rd token, if it has one. */
        collector *t = collector_new();
        s2 = new_session(m, 0);
        wv_generate_options o3 = greedy(3);
        EXPECT(wv_generate(s2, "Once upon a time", &o3, collect, t), WV_OK);
        wv_session_free(s2);
        collector *t2 = collector_new();
        s2 = new_session(m, 0);
        wv_generate_options o2 = greedy(2);
        EXPECT(wv_generate(s2, "Once upon a time", &o2, collect, t2), WV_OK);
        wv_session_free(s2);
        const char *third = t->text + t2->text_len;
        if (t->text_len > t2->text_len && strncmp(t->text, t2->text, t2->text_len) == 0) {
            const char *stops[1] = {third};
            wv_generate_options os = greedy(8);
            os.stop = stops;
            os.n_stop = 1;
            collector *sc = collector_new();
            s2 = new_session(m, 0);
            EXPECT(wv_generate(s2, "Once upon a time", &os, collect, sc), WV_OK);
            wv_session_free(s2);
            const char *hit = strstr(c->text, third);
            size_t want = hit ? (size_t)(hit - c->text) : c->text_len;
            CHECK(sc->text_len == want && strncmp(sc->text, c->text, want) == 0);
            CHECK(strstr(sc->text, third) == NULL);
            free(sc);
        }
        free(t);
        free(t2);
    }

    /* Chat turns. */
    collector *ch = collector_new();
    wv_session *cs = new_session(m, 0);
    o = greedy(6);
    EXPECT(wv_chat(cs, "Hello, who are you?", &o, collect, ch), WV_OK);
    size_t n1 = token_count(cs);
    CHECK(ch->n_tokens >= 1 && n1 > 20); /* the system prompt is in there */
    EXPECT(wv_chat(cs, "And then?", &o, collect, ch), WV_OK);
    CHECK(token_count(cs) > n1);
    wv_session_free(cs);
    /* An empty system prompt gives a shorter first turn. */
    wv_session_options so2;
    wv_session_options_init(&so2);
    so2.system_prompt = "";
    REQUIRE_OK(wv_session_new(m, &so2, &cs));
    EXPECT(wv_chat(cs, "Hello, who are you?", &o, NULL, NULL), WV_OK);
    CHECK(token_count(cs) < n1);
    wv_session_free(cs);
    free(ch);

    free(c);
    free(c2);
    wv_session_free(s);
}

static void test_context_full(wv_model *m) {
    wv_session *s = new_session(m, 8);
    wv_generate_options o = greedy(0);
    collector *c = collector_new();
    /* A prompt that does not fit: nothing is added. */
    EXPECT(wv_generate(s, "one two three four five six seven eight nine ten", &o, collect, c),
           WV_ERR_CONTEXT_FULL);
    CHECK(token_count(s) == 0 && c->calls == 0);
    /* Generation that fills the context: the tokens so far are kept. */
    wv_status st = wv_generate(s, "Hi", &o, collect, c);
    CHECK(st == WV_ERR_CONTEXT_FULL || st == WV_OK /* the model said EOS first */);
    CHECK(token_count(s) <= 8);
    if (st == WV_ERR_CONTEXT_FULL) {
        CHECK(token_count(s) == 8);
        CHECK(strstr(wv_last_error(), "full") != NULL);
        EXPECT(wv_generate(s, "more", &o, collect, c), WV_ERR_CONTEXT_FULL);
        EXPECT(wv_generate(s, "", &o, collect, c), WV_ERR_CONTEXT_FULL);
    }
    /* Too many tokens for set_tokens. */
    int32_t ids[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    EXPECT(wv_session_set_tokens(s, ids, 9), WV_ERR_CONTEXT_FULL);
    EXPECT(wv_session_truncate(s, 1), WV_OK);
    /* From BOS again, the same prompt ends the same way. */
    EXPECT(wv_generate(s, "Hi", &o, NULL, NULL), st);
    free(c);
    wv_session_free(s);
}

static void test_reentrancy(wv_model *m) {
    /* A callback calling into its own session gets WV_ERR_BUSY; other sessions work. */
    wv_session *s = new_session(m, 0);
    wv_session *other = new_session(m, 0);
    collector *c = collector_new();
    c->self = s;
    c->other = other;
    wv_generate_options o = greedy(4);
    EXPECT(wv_generate(s, "Hello", &o, collect, c), WV_OK);
    CHECK(c->reenter_generate == WV_ERR_BUSY);
    CHECK(c->reenter_count == WV_ERR_BUSY);
    CHECK(c->other_count == WV_OK);
    CHECK(c->n_tokens == 4);
    free(c);

    /* A callback that cancels its own session: the call returns WV_ERR_CANCELLED. */
    c = collector_new();
    c->self = s;
    c->cancel_self_after = 2;
    o.max_tokens = 0;
    size_t before = token_count(s);
    EXPECT(wv_generate(s, " again", &o, collect, c), WV_ERR_CANCELLED);
    CHECK(c->reenter_cancel == WV_OK && c->n_tokens == 2);
    CHECK(token_count(s) > before); /* kept what it generated */
    free(c);
    /* The next call is not cancelled. */
    c = collector_new();
    o.max_tokens = 2;
    EXPECT(wv_generate(s, " more", &o, collect, c), WV_OK);
    CHECK(c->n_tokens == 2);
    free(c);

    /* A callback that frees its own session: the call finishes safely. */
    c = collector_new();
    c->self = s;
    c->free_self = 1;
    c->reentered = 1;
    o.max_tokens = 3;
    EXPECT(wv_generate(s, " end", &o, collect, c), WV_OK);
    CHECK(c->n_tokens == 3);
    free(c);
    wv_session_free(other);
}

/* ---- threads ---- */

typedef struct {
    wv_session *s;
    collector *c;
    wv_status status;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started;
} gen_job;

static void *generate_thread(void *arg) {
    gen_job *j = arg;
    wv_generate_options o = greedy(0); /* until cancelled or the context is full */
    j->status = wv_generate(j->s, "It was a dark and stormy night", &o, collect, j->c);
    return NULL;
}

static void test_cancel_from_another_thread(wv_model *m) {
    gen_job j;
    memset(&j, 0, sizeof j);
    pthread_mutex_init(&j.mu, NULL);
    pthread_cond_init(&j.cv, NULL);
    j.s = new_session(m, 0);
    j.c = collector_new();
    j.c->mu = &j.mu;
    j.c->cv = &j.cv;
    j.c->started = &j.started;
    j.c->sleep_ms_per_token = 2;
    pthread_t t;
    pthread_create(&t, NULL, generate_thread, &j);
    pthread_mutex_lock(&j.mu);
    while (!j.started) {
        pthread_cond_wait(&j.cv, &j.mu);
    }
    pthread_mutex_unlock(&j.mu);
    /* While it runs, the session is busy for everyone else, and nobody blocks. */
    size_t n;
    wv_generate_options o = greedy(1);
    EXPECT(wv_generate(j.s, "x", &o, NULL, NULL), WV_ERR_BUSY);
    EXPECT(wv_chat(j.s, "x", &o, NULL, NULL), WV_ERR_BUSY);
    EXPECT(wv_session_token_count(j.s, &n), WV_ERR_BUSY);
    EXPECT(wv_session_reset(j.s), WV_ERR_BUSY);
    wv_stream *st = NULL;
    EXPECT(wv_stream_begin(j.s, "x", &o, &st), WV_ERR_BUSY);
    double t0 = now_s();
    EXPECT(wv_session_cancel(j.s), WV_OK);
    pthread_join(t, NULL);
    double dt = now_s() - t0;
    CHECK(j.status == WV_ERR_CANCELLED);
    CHECK(dt < (under_valgrind ? 30.0 : 5.0));
    CHECK(j.c->n_tokens >= 1);
    EXPECT(wv_session_token_count(j.s, &n), WV_OK); /* free again */
    free(j.c);
    wv_session_free(j.s);
    pthread_mutex_destroy(&j.mu);
    pthread_cond_destroy(&j.cv);
}

typedef struct {
    wv_model *m;
    collector *c;
    wv_status status;
} share_job;

static void *shared_model_thread(void *arg) {
    share_job *j = arg;
    wv_session *s = new_session(j->m, 0);
    wv_generate_options o = greedy(6);
    j->status = wv_generate(s, "The quick brown fox", &o, collect, j->c);
    wv_session_free(s);
    return NULL;
}

static void test_model_shared_by_threads(wv_model *m) {
    share_job a = {m, collector_new(), -100}, b = {m, collector_new(), -100};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, shared_model_thread, &a);
    pthread_create(&tb, NULL, shared_model_thread, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.status == WV_OK && b.status == WV_OK);
    CHECK(a.c->n_tokens >= 1 && same_tokens(a.c, b.c));
    free(a.c);
    free(b.c);
}

static void test_model_freed_while_sessions_live(void) {
    wv_model *m = NULL;
    wv_load_options lo;
    wv_load_options_init(&lo);
    lo.device = "cpu";
    REQUIRE_OK(wv_load(model_dir, &lo, &m));
    wv_session *s = new_session(m, 64);
    wv_model_free(m); /* the session keeps the weights alive */
    collector *c = collector_new();
    wv_generate_options o = greedy(3);
    EXPECT(wv_generate(s, "Still here", &o, collect, c), WV_OK);
    CHECK(c->n_tokens == 3);
    free(c);
    wv_session_free(s);
}

/* ---- save / restore ---- */

static void continue_greedy(wv_session *s, collector *c, uint32_t n) {
    wv_generate_options o = greedy(n);
    EXPECT(wv_generate(s, "", &o, collect, c), WV_OK);
}

static void test_save_restore(wv_model *m) {
    wv_session *a = new_session(m, 0);
    wv_generate_options o = greedy(4);
    EXPECT(wv_generate(a, "In the beginning", &o, NULL, NULL), WV_OK);
    size_t n_a = token_count(a);

    /* Two calls into a buffer. */
    size_t size = 0;
    EXPECT(wv_session_save_state(NULL, NULL, 0, &size), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_save_state(a, NULL, 0, NULL), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_save_state(a, NULL, 0, &size), WV_OK);
    CHECK(size > 16);
    uint8_t *buf = malloc(size);
    size_t need = size;
    memset(buf, 0x5a, size);
    EXPECT(wv_session_save_state(a, buf, need - 1, &size), WV_ERR_BUFFER_TOO_SMALL);
    CHECK(size == need && buf[0] == 0x5a);
    EXPECT(wv_session_save_state(a, buf, need, &size), WV_OK);
    CHECK(size == need);

    /* And to a file. */
    char path[4096], bad_path[4096];
    snprintf(path, sizeof path, "%s/session.wvs", tmp_dir);
    snprintf(bad_path, sizeof bad_path, "%s/no/such/dir/session.wvs", tmp_dir);
    EXPECT(wv_session_save_file(a, NULL), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_save_file(a, "\xfe"), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_save_file(a, bad_path), WV_ERR_IO);
    EXPECT(wv_session_save_file(a, path), WV_OK);

    /* The original goes on ... */
    collector *ca = collector_new();
    continue_greedy(a, ca, 6);

    /* ... and so do the restored copies, identically. */
    wv_session *b = new_session(m, 0);
    EXPECT(wv_session_restore_state(b, buf, need), WV_OK);
    CHECK(token_count(b) == n_a);
    collector *cb = collector_new();
    continue_greedy(b, cb, 6);
    CHECK(ca->n_tokens >= 1 && same_tokens(ca, cb));

    wv_session *c = new_session(m, 0);
    EXPECT(wv_session_restore_file(c, path), WV_OK);
    CHECK(token_count(c) == n_a);
    collector *cc = collector_new();
    continue_greedy(c, cc, 6);
    CHECK(same_tokens(ca, cc));

    /* Refusals leave the session as it was. */
    size_t n_c = token_count(c);
    EXPECT(wv_session_restore_state(c, NULL, 5), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_restore_state(NULL, buf, need), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_restore_state(c, buf, need - 1), WV_ERR_MODEL_FORMAT); /* truncated */
    EXPECT(wv_session_restore_state(c, buf, 0), WV_ERR_MODEL_FORMAT);
    uint8_t *corrupt = malloc(need);
    memcpy(corrupt, buf, need);
    corrupt[need / 2] ^= 0x40;
    EXPECT(wv_session_restore_state(c, corrupt, need), WV_ERR_MODEL_FORMAT);
    memset(corrupt, 'z', need);
    EXPECT(wv_session_restore_state(c, corrupt, need), WV_ERR_MODEL_FORMAT);
    free(corrupt);
    char missing[4096];
    snprintf(missing, sizeof missing, "%s/missing.wvs", tmp_dir);
    EXPECT(wv_session_restore_file(c, missing), WV_ERR_IO);
    EXPECT(wv_session_restore_file(c, NULL), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_session_restore_file(c, tmp_dir), WV_ERR_IO); /* a folder */
    CHECK(token_count(c) == n_c);
    wv_session *small = new_session(m, 4);
    EXPECT(wv_session_restore_state(small, buf, need), WV_ERR_CONTEXT_FULL);
    CHECK(token_count(small) == 0);
    wv_session_free(small);

    /* A state from another model is refused. */
    if (other_model_dir) {
        wv_model *om = NULL;
        wv_load_options lo;
        wv_load_options_init(&lo);
        lo.device = "cpu";
        REQUIRE_OK(wv_load(other_model_dir, &lo, &om));
        wv_session *os = new_session(om, 0);
        EXPECT(wv_session_restore_state(os, buf, need), WV_ERR_INVALID_ARGUMENT);
        CHECK(strstr(wv_last_error(), "different model") != NULL);
        EXPECT(wv_session_restore_file(os, path), WV_ERR_INVALID_ARGUMENT);
        CHECK(token_count(os) == 0);
        wv_session_free(os);
        wv_model_free(om);
    }

    free(buf);
    free(ca);
    free(cb);
    free(cc);
    wv_session_free(a);
    wv_session_free(b);
    wv_session_free(c);
    remove(path);
}

/* ---- streams ---- */

/* Read a stream to its end; returns the final status. */
static wv_status drain(wv_stream *st, collector *c, int timeout_ms, int *timeouts) {
    for (;;) {
        int32_t tok = -100;
        const char *text = NULL;
        size_t len = 12345;
        wv_status s = wv_stream_next(st, timeout_ms, &tok, &text, &len);
        if (s == WV_TIMEOUT) {
            if (timeouts) {
                (*timeouts)++;
            }
            continue;
        }
        if (s != WV_OK) {
            return s;
        }
        if (text == NULL || len == 12345 || text[len] != '\0') {
            failed++;
            printf("FAIL %s:%d: bad stream item\n", __FILE__, __LINE__);
            return WV_ERR_INTERNAL;
        }
        collect(c, tok, text, len);
    }
}

static void *cancel_stream_later(void *arg) {
    sleep_ms(20);
    wv_stream_cancel(arg);
    return NULL;
}

static void test_stream(wv_model *m) {
    wv_generate_options o = greedy(8);
    wv_stream *sentinel = (wv_stream *)&passed;
    wv_stream *st = sentinel;
    wv_session *s = new_session(m, 0);

    EXPECT(wv_stream_begin(NULL, "Hi", &o, &st), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_stream_begin(s, NULL, &o, &st), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_stream_begin(s, "\xc0\xaf", &o, &st), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_stream_begin(s, "Hi", &o, NULL), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_stream_begin_chat(s, NULL, &o, &st), WV_ERR_INVALID_ARGUMENT);
    wv_generate_options bad = o;
    bad.top_p = -1.0f;
    EXPECT(wv_stream_begin(s, "Hi", &bad, &st), WV_ERR_INVALID_ARGUMENT);
    CHECK(st == sentinel);
    int32_t tok;
    EXPECT(wv_stream_next(NULL, 0, &tok, NULL, NULL), WV_ERR_INVALID_ARGUMENT);
    EXPECT(wv_stream_cancel(NULL), WV_ERR_INVALID_ARGUMENT);

    /* A stream gives exactly what the callback API gives. */
    collector *want = collector_new();
    wv_session *ref = new_session(m, 0);
    EXPECT(wv_generate(ref, "Once upon a time", &o, collect, want), WV_OK);
    size_t ref_count = token_count(ref);
    wv_session_free(ref);

    EXPECT(wv_stream_begin(s, "Once upon a time", &o, &st), WV_OK);
    /* The session is busy while the stream runs. */
    size_t n;
    EXPECT(wv_session_token_count(s, &n), WV_ERR_BUSY);
    EXPECT(wv_generate(s, "x", &o, NULL, NULL), WV_ERR_BUSY);
    wv_stream *st2 = NULL;
    EXPECT(wv_stream_begin(s, "x", &o, &st2), WV_ERR_BUSY);
    EXPECT(wv_session_cancel(s), WV_OK); /* allowed while busy, see below */
    collector *got = collector_new();
    wv_status end = drain(st, got, 1000, NULL);
    /* The cancel above may or may not have reached the generation (it races the worker
       thread's start); either way the stream ends cleanly. */
    CHECK(end == WV_DONE || end == WV_ERR_CANCELLED);
    wv_stream_free(st);

    /* Again without the cancel: identical to the callback API. */
    wv_session_free(s);
    s = new_session(m, 0);
    EXPECT(wv_stream_begin(s, "Once upon a time", &o, &st), WV_OK);
    free(got);
    got = collector_new();
    end = drain(st, got, -1, NULL);
    CHECK(end == WV_DONE);
    CHECK(same_tokens(got, want) && strcmp(got->text, want->text) == 0);
    /* The end is sticky, and the session is free again once the end was read. */
    EXPECT(wv_stream_next(st, 0, &tok, NULL, NULL), WV_DONE);
    EXPECT(wv_stream_next(st, -1, NULL, NULL, NULL), WV_DONE);
    EXPECT(wv_session_token_count(s, &n), WV_OK);
    CHECK(n == ref_count);
    /* Cancelling a stream that has ended does not touch the session's next call. */
    EXPECT(wv_stream_cancel(st), WV_OK);
    EXPECT(wv_stream_next(st, 0, &tok, NULL, NULL), WV_DONE);
    EXPECT(wv_generate(s, " and", &o, NULL, NULL), WV_OK);
    wv_stream_free(st);
    EXPECT(wv_session_truncate(s, ref_count), WV_OK);

    /* Chat through a stream equals wv_chat. */
    collector *cw = collector_new(), *cg = collector_new();
    ref = new_session(m, 0);
    EXPECT(wv_chat(ref, "What is the capital of France?", &o, collect, cw), WV_OK);
    wv_session_free(ref);
    wv_session *s3 = new_session(m, 0);
    EXPECT(wv_stream_begin_chat(s3, "What is the capital of France?", &o, &st), WV_OK);
    CHECK(drain(st, cg, 5000, NULL) == WV_DONE);
    CHECK(same_tokens(cw, cg));
    wv_stream_free(st);
    wv_session_free(s3);
    free(cw);
    free(cg);

    /* Polling with a zero timeout right after begin finds nothing yet (retried, since it is a
       race in principle), and never blocks. */
    int timeouts = 0;
    for (int attempt = 0; attempt < 5 && timeouts == 0; attempt++) {
        wv_session *ps = new_session(m, 0);
        EXPECT(wv_stream_begin(ps, "Once upon a time there was", &o, &st), WV_OK);
        wv_status first = wv_stream_next(st, 0, &tok, NULL, NULL);
        CHECK(first == WV_TIMEOUT || first == WV_OK);
        if (first == WV_TIMEOUT) {
            timeouts++;
        }
        collector *pc = collector_new();
        CHECK(drain(st, pc, 10, &timeouts) == WV_DONE);
        free(pc);
        wv_stream_free(st);
        wv_session_free(ps);
    }
    CHECK(timeouts > 0);

    /* Cancel: queued tokens, then WV_ERR_CANCELLED (sticky). */
    wv_session *cs = new_session(m, 0);
    wv_generate_options forever = greedy(0);
    EXPECT(wv_stream_begin(cs, "Tell me a long story", &forever, &st), WV_OK);
    const char *text = NULL;
    size_t len = 0;
    EXPECT(wv_stream_next(st, -1, &tok, &text, &len), WV_OK);
    EXPECT(wv_stream_cancel(st), WV_OK);
    collector *cc = collector_new();
    EXPECT(drain(st, cc, 2000, NULL), WV_ERR_CANCELLED);
    EXPECT(wv_stream_next(st, 0, &tok, NULL, NULL), WV_ERR_CANCELLED);
    EXPECT(wv_session_token_count(cs, &n), WV_OK);
    CHECK(n < 2048);
    wv_stream_free(st);
    free(cc);

    /* Cancel from another thread while this one blocks in wv_stream_next. */
    EXPECT(wv_session_reset(cs), WV_OK);
    EXPECT(wv_stream_begin(cs, "Tell me another story", &forever, &st), WV_OK);
    pthread_t t;
    pthread_create(&t, NULL, cancel_stream_later, st);
    cc = collector_new();
    wv_status cend = drain(st, cc, -1, NULL);
    pthread_join(t, NULL);
    CHECK(cend == WV_ERR_CANCELLED || cend == WV_ERR_CONTEXT_FULL /* a very fast machine */);
    wv_stream_free(st);
    free(cc);

    /* Freeing a running stream cancels and joins; the session is usable at once. */
    EXPECT(wv_session_reset(cs), WV_OK);
    EXPECT(wv_stream_begin(cs, "Never ending", &forever, &st), WV_OK);
    EXPECT(wv_stream_next(st, -1, &tok, &text, &len), WV_OK);
    double t0 = now_s();
    wv_stream_free(st);
    CHECK(now_s() - t0 < (under_valgrind ? 30.0 : 5.0));
    EXPECT(wv_session_token_count(cs, &n), WV_OK);
    CHECK(n >= 2);
    /* Freeing one that was never read. */
    EXPECT(wv_stream_begin(cs, " more", &o, &st), WV_OK);
    wv_stream_free(st);
    EXPECT(wv_session_token_count(cs, &n), WV_OK);
    wv_session_free(cs);

    /* Context full through a stream. */
    wv_session *fs = new_session(m, 8);
    EXPECT(wv_stream_begin(fs, "Hi", &forever, &st), WV_OK);
    cc = collector_new();
    wv_status fend = drain(st, cc, -1, NULL);
    CHECK(fend == WV_ERR_CONTEXT_FULL || fend == WV_DONE);
    if (fend == WV_ERR_CONTEXT_FULL) {
        CHECK(strstr(wv_last_error(), "full") != NULL);
    }
    wv_stream_free(st);
    free(cc);

    /* Freeing the session while its stream is open is safe: the stream keeps it alive. */
    EXPECT(wv_session_reset(fs), WV_OK);
    EXPECT(wv_stream_begin(fs, "Hi", &o, &st), WV_OK);
    wv_session_free(fs);
    cc = collector_new();
    wv_status e = drain(st, cc, -1, NULL);
    CHECK(e == WV_DONE || e == WV_ERR_CONTEXT_FULL);
    wv_stream_free(st);
    free(cc);

    free(got);
    free(want);
    wv_session_free(s);
}

static void test_options_struct_size(wv_model *m) {
    wv_session *s = new_session(m, 0);
    struct {
        wv_generate_options o;
        uint32_t newer[4];
    } big;
    memset(&big, 0, sizeof big);
    big.o = greedy(2);
    big.o.struct_size = sizeof big;
    EXPECT(wv_generate(s, "Hi", &big.o, NULL, NULL), WV_OK);
    big.newer[3] = 9;
    EXPECT(wv_generate(s, "Hi", &big.o, NULL, NULL), WV_ERR_UNSUPPORTED);
    big.o.struct_size = 100000;
    EXPECT(wv_generate(s, "Hi", &big.o, NULL, NULL), WV_ERR_INVALID_ARGUMENT);

    struct {
        wv_session_options o;
        uint64_t newer;
    } sbig;
    memset(&sbig, 0, sizeof sbig);
    wv_session_options_init(&sbig.o);
    sbig.o.struct_size = sizeof sbig;
    sbig.o.context_length = 32;
    wv_session *s2 = NULL;
    EXPECT(wv_session_new(m, &sbig.o, &s2), WV_OK);
    size_t n = 0;
    EXPECT(wv_session_context_length(s2, &n), WV_OK);
    CHECK(n == 32);
    wv_session_free(s2);
    sbig.newer = 1;
    EXPECT(wv_session_new(m, &sbig.o, &s2), WV_ERR_UNSUPPORTED);
    wv_session_free(s);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR TMP_DIR [OTHER_MODEL_DIR]\n", argv[0]);
        return 2;
    }
    model_dir = argv[1];
    tmp_dir = argv[2];
    other_model_dir = argc > 3 ? argv[3] : NULL;
    under_valgrind = getenv("WV_CAPI_TEST_VALGRIND") != NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);

#define RUN(call)                                                                               \
    do {                                                                                        \
        double t0_ = now_s();                                                                   \
        call;                                                                                   \
        printf("# %-45s %7.3f s\n", #call, now_s() - t0_);                                     \
    } while (0)
    wv_model *m = NULL;
    wv_model_info info;
    RUN(test_versions_and_names());
    RUN(test_last_error_is_per_thread());
    RUN(test_log_callback());
    RUN(m = test_load());
    RUN(test_model_info(m, &info));
    RUN(test_tokenize(m, &info));
    RUN(test_session_basics(m, &info));
    RUN(test_generate(m));
    RUN(test_context_full(m));
    RUN(test_reentrancy(m));
    RUN(test_cancel_from_another_thread(m));
    RUN(test_model_shared_by_threads(m));
    RUN(test_model_freed_while_sessions_live());
    RUN(test_save_restore(m));
    RUN(test_stream(m));
    RUN(test_options_struct_size(m));
    wv_model_free(m);

    printf("capi_test: %d passed, %d failed\n", (int)passed, (int)failed);
    return failed ? 1 : 0;
}
