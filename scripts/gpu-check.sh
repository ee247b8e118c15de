#!/usr/bin/env bash
# Runs on a GPU machine over build trees made on the development machine (carried along):
# the gpu-labelled tests, the demo in its three configurations, doctor and prewarm.
# Usage: scripts/gpu-check.sh OUT_DIR [BUILD_DIR] [A100_BUILD_DIR]
set -uo pipefail
out=${1:?output directory}
build=${2:-build-gpu}
build_a100=${3:-build-gpu-a100}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p "$out"

# Build trees record absolute paths of the machine that configured them (/work/main).
if [ "$root" != /work/main ] && [ ! -e /work/main ]; then mkdir -p /work && ln -s "$root" /work/main; fi

{
  nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv
  for binary in "$build"/bin/kiln "$build"/bin/kiln_demo "$build"/lib/libkiln.so; do
    echo "ldd $binary:"; ldd "$binary" | grep -E "not found|zstd|lz4|xxhash|cuda|nvrtc" || true
  done
} 2>&1 | tee "$out/environment.txt"

export KILN_CACHE_DIR=$(mktemp -d)/kiln-cache
echo "== kiln doctor" | tee "$out/doctor.txt"
"$build"/bin/kiln doctor 2>&1 | tee -a "$out/doctor.txt"

echo "== gpu tests" | tee "$out/gpu-tests.txt"
ctest --test-dir "$build" -L gpu --output-on-failure -j 4 2>&1 | tee -a "$out/gpu-tests.txt"

demo() {  # demo TITLE ENV... -- BINARY
  echo "== demo: $1" | tee -a "$out/demo.txt"; shift
  env "$@" 2>&1 | tee -a "$out/demo.txt"
  echo "exit ${PIPESTATUS[0]}" | tee -a "$out/demo.txt"
}
: >"$out/demo.txt"
fresh=$(mktemp -d)
demo "KILN_AOT_DEVLIST=h100 (every op aot-exact)" KILN_CACHE_DIR="$fresh/h100" "$build"/bin/kiln_demo
demo "KILN_AOT_DEVLIST=a100, first run (jit-ptx)" KILN_CACHE_DIR="$fresh/a100" "$build_a100"/bin/kiln_demo
demo "KILN_AOT_DEVLIST=a100, second run (cache-hit)" KILN_CACHE_DIR="$fresh/a100" "$build_a100"/bin/kiln_demo
demo "KILN_AOT_DEVLIST=h100 with KILN_FORCE_JIT=1" KILN_CACHE_DIR="$fresh/force" KILN_FORCE_JIT=1 "$build"/bin/kiln_demo

echo "== prewarm + cache" | tee "$out/prewarm.txt"
bundle=$(ls "$build_a100"/examples/ops/kiln/*.kiln | head -1)
for round in first second; do
  echo "-- prewarm, $round process" >>"$out/prewarm.txt"
  KILN_CACHE_DIR="$fresh/prewarm" "$build"/bin/kiln prewarm "$bundle" >>"$out/prewarm.txt" 2>&1
  tail -1 "$out/prewarm.txt"
done
KILN_CACHE_DIR="$fresh/prewarm" "$build"/bin/kiln cache stats 2>&1 | tee -a "$out/prewarm.txt"
KILN_CACHE_DIR="$fresh/prewarm" "$build"/bin/kiln doctor "$bundle" 2>&1 | tee -a "$out/prewarm.txt"

echo "== summary"
grep -E "tests passed|tests failed|Passed|Failed|Skipped|SKIPPED" "$out/gpu-tests.txt" | tail -25
grep -E "^== demo|^exit|FAIL" "$out/demo.txt"
