// Run with tests/fake_abi.c preloaded: libwv then reports ABI 2.0, which wv.hpp (built for 1.x)
// must refuse before touching anything else.
#include <wv.hpp>

#include <gtest/gtest.h>

#include <string>

TEST(AbiMismatch, LoadRefusesTheLibrary) {
    ASSERT_EQ(wv::abi_version(), 2u << 16) << "run with the fake library preloaded";
    EXPECT_FALSE(wv::abi_compatible(wv::abi_version()));
    try {
        wv::Model::load(WV_TEST_MODEL);
        FAIL() << "an incompatible libwv was accepted";
    } catch (const wv::Error &e) {
        EXPECT_EQ(e.code(), WV_ERR_UNSUPPORTED);
        const std::string what = e.what();
        EXPECT_NE(what.find("ABI version 2.0"), std::string::npos) << what;
        EXPECT_NE(what.find("built for 1."), std::string::npos) << what;
    }
    EXPECT_THROW(wv::check_abi(), wv::Error);
}
