#!/usr/bin/env bash
# What prepare_all's background whole-image compiles cost and buy, on a GPU. Per round, for
# KILN_BACKGROUND_COMPILE=0 and =1 in turn: a JIT prepare_all into an empty cache (the first
# process on a machine; `all` is prepare_all, `exit` the process's life from its start, so the
# difference in exit - all between the two settings is what the process waited for at exit),
# then a second process's prepare_all from the cache the first left. Also the raw load of the
# six per-source cubins, for the ratio. Lines as kiln_bench_phases prints them (milliseconds);
# summarize with bench/summarize-phases.py OUT_FILE.
#
#   bench/background.sh BUILD_DIR OUT_FILE [RUNS]
set -uo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bench/background.sh BUILD_DIR OUT_FILE [RUNS]" >&2
  exit 2
fi
build=$(realpath "$1"); out=$2; runs=${3:-7}
export CUDA_CACHE_DISABLE=1  # only kiln's own cache may help
phases=$build/bin/kiln_bench_phases; bundle=$build/bench/ops-h100.kiln
now_us() { echo $(($(date +%s%N) / 1000)); }
for _ in $(seq "$runs"); do
  "$phases" raw-all "$bundle"
  for background in 0 1; do
    cache=$(mktemp -d)
    start=$(now_us)
    line=$(KILN_FORCE_JIT=1 KILN_CACHE_DIR=$cache KILN_BACKGROUND_COMPILE=$background "$phases" kiln-all "$bundle")
    end=$(now_us)
    echo "background$background-first-$line exit=$(awk "BEGIN { print ($end - $start) / 1000 }")"
    KILN_FORCE_JIT=1 KILN_CACHE_DIR=$cache KILN_BACKGROUND_COMPILE=$background "$phases" kiln-all "$bundle" |
      sed "s/^/background$background-next-/"
    rm -rf "$cache"
  done
done > "$out"
