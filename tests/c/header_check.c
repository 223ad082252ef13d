/* The header on its own, as C11 with every warning an error (built by tests/capi.rs). */
#include "wv.h"
#include "wv.h" /* the include guard works */

#include <stdio.h>
#include <string.h>

_Static_assert(sizeof(wv_status) == 4, "wv_status is int32_t");
_Static_assert(WV_OK == 0 && WV_ERR_INTERNAL == 10 && WV_ERR_BUFFER_TOO_SMALL == 13, "codes");
_Static_assert(WV_ABI_VERSION == ((WV_ABI_VERSION_MAJOR << 16) | WV_ABI_VERSION_MINOR), "abi");
_Static_assert(WV_NO_TOKEN == -1 && 1 - WV_NO_TOKEN == 2, "parenthesised");
_Static_assert(offsetof(wv_load_options, struct_size) == 0, "struct_size first");
_Static_assert(offsetof(wv_session_options, struct_size) == 0, "struct_size first");
_Static_assert(offsetof(wv_generate_options, struct_size) == 0, "struct_size first");
_Static_assert(offsetof(wv_model_info, struct_size) == 0, "struct_size first");

static int32_t on_token(void *user_data, int32_t token, const char *text, size_t text_len) {
    (void)user_data; (void)token; (void)text; (void)text_len;
    return 0;
}

int main(void) {
    wv_token_callback cb = on_token;
    wv_generate_options o;
    wv_generate_options_init(&o);
    if (cb == NULL || o.struct_size != sizeof o || wv_abi_version() != WV_ABI_VERSION ||
        strcmp(wv_status_name(WV_ERR_BUSY), "busy") != 0) {
        return 1;
    }
    printf("header ok (C): wv %s, ABI %u.%u\n", wv_version(), (unsigned)(wv_abi_version() >> 16),
           (unsigned)(wv_abi_version() & 0xffff));
    return 0;
}
