#include "shim.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "_cgo_export.h"

// Functions behind custom wrappers, and the forwarded ones, as pointers.
#define WVGO_CUSTOM(X)                                                                        \
    X(void, wv_load_options_init, (struct wv_load_options *), ())                              \
    X(void, wv_session_options_init, (struct wv_session_options *), ())                        \
    X(void, wv_generate_options_init, (struct wv_generate_options *), ())                      \
    X(wv_status, wv_load,                                                                      \
      (const char *, const struct wv_load_options *, struct wv_model **), ())                  \
    X(wv_status, wv_generate,                                                                  \
      (struct wv_session *, const char *, const struct wv_generate_options *,                  \
       wv_token_callback, void *), ())                                                         \
    X(wv_status, wv_chat,                                                                      \
      (struct wv_session *, const char *, const struct wv_generate_options *,                  \
       wv_token_callback, void *), ())                                                         \
    X(wv_status, wv_set_log_callback, (wv_log_callback, void *, int32_t), ())

#define WVGO_POINTER(ret, name, params, args) static ret(*p_##name) params;
WVGO_FORWARDED(WVGO_POINTER)
WVGO_CUSTOM(WVGO_POINTER)
#undef WVGO_POINTER

#define WVGO_DEFINE(ret, name, params, args) \
    ret wvgo_##name params { return p_##name args; }
WVGO_FORWARDED(WVGO_DEFINE)
#undef WVGO_DEFINE

static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static void *library;

int wvgo_open(const char *path, uint32_t *abi, char *err, size_t err_cap) {
    pthread_mutex_lock(&open_lock);
    if (library) {
        pthread_mutex_unlock(&open_lock);
        return 0;
    }
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *e = dlerror();
        snprintf(err, err_cap, "%s", e ? e : "dlopen failed");
        pthread_mutex_unlock(&open_lock);
        return 1;
    }
    uint32_t (*abi_version)(void) = (uint32_t(*)(void))dlsym(lib, "wv_abi_version");
    if (!abi_version) {
        snprintf(err, err_cap, "%s has no wv_abi_version: not libwv", path);
        dlclose(lib);
        pthread_mutex_unlock(&open_lock);
        return 1;
    }
    const uint32_t v = abi_version();
    *abi = v;
    if ((v >> 16) != WV_ABI_VERSION_MAJOR || (v & 0xffffu) < WV_ABI_VERSION_MINOR) {
        dlclose(lib);
        pthread_mutex_unlock(&open_lock);
        return 2;
    }
    const char *missing = NULL;
#define WVGO_RESOLVE(ret, name, params, args)                      \
    if (!missing) {                                                \
        *(void **)(&p_##name) = dlsym(lib, #name);                 \
        if (!p_##name) missing = #name;                            \
    }
    WVGO_FORWARDED(WVGO_RESOLVE)
    WVGO_CUSTOM(WVGO_RESOLVE)
#undef WVGO_RESOLVE
    if (missing) {
        snprintf(err, err_cap, "%s has no %s", path, missing);
        dlclose(lib);
        pthread_mutex_unlock(&open_lock);
        return 1;
    }
    library = lib;
    pthread_mutex_unlock(&open_lock);
    return 0;
}

#define WVGO_DEFAULTS(type, init, out)                                 \
    do {                                                               \
        union {                                                        \
            type value;                                                \
            unsigned char bytes[1024];                                 \
            uint64_t align;                                            \
        } scratch;                                                     \
        memset(&scratch, 0, sizeof scratch);                           \
        init(&scratch.value);                                          \
        memcpy(out, &scratch.value, sizeof *out);                      \
        (out)->struct_size = (uint32_t)sizeof *out;                    \
    } while (0)

void wvgo_load_defaults(struct wv_load_options *o) {
    WVGO_DEFAULTS(struct wv_load_options, p_wv_load_options_init, o);
}
void wvgo_session_defaults(struct wv_session_options *o) {
    WVGO_DEFAULTS(struct wv_session_options, p_wv_session_options_init, o);
}
void wvgo_generate_defaults(struct wv_generate_options *o) {
    WVGO_DEFAULTS(struct wv_generate_options, p_wv_generate_options_init, o);
}

static int32_t on_progress(void *user_data, float fraction) {
    return wvgoOnProgress((uintptr_t)user_data, fraction);
}

wv_status wvgo_load(const char *dir, struct wv_load_options *o, uintptr_t progress,
                    struct wv_model **out) {
    if (progress) {
        o->progress = on_progress;
        o->progress_user_data = (void *)progress;
    }
    return p_wv_load(dir, o, out);
}

static int32_t on_token(void *user_data, int32_t token, const char *text, size_t len) {
    return wvgoOnToken((uintptr_t)user_data, token, (char *)text, len);
}

wv_status wvgo_generate(struct wv_session *s, int chat, const char *text,
                        const struct wv_generate_options *o, uintptr_t call) {
    return (chat ? p_wv_chat : p_wv_generate)(s, text, o, on_token, (void *)call);
}

static void on_log(void *user_data, int32_t level, const char *message) {
    (void)user_data;
    wvgoOnLog(level, (char *)message);
}

wv_status wvgo_set_log(int on, int32_t level) {
    return p_wv_set_log_callback(on ? on_log : NULL, NULL, level);
}

char **wvgo_strings_new(size_t n) { return (char **)calloc(n ? n : 1, sizeof(char *)); }
void wvgo_strings_set(char **a, size_t i, char *s) { a[i] = s; }
void wvgo_strings_free(char **a, size_t n) {
    if (!a) return;
    for (size_t i = 0; i < n; i++) free(a[i]);
    free(a);
}
