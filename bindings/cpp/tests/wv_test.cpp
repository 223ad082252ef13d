// Tests of wv.hpp against libwv and the bundled KJV demo model (on the CPU).
#include <wv.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

using namespace std::chrono_literals;

std::string model_dir() {
    const char *dir = std::getenv("WV_TEST_MODEL");
    return dir && *dir ? dir : WV_TEST_MODEL;
}

wv::LoadOptions cpu() {
    wv::LoadOptions o;
    o.device = "cpu";
    return o;
}

// One model for the whole program: models are shared by sessions and threads.
const wv::Model &model() {
    static const wv::Model m = wv::Model::load(model_dir(), cpu());
    return m;
}

const char *const kPrompt = "In the beginning God created";
// The start of the model's greedy continuation of kPrompt (models/kjv-tiny/golden.json).
const char *const kGreedy = " the heavens, and the heavens";

template <class F>
wv::Error expect_error(wv_status code, F &&f) {
    try {
        f();
    } catch (const wv::Error &e) {
        EXPECT_EQ(e.code(), code) << e.what();
        EXPECT_STRNE(e.what(), "");
        return e;
    }
    ADD_FAILURE() << "no wv::Error thrown, expected " << wv_status_name(code);
    return wv::Error(WV_OK, "");
}

bool starts_with(const std::string &s, const std::string &prefix) {
    return s.compare(0, prefix.size(), prefix) == 0;
}

// The ABI ------------------------------------------------------------------------------------

static_assert(wv::abi_compatible(WV_ABI_VERSION), "the header's own ABI");
static_assert(wv::abi_compatible(WV_ABI_VERSION + 1), "a newer minor is fine");
static_assert(!wv::abi_compatible(WV_ABI_VERSION + (1u << 16)), "another major is not");
static_assert(WV_ABI_VERSION_MINOR == 0 || !wv::abi_compatible(WV_ABI_VERSION - 1),
              "an older minor is not");

TEST(Abi, HeaderAndLibraryAgree) {
    EXPECT_TRUE(wv::abi_compatible(wv::abi_version()));
    EXPECT_NO_THROW(wv::check_abi());
    EXPECT_FALSE(wv::version().empty());
}

// Loading ------------------------------------------------------------------------------------

TEST(Load, MissingFolderIsAnIoError) {
    const wv::Error e =
        expect_error(WV_ERR_IO, [] { wv::Model::load("/nonexistent/wv-model", cpu()); });
    EXPECT_NE(std::string(e.what()).find("/nonexistent/wv-model"), std::string::npos);
    EXPECT_STREQ(e.status_name(), "i/o error");
}

TEST(Load, BadDeviceIsAnInvalidArgument) {
    wv::LoadOptions o;
    o.device = "tpu:7";
    expect_error(WV_ERR_INVALID_ARGUMENT, [&] { wv::Model::load(model_dir(), o); });
}

TEST(Load, BrokenConfigIsAModelFormatError) {
    const auto dir = std::filesystem::temp_directory_path() / "wv-cpp-test-broken-model";
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "config.json") << "{ this is not json";
    expect_error(WV_ERR_MODEL_FORMAT, [&] { wv::Model::load(dir.string(), cpu()); });
    std::filesystem::remove_all(dir);
}

TEST(Load, NulInPathIsAnInvalidArgument) {
    expect_error(WV_ERR_INVALID_ARGUMENT,
                 [] { wv::Model::load(std::string_view("models\0x", 8), cpu()); });
}

TEST(Load, ProgressReportsAndCanAbort) {
    std::vector<float> seen;
    wv::LoadOptions o = cpu();
    o.progress = [&](float f) {
        seen.push_back(f);
        return true;
    };
    wv::Model m = wv::Model::load(model_dir(), o);
    ASSERT_FALSE(seen.empty());
    EXPECT_FLOAT_EQ(seen.back(), 1.0f);

    o.progress = [](float) { return false; };
    expect_error(WV_ERR_CANCELLED, [&] { wv::Model::load(model_dir(), o); });

    o.progress = [](float) -> bool { throw std::runtime_error("from progress"); };
    EXPECT_THROW(wv::Model::load(model_dir(), o), std::runtime_error);
}

TEST(Load, Info) {
    const wv::ModelInfo info = model().info();
    EXPECT_EQ(info.context_length, 512u);
    EXPECT_EQ(info.vocab_size, 32000u);
    EXPECT_EQ(info.quant_bits, 4u);
    EXPECT_EQ(info.bos_token, 1);
    EXPECT_EQ(info.device, "cpu");
    EXPECT_FALSE(info.device_description.empty());
}

// Ownership ----------------------------------------------------------------------------------

static_assert(!std::is_copy_constructible_v<wv::Model> && !std::is_copy_assignable_v<wv::Model>);
static_assert(!std::is_copy_constructible_v<wv::Session>);
static_assert(!std::is_copy_constructible_v<wv::Stream>);
static_assert(std::is_nothrow_move_constructible_v<wv::Model> &&
              std::is_nothrow_move_assignable_v<wv::Model>);
static_assert(std::is_nothrow_move_constructible_v<wv::Session> &&
              std::is_nothrow_move_assignable_v<wv::Session>);
static_assert(std::is_nothrow_move_constructible_v<wv::Stream> &&
              std::is_nothrow_move_assignable_v<wv::Stream>);

TEST(Ownership, MovedFromHandlesThrowInsteadOfCrashing) {
    wv::Session a(model());
    wv::Session b = std::move(a);
    EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): that is the point
    EXPECT_TRUE(b);
    expect_error(WV_ERR_INVALID_ARGUMENT, [&] { a.generate("x"); });
    expect_error(WV_ERR_INVALID_ARGUMENT, [&] { wv::Model().info(); });
    a.cancel();  // a no-op, not a crash
}

TEST(Ownership, SessionOutlivesItsModel) {
    wv::Session s;
    {
        wv::Model m = wv::Model::load(model_dir(), cpu());
        s = m.new_session();
    }
    EXPECT_TRUE(starts_with(s.generate(kPrompt, wv::GenerateOptions::greedy(6)), " the heavens"));
}

// Generation ---------------------------------------------------------------------------------

TEST(Generate, GreedyWithALambdaPerToken) {
    wv::Session s(model());
    std::string text;
    std::vector<int32_t> ids;
    s.generate(kPrompt, wv::GenerateOptions::greedy(12), [&](wv::Token t) {
        ids.push_back(t.id);
        text.append(t.text);
    });
    EXPECT_TRUE(starts_with(text, kGreedy)) << text;
    EXPECT_EQ(ids.size(), 12u);
    // 6 prompt tokens (BOS included) + 12 generated.
    EXPECT_EQ(s.token_count(), 18u);
    // Greedy is deterministic; the other callback shapes and the string overload agree.
    wv::Session t(model());
    std::string again;
    t.generate(kPrompt, wv::GenerateOptions::greedy(12),
               [&](int32_t, std::string_view piece) { again.append(piece); });
    EXPECT_EQ(again, text);
    wv::Session u(model());
    EXPECT_EQ(u.generate(kPrompt, wv::GenerateOptions::greedy(12)), text);
}

TEST(Generate, CallbackWithoutOptions) {
    wv::Session s(model());
    int calls = 0;
    s.generate(kPrompt, [&](std::string_view) { return ++calls < 2; });
    EXPECT_EQ(calls, 2);
    s.chat("Who made the heaven?", [&](const wv::Token &) { return false; });
}

TEST(Generate, ReturningFalseStops) {
    wv::Session s(model());
    int calls = 0;
    s.generate(kPrompt, wv::GenerateOptions::greedy(50), [&](std::string_view) {
        return ++calls < 3;
    });
    EXPECT_EQ(calls, 3);
}

TEST(Generate, AnExceptionFromTheCallbackPropagates) {
    wv::Session s(model());
    int calls = 0;
    EXPECT_THROW(s.generate(kPrompt, wv::GenerateOptions::greedy(50),
                            [&](std::string_view) {
                                if (++calls == 2) throw std::logic_error("from the callback");
                            }),
                 std::logic_error);
    EXPECT_EQ(calls, 2);
    // The session is not left busy.
    EXPECT_FALSE(s.generate(" and", wv::GenerateOptions::greedy(3)).empty());
}

TEST(Generate, ChatAndStopStrings) {
    wv::Session s(model());
    const std::string reply = s.chat("Who made the heaven?", wv::GenerateOptions::greedy(24));
    EXPECT_FALSE(reply.empty());
    EXPECT_GT(s.token_count(), 24u);

    wv::Session t(model());
    wv::GenerateOptions o = wv::GenerateOptions::greedy(40);
    o.stop = {"and"};
    const std::string text = t.generate(kPrompt, o);
    EXPECT_EQ(text, " the heavens, ");
}

TEST(Generate, DefaultsAreTheModelCard) {
    const wv::GenerateOptions o;
    EXPECT_EQ(o.max_tokens, 512u);
    EXPECT_FLOAT_EQ(o.temperature, 0.7f);
    EXPECT_EQ(o.top_k, 40u);
    EXPECT_EQ(o.seed, wv::seed_random);
    wv::Session s(model());
    wv::GenerateOptions seeded;
    seeded.seed = 42;
    seeded.max_tokens = 8;
    const std::string a = s.generate(kPrompt, seeded);
    s.reset();
    EXPECT_EQ(s.generate(kPrompt, seeded), a);  // a fixed seed is reproducible
}

TEST(Generate, NulInPromptIsAnInvalidArgument) {
    wv::Session s(model());
    expect_error(WV_ERR_INVALID_ARGUMENT, [&] { s.generate(std::string_view("a\0b", 3)); });
}

TEST(Generate, ContextFull) {
    wv::SessionOptions so;
    so.context_length = 16;
    wv::Session s(model(), so);
    int tokens = 0;
    expect_error(WV_ERR_CONTEXT_FULL, [&] {
        s.generate(kPrompt, wv::GenerateOptions::greedy(0), [&](std::string_view) { ++tokens; });
    });
    EXPECT_GT(tokens, 0);
    EXPECT_EQ(s.context_length(), 16u);
}

// Cancellation -------------------------------------------------------------------------------

TEST(Cancel, FromTheCallbackMidStream) {
    wv::Session s(model());
    int calls = 0;
    expect_error(WV_ERR_CANCELLED, [&] {
        s.generate(kPrompt, wv::GenerateOptions::greedy(0), [&](std::string_view) {
            if (++calls == 3) s.cancel();
        });
    });
    EXPECT_EQ(calls, 3);
    EXPECT_EQ(s.token_count(), 6u + 3u);  // the tokens generated before the cancel stay
    s.truncate(6);
    EXPECT_TRUE(starts_with(s.generate("", wv::GenerateOptions::greedy(6)), " the heavens"));
}

TEST(Cancel, FromAnotherThreadMidStream) {
    wv::Session s(model());
    std::atomic<int> calls{0};
    std::thread canceller([&] {
        while (calls.load() < 5) std::this_thread::sleep_for(1ms);
        s.cancel();
    });
    expect_error(WV_ERR_CANCELLED, [&] {
        s.generate(kPrompt, wv::GenerateOptions::greedy(0), [&](std::string_view) { ++calls; });
    });
    canceller.join();
    EXPECT_GE(calls.load(), 5);
    EXPECT_LT(calls.load(), 400);
}

// The pull-style stream ----------------------------------------------------------------------

TEST(Stream, FrameLoopPollsWithoutBlocking) {
    wv::Session s(model());
    wv::Stream stream = s.stream(kPrompt, wv::GenerateOptions::greedy(12));
    std::string text;
    int tokens = 0, frames = 0, empty_frames = 0;
    auto slowest = std::chrono::steady_clock::duration::zero();
    while (!stream.done()) {
        ASSERT_LT(++frames, 100000);
        const auto t0 = std::chrono::steady_clock::now();
        int got = 0;
        while (auto t = stream.next()) {
            text.append(t->text);
            ++tokens;
            ++got;
        }
        if (got == 0 && !stream.done()) ++empty_frames;
        slowest = std::max(slowest, std::chrono::steady_clock::now() - t0);
        std::this_thread::sleep_for(1ms);  // the rest of the frame
    }
    EXPECT_TRUE(starts_with(text, kGreedy)) << text;
    EXPECT_EQ(tokens, 12);
    EXPECT_GT(empty_frames, 0);           // polls came back empty instead of waiting
    EXPECT_LT(slowest, 250ms);            // and no poll waited for the model
    EXPECT_FALSE(stream.next());          // the end is sticky
    EXPECT_EQ(s.token_count(), 18u);      // the session is free again
}

TEST(Stream, SameTextAsTheCallback) {
    wv::Session a(model()), b(model());
    const std::string want = a.chat("Who made the heaven?", wv::GenerateOptions::greedy(16));
    std::string got;
    wv::Stream stream = b.stream_chat("Who made the heaven?", wv::GenerateOptions::greedy(16));
    for (const wv::Token &t : stream) got.append(t.text);  // blocking range-for
    EXPECT_EQ(got, want);
    EXPECT_TRUE(stream.done());
}

TEST(Stream, CancelMidStream) {
    wv::Session s(model());
    wv::Stream stream = s.stream(kPrompt, wv::GenerateOptions::greedy(0));
    int tokens = 0;
    expect_error(WV_ERR_CANCELLED, [&] {
        while (auto t = stream.next(-1ms)) {
            if (++tokens == 3) stream.cancel();
        }
    });
    EXPECT_GE(tokens, 3);
    EXPECT_TRUE(stream.done());
    EXPECT_NO_THROW(s.generate(" and", wv::GenerateOptions::greedy(2)));
}

TEST(Stream, SessionCancelEndsTheStream) {
    wv::Session s(model());
    wv::Stream stream = s.stream(kPrompt, wv::GenerateOptions::greedy(0));
    ASSERT_TRUE(stream.wait());
    s.cancel();
    expect_error(WV_ERR_CANCELLED, [&] {
        while (stream.wait()) {
        }
    });
}

TEST(Stream, BusyWhileOpenAndFreeOnDestruction) {
    wv::Session s(model());
    {
        wv::Stream stream = s.stream(kPrompt, wv::GenerateOptions::greedy(0));
        ASSERT_TRUE(stream.wait());
        expect_error(WV_ERR_BUSY, [&] { s.generate("x", wv::GenerateOptions::greedy(1)); });
        expect_error(WV_ERR_BUSY, [&] { s.stream("x"); });
    }  // destroyed mid-generation: cancelled, joined, session released
    EXPECT_GT(s.token_count(), 6u);
    EXPECT_NO_THROW(s.generate(" and", wv::GenerateOptions::greedy(2)));
}

// Two sessions on one model, used at once ----------------------------------------------------

TEST(Sessions, TwoOnOneModelAtOnce) {
    const std::string want = [] {
        wv::Session s(model());
        return s.generate(kPrompt, wv::GenerateOptions::greedy(24));
    }();
    std::string a, b;
    std::atomic<int> in_flight{0}, overlap{0};
    auto run = [&](std::string &out, bool use_stream) {
        wv::Session s(model());
        auto on_token = [&](std::string_view t) {
            out.append(t);
            if (in_flight.load() == 2) overlap.fetch_add(1);
        };
        ++in_flight;
        if (use_stream) {
            wv::Stream st = s.stream(kPrompt, wv::GenerateOptions::greedy(24));
            for (const wv::Token &t : st) on_token(t.text);
        } else {
            s.generate(kPrompt, wv::GenerateOptions::greedy(24), on_token);
        }
        --in_flight;
    };
    std::thread ta(run, std::ref(a), false);
    std::thread tb(run, std::ref(b), true);
    ta.join();
    tb.join();
    EXPECT_EQ(a, want);
    EXPECT_EQ(b, want);
    EXPECT_GT(overlap.load(), 0) << "the two generations did not run at the same time";
}

TEST(Sessions, ASecondCallOnABusySessionThrowsBusy) {
    wv::Session s(model());
    std::atomic<bool> started{false}, checked{false};
    std::thread other([&] {
        while (!started.load()) std::this_thread::sleep_for(1ms);
        expect_error(WV_ERR_BUSY, [&] { s.generate("x", wv::GenerateOptions::greedy(1)); });
        checked = true;
    });
    s.generate(kPrompt, wv::GenerateOptions::greedy(0), [&](std::string_view) {
        started = true;
        return !checked.load();
    });
    other.join();
}

// Tokens and state ---------------------------------------------------------------------------

TEST(Tokens, RoundTrip) {
    const std::vector<int32_t> ids = model().tokenize(kPrompt);
    EXPECT_EQ(ids, (std::vector<int32_t>{1, 512, 278, 6763, 4177, 2825}));
    EXPECT_EQ(model().tokenize(kPrompt, false).size(), 5u);
    EXPECT_EQ(model().detokenize(ids), kPrompt);
    EXPECT_EQ(model().token_to_piece(2), "</s>");
    expect_error(WV_ERR_INVALID_ARGUMENT, [] { model().token_to_piece(1 << 30); });
}

TEST(State, SaveAndRestore) {
    wv::Session s(model());
    s.generate(kPrompt, wv::GenerateOptions::greedy(4));
    const std::vector<uint8_t> state = s.save_state();
    const std::vector<int32_t> tokens = s.tokens();
    const std::string next = s.generate("", wv::GenerateOptions::greedy(6));
    wv::Session t(model());
    t.restore_state(state);
    EXPECT_EQ(t.tokens(), tokens);
    EXPECT_EQ(t.generate("", wv::GenerateOptions::greedy(6)), next);
    expect_error(WV_ERR_MODEL_FORMAT, [&] { t.restore_state(std::vector<uint8_t>(8, 0)); });
}

TEST(Log, CallbackReceivesMessages) {
    std::atomic<int> messages{0};
    wv::set_log_callback([&](int32_t, std::string_view) { ++messages; }, WV_LOG_DEBUG);
    wv::Model m = wv::Model::load(model_dir(), cpu());
    wv::set_log_callback(nullptr);
    EXPECT_GT(messages.load(), 0);
}

}  // namespace
