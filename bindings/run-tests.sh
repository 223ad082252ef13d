#!/usr/bin/env bash
# Runs the tests of the C++, Go and Node bindings against libwv and the bundled demo model
# (models/kjv-tiny, on the CPU). Called by .ci/run; runs on its own too:
#
#   bindings/run-tests.sh              # all three
#   bindings/run-tests.sh go node      # some of them (cpp, go, node)
#
# libwv: $WV_LIBRARY_PATH if set (the library or its folder), else `cargo build --release`
# (a no-op when it is up to date; cargo waits for another build's lock by itself).
#
# Needs: cmake >= 3.21, a C and C++17 compiler, GoogleTest (Debian: libgtest-dev), pkg-config,
# Go >= 1.24 with cgo, Node >= 18.18 with npm (the npm registry, for koffi and typescript).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
JOBS="$(nproc 2>/dev/null || echo 2)"
LANGS=("$@")
[ ${#LANGS[@]} -eq 0 ] && LANGS=(cpp go node)
START=$SECONDS

section() { printf '\n== bindings: %s\n' "$*"; }
die() { printf 'bindings/run-tests.sh: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 is not installed ($2)"; }
wants() { local l; for l in "${LANGS[@]}"; do [ "$l" = "$1" ] && return 0; done; return 1; }

section "libwv"
if [ -n "${WV_LIBRARY_PATH:-}" ]; then
  echo "WV_LIBRARY_PATH=$WV_LIBRARY_PATH"
else
  need cargo "https://rustup.rs"
  cargo build --release --locked --lib
  WV_LIBRARY_PATH="${CARGO_TARGET_DIR:-$ROOT/target}/release/libwv.so"
fi
[ -d "$WV_LIBRARY_PATH" ] && WV_LIBRARY_PATH="$WV_LIBRARY_PATH/libwv.so"
[ -f "$WV_LIBRARY_PATH" ] || die "no libwv at $WV_LIBRARY_PATH"
WV_LIBRARY_PATH="$(cd "$(dirname "$WV_LIBRARY_PATH")" && pwd)/$(basename "$WV_LIBRARY_PATH")"
export WV_LIBRARY_PATH
export WV_TEST_MODEL="${WV_TEST_MODEL:-$ROOT/models/kjv-tiny}"
echo "libwv: $WV_LIBRARY_PATH"
echo "model: $WV_TEST_MODEL"

if wants cpp; then
  section "C++ (CMake, GoogleTest, CTest)"
  # What the C++ tests need, installed like .ci/run installs the compilers (as root, with apt).
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -z "${WV_NO_APT:-}" ]; then
    missing=()
    command -v cmake >/dev/null || missing+=(cmake)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    command -v c++ >/dev/null || missing+=(g++)
    [ -f /usr/lib/x86_64-linux-gnu/cmake/GTest/GTestConfig.cmake ] || [ -f /usr/lib/aarch64-linux-gnu/cmake/GTest/GTestConfig.cmake ] \
      || [ -f /usr/src/googletest/CMakeLists.txt ] || missing+=(libgtest-dev)
    if [ ${#missing[@]} -gt 0 ]; then
      echo "apt-get install ${missing[*]}"
      apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
  fi
  need cmake "apt-get install cmake"
  need pkg-config "apt-get install pkg-config"
  cmake --version | head -1
  BUILD="$ROOT/bindings/cpp/build"
  cmake -S bindings/cpp -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DWV_LIBRARY_PATH="$WV_LIBRARY_PATH" -DWV_TEST_MODEL="$WV_TEST_MODEL"
  cmake --build "$BUILD" -j "$JOBS"
  ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS"
fi

if wants go; then
  section "Go (go vet, go test -race)"
  need go "Go >= 1.24 from https://go.dev/dl"
  go version
  # The binding opens libwv at run time (WV_LIBRARY_PATH), so cgo needs only wv.h: the module
  # carries a copy (checked against include/wv.h by the tests); we build against include/.
  export CGO_ENABLED=1 GOTOOLCHAIN=local
  export CGO_CFLAGS="-I$ROOT/include ${CGO_CFLAGS:--O2 -g}"
  (cd bindings/go && go vet ./... && go test -race -count=1 ./...)
fi

if wants node; then
  section "Node (npm ci, node --test)"
  need node "Node >= 18.18"
  need npm "npm"
  echo "node $(node --version), npm $(npm --version)"
  (cd bindings/node && npm ci --no-audit --no-fund --loglevel=error && node --test --test-reporter=spec test/)
fi

section "done in $((SECONDS - START)) s"
