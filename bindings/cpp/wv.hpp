// wv.hpp: the C++17 binding of wv (header-only, over the C API in wv.h and nothing else).
//
//   wv::Model model = wv::Model::load("models/kjv-tiny");
//   wv::Session session(model);
//   wv::GenerateOptions opts;            // the model card's defaults (wv_generate_options_init)
//   opts.temperature = 0;                // greedy
//   session.chat("Who made the heaven?", opts, [](std::string_view text) { std::cout << text; });
//
// Ownership: Model, Session and Stream own one wv handle each through std::unique_ptr with a
// deleter; they are movable, not copyable, and a moved-from object is empty (using it throws
// wv::Error with WV_ERR_INVALID_ARGUMENT, never crashes). A session keeps its model's weights
// alive and a stream its session, so destruction order does not matter.
//
// Errors: every failure throws wv::Error, which carries the wv_status (code()) and
// wv_last_error()'s message (in what()). WV_DONE and WV_TIMEOUT are not errors.
//
// Threads (the C contract): a Model may be used from any number of threads at once; a Session
// by one call at a time (a second concurrent call throws wv::Error with WV_ERR_BUSY);
// Session::cancel() and Stream::cancel() work from any thread, and from a token callback.
//
// Generation: Session::generate / Session::chat call a callable for every token on the calling
// thread; Session::stream / Session::stream_chat return a Stream that generates on a worker
// thread and is polled without blocking (Stream::next with a zero timeout), for a frame loop.
//
// The library must speak the ABI of the wv.h this header was compiled with: Model::load checks
// wv_abi_version() first and throws wv::Error (WV_ERR_UNSUPPORTED) for an incompatible one.
#ifndef WV_HPP
#define WV_HPP

#include "wv.h"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace wv {

/// The ABI version of the wv.h this binding was compiled with (major << 16 | minor).
inline constexpr uint32_t header_abi_version = WV_ABI_VERSION;
/// The token id of text released at the end of generation without a token of its own.
inline constexpr int32_t no_token = WV_NO_TOKEN;
/// GenerateOptions::seed: seed the sampler from the clock.
inline constexpr uint64_t seed_random = WV_SEED_RANDOM;

/// A failed wv call: the status code and wv_last_error()'s message.
class Error : public std::runtime_error {
public:
    Error(wv_status code, const std::string &what) : std::runtime_error(what), code_(code) {}
    /// The wv_status (WV_ERR_IO, WV_ERR_CANCELLED, ...).
    wv_status code() const noexcept { return code_; }
    /// The status's stable short name ("i/o error", "cancelled", ...).
    const char *status_name() const noexcept { return wv_status_name(code_); }

private:
    wv_status code_;
};

/// The library's ABI version (major << 16 | minor).
inline uint32_t abi_version() noexcept { return wv_abi_version(); }

/// Whether a library of ABI version `library` can be used with this header: the same major
/// and at least the header's minor.
constexpr bool abi_compatible(uint32_t library) noexcept {
    return (library >> 16) == WV_ABI_VERSION_MAJOR && (library & 0xffffu) >= WV_ABI_VERSION_MINOR;
}

/// Throws wv::Error (WV_ERR_UNSUPPORTED) unless the loaded libwv is compatible with wv.h.
inline void check_abi() {
    const uint32_t lib = wv_abi_version();
    if (!abi_compatible(lib)) {
        throw Error(WV_ERR_UNSUPPORTED,
                    "libwv has ABI version " + std::to_string(lib >> 16) + "." +
                        std::to_string(lib & 0xffffu) + ", but this binding was built for " +
                        std::to_string(WV_ABI_VERSION_MAJOR) + "." +
                        std::to_string(WV_ABI_VERSION_MINOR) +
                        " (it needs the same major and at least that minor): use a matching "
                        "libwv or rebuild against its wv.h");
    }
}

/// The library's version ("0.1.0").
inline std::string_view version() noexcept { return wv_version(); }

namespace detail {

[[noreturn]] inline void raise(wv_status st, const char *function) {
    throw Error(st, std::string(function) + ": " + wv_status_name(st) + ": " + wv_last_error());
}

inline void check(wv_status st, const char *function) {
    if (st != WV_OK) raise(st, function);
}

/// A NUL-terminated copy of `s`, which must not contain a NUL itself (C would cut it there).
inline std::string c_string(std::string_view s, const char *what) {
    if (s.find('\0') != std::string_view::npos) {
        throw Error(WV_ERR_INVALID_ARGUMENT, std::string(what) + " contains a NUL byte");
    }
    return std::string(s);
}

/// The library's defaults for an options struct. The *_init functions write the library's
/// own sizeof, which a newer library may have grown, so they write into ample scratch space
/// and we keep the fields this header knows (with this header's struct_size).
template <class T>
T defaults(void (*init)(T *)) {
    union Scratch {
        T value;
        unsigned char bytes[1024];
        std::max_align_t align;
    } scratch;
    static_assert(sizeof(T) <= sizeof(scratch.bytes), "options struct fits the scratch");
    std::memset(scratch.bytes, 0, sizeof scratch.bytes);
    init(&scratch.value);
    T out;
    std::memcpy(&out, scratch.bytes, sizeof out);
    out.struct_size = static_cast<uint32_t>(sizeof out);
    return out;
}

struct ModelDeleter {
    void operator()(wv_model *m) const noexcept { wv_model_free(m); }
};
struct SessionDeleter {
    void operator()(wv_session *s) const noexcept { wv_session_free(s); }
};
struct StreamDeleter {
    void operator()(wv_stream *s) const noexcept { wv_stream_free(s); }
};


}  // namespace detail

/// One generated token: its id (wv::no_token for trailing text without a token) and the UTF-8
/// text it completes (possibly empty). `text` is valid only during the callback, or until the
/// next Stream::next.
struct Token {
    int32_t id;
    std::string_view text;
};

/// Options for Model::load.
struct LoadOptions {
    /// "auto" (the GPU when usable, else the CPU), "cpu", "cuda" or "cuda:N".
    std::string device = "auto";
    /// Called on the loading thread with the fraction loaded (0 to 1); return false to abort
    /// (the load then throws WV_ERR_CANCELLED). An exception thrown here aborts the load and is
    /// rethrown by Model::load.
    std::function<bool(float)> progress;
};

/// Options for a Session.
struct SessionOptions {
    /// Positions the KV cache holds; 0 means the model's full context.
    uint32_t context_length = 0;
    /// The chat system line; std::nullopt means Vicuna's, "" means none.
    std::optional<std::string> system_prompt;
};

/// Settings for one generation. Default-constructed: the model card's defaults, from
/// wv_generate_options_init (max_tokens 512, temperature 0.7, top_k 40, top_p 0.95,
/// repetition_penalty 1.1, a random seed). temperature 0 is greedy; 0 max_tokens is no limit.
struct GenerateOptions {
    uint32_t max_tokens;
    float temperature;
    uint32_t top_k;
    float top_p;
    float repetition_penalty;
    uint64_t seed;
    /// Stop strings: generation stops when one appears; it is never passed on, not even in part.
    std::vector<std::string> stop;

    GenerateOptions() {
        const wv_generate_options d = detail::defaults(&wv_generate_options_init);
        max_tokens = d.max_tokens;
        temperature = d.temperature;
        top_k = d.top_k;
        top_p = d.top_p;
        repetition_penalty = d.repetition_penalty;
        seed = d.seed;
    }

    /// Greedy decoding (temperature 0) of at most `max_tokens` tokens (0: no limit).
    static GenerateOptions greedy(uint32_t max_tokens = 512) {
        GenerateOptions o;
        o.temperature = 0;
        o.max_tokens = max_tokens;
        return o;
    }
};

/// What a loaded model is (wv_model_info).
struct ModelInfo {
    uint32_t context_length = 0;
    uint32_t vocab_size = 0;
    uint32_t n_layers = 0;
    uint32_t hidden_size = 0;
    uint32_t n_heads = 0;
    uint32_t n_kv_heads = 0;
    uint32_t quant_bits = 0;
    int32_t quant_group_size = 0;
    bool quant_act_order = false;
    int32_t bos_token = 0;
    int32_t eos_token = 0;
    std::string device;
    std::string device_description;
    uint64_t weight_bytes = 0;
    uint64_t kv_bytes_per_token = 0;
};

namespace detail {

/// GenerateOptions as the C struct; borrows the stop strings of `o`, which must outlive it.
class COptions {
public:
    explicit COptions(const GenerateOptions &o) : c_(defaults(&wv_generate_options_init)) {
        c_.max_tokens = o.max_tokens;
        c_.temperature = o.temperature;
        c_.top_k = o.top_k;
        c_.top_p = o.top_p;
        c_.repetition_penalty = o.repetition_penalty;
        c_.seed = o.seed;
        for (const std::string &s : o.stop) {
            if (s.find('\0') != std::string::npos) {
                throw Error(WV_ERR_INVALID_ARGUMENT, "a stop string contains a NUL byte");
            }
            stop_.push_back(s.c_str());
        }
        c_.stop = stop_.empty() ? nullptr : stop_.data();
        c_.n_stop = stop_.size();
    }
    COptions(const COptions &) = delete;
    COptions &operator=(const COptions &) = delete;
    const wv_generate_options *get() const noexcept { return &c_; }

private:
    wv_generate_options c_;
    std::vector<const char *> stop_;
};

/// Calls a C++ callable from wv's token callback; an exception stops generation and is kept
/// to be rethrown once wv has returned (it must never unwind through wv).
template <class F>
struct TokenSink {
    F &fn;
    std::exception_ptr error;

    static int32_t call(void *user_data, int32_t id, const char *text, size_t len) noexcept {
        auto *self = static_cast<TokenSink *>(user_data);
        try {
            const std::string_view piece(text, len);
            return self->invoke(id, piece) ? 0 : 1;
        } catch (...) {
            self->error = std::current_exception();
            return 1;
        }
    }

    bool invoke(int32_t id, std::string_view piece) {
        if constexpr (std::is_invocable_v<F &, Token>) {
            return result(fn, Token{id, piece});
        } else if constexpr (std::is_invocable_v<F &, int32_t, std::string_view>) {
            return result(fn, id, piece);
        } else {
            static_assert(std::is_invocable_v<F &, std::string_view>,
                          "the token callback takes (std::string_view), (wv::Token) or "
                          "(int32_t, std::string_view) and returns void or bool");
            return result(fn, piece);
        }
    }

    template <class... A>
    static bool result(F &f, A &&...args) {
        using R = std::invoke_result_t<F &, A...>;
        // Not int: in C, 0 means "go on"; here true does, so only void and bool are accepted.
        static_assert(std::is_void_v<R> || std::is_same_v<std::decay_t<R>, bool>,
                      "the token callback returns void (go on) or bool (false stops)");
        if constexpr (std::is_void_v<R>) {
            std::invoke(f, std::forward<A>(args)...);
            return true;
        } else {
            return std::invoke(f, std::forward<A>(args)...);
        }
    }
};

}  // namespace detail

class Session;

/// A generation running on a worker thread, read token by token (wv_stream_*). Poll it from a
/// frame loop with next() (zero timeout: never blocks), or iterate it with a range-for (blocks
/// for each token). Destroying it cancels a generation still running and waits for the worker
/// (at most one decode step); the tokens generated stay in the session. The session is busy
/// until the stream has ended or is destroyed.
class Stream {
public:
    Stream() noexcept = default;
    /// Adopts a wv_stream from wv_stream_begin.
    explicit Stream(wv_stream *owned) noexcept : h_(owned) {}

    /// The next token if one arrives within `timeout` (zero: just poll; negative: wait as long
    /// as it takes). std::nullopt when none is ready yet, or when the stream has ended (see
    /// done()). Throws wv::Error when generation failed (WV_ERR_CANCELLED after cancel(),
    /// WV_ERR_CONTEXT_FULL, ...), after the tokens produced before the failure. The token's
    /// text is valid until the next call to next() or the stream's destruction.
    std::optional<Token> next(std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) {
        if (done_) return std::nullopt;
        const auto ms = timeout.count();
        const int32_t t = ms < 0 ? -1
                                 : static_cast<int32_t>(std::min<decltype(timeout.count())>(
                                       ms, std::numeric_limits<int32_t>::max()));
        int32_t id = 0;
        const char *text = nullptr;
        size_t len = 0;
        const wv_status st = wv_stream_next(h_.get(), t, &id, &text, &len);
        switch (st) {
            case WV_OK:
                return Token{id, std::string_view(text, len)};
            case WV_TIMEOUT:
                return std::nullopt;
            case WV_DONE:
                done_ = true;
                return std::nullopt;
            default:
                done_ = true;
                detail::raise(st, "wv_stream_next");
        }
    }

    /// Waits for the next token; std::nullopt once the stream has ended.
    std::optional<Token> wait() { return next(std::chrono::milliseconds(-1)); }

    /// True once the stream has ended (normally; an error end has thrown from next()).
    bool done() const noexcept { return done_; }

    /// Ends the generation from any thread: next() returns the tokens already queued, then
    /// throws wv::Error with WV_ERR_CANCELLED.
    void cancel() noexcept {
        if (h_) wv_stream_cancel(h_.get());
    }

    wv_stream *get() const noexcept { return h_.get(); }
    explicit operator bool() const noexcept { return static_cast<bool>(h_); }

    /// Blocking iteration: for (wv::Token t : stream) { ... }.
    class iterator {
    public:
        using iterator_category = std::input_iterator_tag;
        using value_type = Token;
        using difference_type = std::ptrdiff_t;
        using pointer = const Token *;
        using reference = const Token &;

        iterator() = default;
        explicit iterator(Stream *s) : s_(s) { ++*this; }
        reference operator*() const { return *cur_; }
        pointer operator->() const { return &*cur_; }
        iterator &operator++() {
            cur_ = s_->wait();
            if (!cur_) s_ = nullptr;
            return *this;
        }
        void operator++(int) { ++*this; }
        bool operator==(const iterator &o) const noexcept { return s_ == o.s_; }
        bool operator!=(const iterator &o) const noexcept { return s_ != o.s_; }

    private:
        Stream *s_ = nullptr;
        std::optional<Token> cur_;
    };
    iterator begin() { return iterator(this); }
    iterator end() { return iterator(); }

private:
    std::unique_ptr<wv_stream, detail::StreamDeleter> h_;
    bool done_ = false;
};

class Model;

/// One conversation on a model: its tokens and KV cache (wv_session).
class Session {
public:
    Session() noexcept = default;
    /// A new session on `model` (wv_session_new).
    explicit Session(const Model &model, const SessionOptions &opts = {});
    /// Adopts a wv_session from wv_session_new.
    explicit Session(wv_session *owned) noexcept : h_(owned) {}

    /// Appends raw prompt text (BOS first in an empty session) and generates, calling
    /// `on_token` on this thread for every token. `on_token` takes (std::string_view text),
    /// (wv::Token) or (int32_t id, std::string_view text) and returns void (go on) or bool
    /// (false stops generation, which is not an error). Throws wv::Error on failure, including
    /// WV_ERR_CANCELLED after cancel(); an exception from `on_token` stops generation and is
    /// rethrown here. Generated tokens stay in the session either way.
    template <class F>
    void generate(std::string_view prompt, const GenerateOptions &opts, F &&on_token) {
        run(&wv_generate, "wv_generate", prompt, opts, on_token);
    }
    /// As generate(prompt, opts, on_token) with the default options.
    template <class F, class = std::enable_if_t<!std::is_convertible_v<F, const GenerateOptions &>>>
    void generate(std::string_view prompt, F &&on_token) {
        generate(prompt, GenerateOptions(), std::forward<F>(on_token));
    }
    /// As generate(prompt, opts, on_token), returning the whole text.
    std::string generate(std::string_view prompt, const GenerateOptions &opts = {}) {
        std::string out;
        generate(prompt, opts, [&out](std::string_view t) { out.append(t); });
        return out;
    }

    /// One user turn in the Vicuna v1.1 template, generating the assistant's reply, as
    /// generate() does.
    template <class F>
    void chat(std::string_view message, const GenerateOptions &opts, F &&on_token) {
        run(&wv_chat, "wv_chat", message, opts, on_token);
    }
    /// As chat(message, opts, on_token) with the default options.
    template <class F, class = std::enable_if_t<!std::is_convertible_v<F, const GenerateOptions &>>>
    void chat(std::string_view message, F &&on_token) {
        chat(message, GenerateOptions(), std::forward<F>(on_token));
    }
    /// As chat(message, opts, on_token), returning the whole reply.
    std::string chat(std::string_view message, const GenerateOptions &opts = {}) {
        std::string out;
        chat(message, opts, [&out](std::string_view t) { out.append(t); });
        return out;
    }

    /// Starts generating from raw prompt text on a worker thread (wv_stream_begin).
    Stream stream(std::string_view prompt, const GenerateOptions &opts = {}) {
        return begin(&wv_stream_begin, "wv_stream_begin", prompt, opts);
    }
    /// Starts a chat turn on a worker thread (wv_stream_begin_chat).
    Stream stream_chat(std::string_view message, const GenerateOptions &opts = {}) {
        return begin(&wv_stream_begin_chat, "wv_stream_begin_chat", message, opts);
    }

    /// Cancels the running generation (from any thread, or a token callback): it throws
    /// WV_ERR_CANCELLED within one decode step. No effect when nothing runs.
    void cancel() noexcept {
        if (h_) wv_session_cancel(h_.get());
    }

    /// Forgets the conversation.
    void reset() { detail::check(wv_session_reset(h_.get()), "wv_session_reset"); }
    /// Keeps only the first `n_tokens` tokens.
    void truncate(size_t n_tokens) {
        detail::check(wv_session_truncate(h_.get(), n_tokens), "wv_session_truncate");
    }
    /// Tokens in the conversation (BOS, prompts and replies).
    size_t token_count() const {
        size_t n = 0;
        detail::check(wv_session_token_count(h_.get(), &n), "wv_session_token_count");
        return n;
    }
    /// The session's context length in tokens.
    size_t context_length() const {
        size_t n = 0;
        detail::check(wv_session_context_length(h_.get(), &n), "wv_session_context_length");
        return n;
    }
    /// The conversation's token ids.
    std::vector<int32_t> tokens() const {
        size_t n = 0;
        detail::check(wv_session_get_tokens(h_.get(), nullptr, 0, &n), "wv_session_get_tokens");
        std::vector<int32_t> out(n);
        if (n > 0) {
            detail::check(wv_session_get_tokens(h_.get(), out.data(), out.size(), &n),
                          "wv_session_get_tokens");
        }
        out.resize(n);
        return out;
    }
    /// Replaces the conversation with these token ids (BOS is not added).
    void set_tokens(const std::vector<int32_t> &ids) {
        detail::check(wv_session_set_tokens(h_.get(), ids.data(), ids.size()),
                      "wv_session_set_tokens");
    }
    /// The session's state (system prompt and tokens), for restore_state.
    std::vector<uint8_t> save_state() const {
        size_t n = 0;
        detail::check(wv_session_save_state(h_.get(), nullptr, 0, &n), "wv_session_save_state");
        std::vector<uint8_t> out(n);
        detail::check(wv_session_save_state(h_.get(), out.data(), out.size(), &n),
                      "wv_session_save_state");
        out.resize(n);
        return out;
    }
    void restore_state(const void *data, size_t size) {
        detail::check(wv_session_restore_state(h_.get(), static_cast<const uint8_t *>(data), size),
                      "wv_session_restore_state");
    }
    void restore_state(const std::vector<uint8_t> &state) {
        restore_state(state.data(), state.size());
    }
    void save_file(std::string_view path) const {
        detail::check(wv_session_save_file(h_.get(), detail::c_string(path, "path").c_str()),
                      "wv_session_save_file");
    }
    void restore_file(std::string_view path) {
        detail::check(wv_session_restore_file(h_.get(), detail::c_string(path, "path").c_str()),
                      "wv_session_restore_file");
    }

    wv_session *get() const noexcept { return h_.get(); }
    wv_session *release() noexcept { return h_.release(); }
    explicit operator bool() const noexcept { return static_cast<bool>(h_); }

private:
    using RunFn = wv_status (*)(wv_session *, const char *, const wv_generate_options *,
                                wv_token_callback, void *);
    using BeginFn = wv_status (*)(wv_session *, const char *, const wv_generate_options *,
                                  wv_stream **);

    template <class F>
    void run(RunFn fn, const char *name, std::string_view text, const GenerateOptions &opts,
             F &on_token) {
        const std::string c = detail::c_string(text, "the prompt");
        const detail::COptions o(opts);
        detail::TokenSink<F> sink{on_token, nullptr};
        const wv_status st = fn(h_.get(), c.c_str(), o.get(), &detail::TokenSink<F>::call, &sink);
        if (sink.error) std::rethrow_exception(sink.error);
        detail::check(st, name);
    }

    Stream begin(BeginFn fn, const char *name, std::string_view text,
                 const GenerateOptions &opts) {
        const std::string c = detail::c_string(text, "the prompt");
        const detail::COptions o(opts);
        wv_stream *s = nullptr;
        detail::check(fn(h_.get(), c.c_str(), o.get(), &s), name);
        return Stream(s);
    }

    std::unique_ptr<wv_session, detail::SessionDeleter> h_;
};

/// A loaded model (wv_model): immutable, usable from any number of threads at once.
class Model {
public:
    Model() noexcept = default;
    /// Adopts a wv_model from wv_load.
    explicit Model(wv_model *owned) noexcept : h_(owned) {}
    /// Loads the checkpoint in the folder `dir` (see Model::load).
    explicit Model(std::string_view dir, const LoadOptions &opts = {}) : Model(load(dir, opts)) {}

    /// Loads the GPTQ (or dense) LLaMA checkpoint in the folder `dir`, after checking that
    /// libwv's ABI matches wv.h. Throws wv::Error (WV_ERR_IO for a missing folder,
    /// WV_ERR_MODEL_FORMAT, WV_ERR_UNSUPPORTED, WV_ERR_DEVICE, WV_ERR_CANCELLED, ...).
    static Model load(std::string_view dir, const LoadOptions &opts = {}) {
        check_abi();
        const std::string path = detail::c_string(dir, "the model folder");
        const std::string device = detail::c_string(opts.device, "the device");
        wv_load_options lo = detail::defaults(&wv_load_options_init);
        lo.device = device.c_str();
        struct Progress {
            const std::function<bool(float)> *fn;
            std::exception_ptr error;
            static int32_t call(void *ud, float fraction) noexcept {
                auto *self = static_cast<Progress *>(ud);
                try {
                    return (*self->fn)(fraction) ? 0 : 1;
                } catch (...) {
                    self->error = std::current_exception();
                    return 1;
                }
            }
        } progress{&opts.progress, nullptr};
        if (opts.progress) {
            lo.progress = &Progress::call;
            lo.progress_user_data = &progress;
        }
        wv_model *m = nullptr;
        const wv_status st = wv_load(path.c_str(), &lo, &m);
        if (progress.error) {
            wv_model_free(m);
            std::rethrow_exception(progress.error);
        }
        detail::check(st, "wv_load");
        return Model(m);
    }

    /// A new session on this model.
    Session new_session(const SessionOptions &opts = {}) const { return Session(*this, opts); }

    ModelInfo info() const {
        wv_model_info i;
        std::memset(&i, 0, sizeof i);
        i.struct_size = sizeof i;
        detail::check(wv_model_get_info(h_.get(), &i), "wv_model_get_info");
        ModelInfo o;
        o.context_length = i.context_length;
        o.vocab_size = i.vocab_size;
        o.n_layers = i.n_layers;
        o.hidden_size = i.hidden_size;
        o.n_heads = i.n_heads;
        o.n_kv_heads = i.n_kv_heads;
        o.quant_bits = i.quant_bits;
        o.quant_group_size = i.quant_group_size;
        o.quant_act_order = i.quant_act_order != 0;
        o.bos_token = i.bos_token;
        o.eos_token = i.eos_token;
        o.device = i.device ? i.device : "";
        o.device_description = i.device_description ? i.device_description : "";
        o.weight_bytes = i.weight_bytes;
        o.kv_bytes_per_token = i.kv_bytes_per_token;
        return o;
    }

    /// Token ids of `text` (with BOS when `add_special`, as the tokenizer config says).
    std::vector<int32_t> tokenize(std::string_view text, bool add_special = true) const {
        const std::string c = detail::c_string(text, "the text");
        size_t n = 0;
        detail::check(wv_tokenize(h_.get(), c.c_str(), add_special, nullptr, 0, &n), "wv_tokenize");
        std::vector<int32_t> ids(n);
        if (n > 0) {
            detail::check(wv_tokenize(h_.get(), c.c_str(), add_special, ids.data(), n, &n),
                          "wv_tokenize");
        }
        ids.resize(n);
        return ids;
    }

    /// The text of token ids (special tokens skipped).
    std::string detokenize(const std::vector<int32_t> &ids) const {
        size_t n = 0;
        detail::check(wv_detokenize(h_.get(), ids.data(), ids.size(), nullptr, 0, &n),
                      "wv_detokenize");
        std::string text(n, '\0');
        detail::check(wv_detokenize(h_.get(), ids.data(), ids.size(), text.data(), n, &n),
                      "wv_detokenize");
        text.resize(n > 0 ? n - 1 : 0);
        return text;
    }

    /// The vocabulary string of one token id ("▁Hello", "<0x0A>", "</s>").
    std::string token_to_piece(int32_t id) const {
        size_t n = 0;
        detail::check(wv_token_to_piece(h_.get(), id, nullptr, 0, &n), "wv_token_to_piece");
        std::string piece(n, '\0');
        detail::check(wv_token_to_piece(h_.get(), id, piece.data(), n, &n), "wv_token_to_piece");
        piece.resize(n > 0 ? n - 1 : 0);
        return piece;
    }

    wv_model *get() const noexcept { return h_.get(); }
    wv_model *release() noexcept { return h_.release(); }
    explicit operator bool() const noexcept { return static_cast<bool>(h_); }

private:
    std::unique_ptr<wv_model, detail::ModelDeleter> h_;
};

inline Session::Session(const Model &model, const SessionOptions &opts) {
    wv_session_options so = detail::defaults(&wv_session_options_init);
    so.context_length = opts.context_length;
    std::string system;
    if (opts.system_prompt) {
        system = detail::c_string(*opts.system_prompt, "the system prompt");
        so.system_prompt = system.c_str();
    }
    wv_session *s = nullptr;
    detail::check(wv_session_new(model.get(), &so, &s), "wv_session_new");
    h_.reset(s);
}

/// wv's log messages at `level` (WV_LOG_ERROR .. WV_LOG_DEBUG) or more severe go to `fn`
/// (process-wide; an empty function silences wv). `fn` may be called from any thread inside a
/// wv call, concurrently; exceptions it throws are swallowed.
using LogFunction = std::function<void(int32_t level, std::string_view message)>;

namespace detail {
struct LogState {
    std::mutex mutex;
    std::shared_ptr<const LogFunction> fn;
};
inline LogState &log_state() {
    static LogState state;
    return state;
}
inline void log_trampoline(void *, int32_t level, const char *message) noexcept {
    std::shared_ptr<const LogFunction> fn;
    {
        std::lock_guard<std::mutex> lock(log_state().mutex);
        fn = log_state().fn;
    }
    if (!fn) return;
    try {
        (*fn)(level, message ? std::string_view(message) : std::string_view());
    } catch (...) {
    }
}
}  // namespace detail

inline void set_log_callback(LogFunction fn, int32_t level = WV_LOG_WARN) {
    auto &state = detail::log_state();
    const bool on = static_cast<bool>(fn);
    {
        std::lock_guard<std::mutex> lock(state.mutex);
        state.fn = on ? std::make_shared<const LogFunction>(std::move(fn)) : nullptr;
    }
    detail::check(wv_set_log_callback(on ? &detail::log_trampoline : nullptr, nullptr, level),
                  "wv_set_log_callback");
}

}  // namespace wv

#endif  // WV_HPP
