// The pull-style stream in a game's frame loop: generation runs on wv's worker thread while
// every frame polls for whatever tokens are ready (a zero timeout: the frame never waits), as a
// dialogue box would. Pressing "skip" is simulated by cancelling after `skip_after` frames.
//
//   wv_frame_loop ARGS: [MODEL_DIR] [PROMPT] [SKIP_AFTER_FRAMES]
#include <wv.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

int main(int argc, char **argv) {
    using clock = std::chrono::steady_clock;
    const char *dir = argc > 1 ? argv[1] : "models/kjv-tiny";
    const char *prompt = argc > 2 ? argv[2] : "In the beginning God created";
    const long skip_after = argc > 3 ? std::atol(argv[3]) : -1;

    try {
        wv::Model model = wv::Model::load(dir);
        wv::Session npc(model);
        wv::Stream line = npc.stream(prompt, wv::GenerateOptions::greedy(40));

        std::string dialogue;
        long frame = 0;
        auto slowest_poll = clock::duration::zero();
        while (line) {
            const auto frame_start = clock::now();
            // --- game update: input, physics, ... ---
            if (frame == skip_after) line.cancel();  // the player pressed "skip"

            // --- poll the NPC's line: take what is ready, never wait ---
            try {
                const auto t0 = clock::now();
                while (std::optional<wv::Token> token = line.next()) {
                    dialogue.append(token->text);
                }
                slowest_poll = std::max(slowest_poll, clock::now() - t0);
                if (line.done()) line = wv::Stream();  // finished: free it
            } catch (const wv::Error &e) {
                if (e.code() != WV_ERR_CANCELLED) throw;
                dialogue += " [skipped]";
                line = wv::Stream();
            }

            // --- render ---
            std::printf("\rframe %4ld: %s", frame, dialogue.c_str());
            std::fflush(stdout);
            ++frame;
            std::this_thread::sleep_until(frame_start + std::chrono::milliseconds(16));
        }
        std::printf("\n%ld frames; slowest poll %.3f ms; %zu tokens in the session\n", frame,
                    std::chrono::duration<double, std::milli>(slowest_poll).count(),
                    npc.token_count());
    } catch (const wv::Error &e) {
        std::fprintf(stderr, "\nerror (%s): %s\n", e.status_name(), e.what());
        return 1;
    }
    return 0;
}
