// A chat turn with a lambda per token: wv_chat ARGS: [MODEL_DIR] [MESSAGE]
#include <wv.hpp>

#include <cstdio>
#include <iostream>

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "models/kjv-tiny";
    const char *message = argc > 2 ? argv[2] : "Who made the heaven and the earth?";
    try {
        wv::Model model = wv::Model::load(dir);
        wv::Session session(model);

        wv::GenerateOptions opts = wv::GenerateOptions::greedy(48);
        size_t tokens = 0;
        session.chat(message, opts, [&](wv::Token token) {
            std::cout << token.text << std::flush;
            ++tokens;
            return true;  // false would stop here
        });
        std::cout << "\n[" << tokens << " tokens, " << session.token_count()
                  << " in the conversation]\n";
    } catch (const wv::Error &e) {
        std::fprintf(stderr, "error (%s): %s\n", e.status_name(), e.what());
        return 1;
    }
    return 0;
}
