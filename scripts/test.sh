#!/usr/bin/env bash
# The test command: set up a fresh Debian machine, build, and run every test that this
# machine can run (GPU tests report themselves skipped without a GPU), then the same unit
# and CLI tests under AddressSanitizer + UndefinedBehaviorSanitizer, then the fuzzers.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

bash scripts/setup-debian.sh

echo "== build and test"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs" -LE fuzz

echo "== unit and CLI tests under AddressSanitizer and UndefinedBehaviorSanitizer"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE=address,undefined -DKILN_BUILD_EXAMPLES=OFF
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j "$jobs" -L "unit|cli"

echo "== fuzzers (libFuzzer, ${KILN_FUZZ_SECONDS:-60} s each)"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_BUILD_FUZZERS=ON \
  -DKILN_BUILD_EXAMPLES=OFF -DKILN_FUZZ_SECONDS="${KILN_FUZZ_SECONDS:-60}"
cmake --build build-fuzz -j "$jobs" --target kiln_fuzzers
ctest --test-dir build-fuzz --output-on-failure -L fuzz
