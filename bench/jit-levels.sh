#!/usr/bin/env bash
# The first JIT compile of one kernel at each optimization level, by the driver's linker and by
# nvJitLink: RUNS fresh processes of `kiln_bench_phases jit-one` per cell, the cells interleaved
# round by round, the driver's JIT cache off. Prints one line per process; summarize with
# bench/summarize-phases.py OUT_FILE.
#
#   bench/jit-levels.sh BUILD_DIR OUT_FILE [RUNS]
set -uo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bench/jit-levels.sh BUILD_DIR OUT_FILE [RUNS]" >&2
  exit 2
fi
build=$(realpath "$1"); out=$2; runs=${3:-7}
export CUDA_CACHE_DISABLE=1
phases=$build/bin/kiln_bench_phases; bundle=$build/bench/ops-h100.kiln
for _ in $(seq "$runs"); do
  for level in 4 3 2 1 0; do "$phases" jit-one "$bundle" driver "$level" | sed "s/^/driver-O$level-/"; done
  # nvJitLink takes -O0 and -O3 only (nvJitLinkCreate refuses -O1 and -O2).
  for level in 3 0; do "$phases" jit-one "$bundle" nvjitlink "$level" | sed "s/^/nvjitlink-O$level-/"; done
done > "$out"
