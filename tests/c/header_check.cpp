// The header on its own, as C++17 with every warning an error (built by tests/capi.rs).
#include "wv.h"

#include <cstdio>
#include <cstring>
#include <type_traits>

static_assert(std::is_same<wv_status, int32_t>::value, "wv_status is int32_t");
static_assert(WV_OK == 0 && WV_ERR_INTERNAL == 10 && WV_ERR_BUFFER_TOO_SMALL == 13, "codes");
static_assert(WV_NO_TOKEN == -1, "no token");
static_assert(std::is_standard_layout<wv_generate_options>::value, "C layout");
static_assert(offsetof(wv_model_info, struct_size) == 0, "struct_size first");

int main() {
    wv_token_callback cb = [](void *, int32_t, const char *, size_t) -> int32_t { return 0; };
    wv_log_callback log = [](void *, int32_t, const char *) {};
    wv_session_options so;
    wv_session_options_init(&so);
    wv_model *model = nullptr;
    // A missing folder: an error status and a message, no exception, no crash.
    wv_status st = wv_load("/nonexistent/wv-model", nullptr, &model);
    if (cb == nullptr || log == nullptr || so.struct_size != sizeof so || st != WV_ERR_IO ||
        model != nullptr || std::strlen(wv_last_error()) == 0 ||
        wv_set_log_callback(log, nullptr, WV_LOG_INFO) != WV_OK ||
        wv_set_log_callback(nullptr, nullptr, WV_LOG_INFO) != WV_OK) {
        return 1;
    }
    std::printf("header ok (C++): wv %s, %s\n", wv_version(), wv_status_name(st));
    return 0;
}
