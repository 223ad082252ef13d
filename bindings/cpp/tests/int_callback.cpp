// Must not compile: a token callback returning int (in C, 0 means "go on"; in wv.hpp, true
// does), which wv.hpp refuses rather than reading 0 as "stop". Built by a CTest test that
// expects the static_assert's message.
#include <wv.hpp>

void f(wv::Session &s) {
    s.generate("x", wv::GenerateOptions(), [](std::string_view) { return 0; });
}
