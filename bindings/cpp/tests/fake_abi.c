/* A stand-in for a libwv of another ABI major: preloaded (LD_PRELOAD) over the real library, its
 * wv_abi_version() says 2.0, which the binding must refuse. */
#include <stdint.h>

uint32_t wv_abi_version(void) { return 2u << 16; }
