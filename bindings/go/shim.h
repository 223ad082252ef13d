// The C side of the Go binding: libwv is opened at run time (dlopen), and every function the
// binding uses is called through a pointer resolved then. wvgo_<name> forwards to <name>.
#ifndef WVGO_SHIM_H
#define WVGO_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "wv.h"

// Functions forwarded as they are: X(return type, name, parameters, arguments).
#define WVGO_FORWARDED(X)                                                                      \
    X(uint32_t, wv_abi_version, (void), ())                                                    \
    X(const char *, wv_version, (void), ())                                                    \
    X(const char *, wv_last_error, (void), ())                                                 \
    X(void, wv_model_free, (struct wv_model * m), (m))                                         \
    X(wv_status, wv_model_get_info, (const struct wv_model *m, struct wv_model_info *i), (m, i)) \
    X(wv_status, wv_session_new,                                                               \
      (const struct wv_model *m, const struct wv_session_options *o, struct wv_session **s),   \
      (m, o, s))                                                                               \
    X(void, wv_session_free, (struct wv_session * s), (s))                                     \
    X(wv_status, wv_session_cancel, (struct wv_session * s), (s))                              \
    X(wv_status, wv_session_reset, (struct wv_session * s), (s))                               \
    X(wv_status, wv_session_truncate, (struct wv_session * s, size_t n), (s, n))               \
    X(wv_status, wv_session_token_count, (struct wv_session * s, size_t *n), (s, n))           \
    X(wv_status, wv_session_context_length, (struct wv_session * s, size_t *n), (s, n))        \
    X(wv_status, wv_session_get_tokens,                                                        \
      (struct wv_session * s, int32_t *t, size_t cap, size_t *n), (s, t, cap, n))              \
    X(wv_status, wv_session_set_tokens, (struct wv_session * s, const int32_t *t, size_t n),   \
      (s, t, n))                                                                               \
    X(wv_status, wv_tokenize,                                                                  \
      (const struct wv_model *m, const char *text, bool add_special, int32_t *t, size_t cap,   \
       size_t *n),                                                                             \
      (m, text, add_special, t, cap, n))                                                       \
    X(wv_status, wv_detokenize,                                                                \
      (const struct wv_model *m, const int32_t *t, size_t n, char *text, size_t cap,           \
       size_t *size),                                                                          \
      (m, t, n, text, cap, size))                                                              \
    X(wv_status, wv_token_to_piece,                                                            \
      (const struct wv_model *m, int32_t t, char *piece, size_t cap, size_t *size),            \
      (m, t, piece, cap, size))                                                                \
    X(wv_status, wv_session_save_state,                                                        \
      (struct wv_session * s, uint8_t *buf, size_t cap, size_t *size), (s, buf, cap, size))    \
    X(wv_status, wv_session_save_file, (struct wv_session * s, const char *path), (s, path))   \
    X(wv_status, wv_session_restore_state,                                                     \
      (struct wv_session * s, const uint8_t *data, size_t size), (s, data, size))              \
    X(wv_status, wv_session_restore_file, (struct wv_session * s, const char *path), (s, path))

#define WVGO_DECLARE(ret, name, params, args) ret wvgo_##name params;
WVGO_FORWARDED(WVGO_DECLARE)
#undef WVGO_DECLARE

// Opens libwv at `path` (a file name, or a bare name for the dynamic linker's search), checks
// its ABI against wv.h and resolves every function. Returns 0, or 1 when it cannot be opened or
// lacks a function (message in `err`), or 2 when its ABI does not match (its version in *abi).
// On failure nothing changes; after a success, later calls return 0 at once.
int wvgo_open(const char *path, uint32_t *abi, char *err, size_t err_cap);

// Defaults of the options structs (through ample scratch space: a newer library writes its own,
// possibly larger, struct), with this header's struct_size.
void wvgo_load_defaults(struct wv_load_options *o);
void wvgo_session_defaults(struct wv_session_options *o);
void wvgo_generate_defaults(struct wv_generate_options *o);

// wv_load with the Go progress function behind cgo.Handle `progress` (0: none).
wv_status wvgo_load(const char *dir, struct wv_load_options *o, uintptr_t progress,
                    struct wv_model **out);
// wv_generate (chat 0) or wv_chat (chat 1), with tokens going to the Go call behind cgo.Handle
// `call`.
wv_status wvgo_generate(struct wv_session *s, int chat, const char *text,
                        const struct wv_generate_options *o, uintptr_t call);
// Sends wv's log messages to the Go logger (on != 0) or silences wv.
wv_status wvgo_set_log(int on, int32_t level);

// A C array of n C strings (filled with wvgo_strings_set), freed with wvgo_strings_free.
char **wvgo_strings_new(size_t n);
void wvgo_strings_set(char **a, size_t i, char *s);
void wvgo_strings_free(char **a, size_t n);

#endif
