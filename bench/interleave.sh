#!/usr/bin/env bash
# Before/after on a GPU: the cold-start modes of kiln_bench_phases for two builds, each mode of
# each build run in turn, round after round, so that the machine's drift falls on both alike.
#
#   bench/interleave.sh OUT_FILE RUNS BEFORE_DIR AFTER_DIR
#
# Each DIR holds bin/kiln_bench_phases, bin/kiln, lib/libkiln.so* and bench/ops-h100*.kiln (a
# build directory made with -DKILN_BUILD_BENCH=ON, or a copy of just those). Each build fills its
# own warm and prewarmed caches, with its own kiln: two builds may key the cache differently. The
# lz4 bundles are measured where a DIR has them. Lines are "<dir name>-<variant>-<mode>
# step=seconds ..."; summarize with bench/summarize-phases.py OUT_FILE.
set -uo pipefail
if [ $# -ne 4 ]; then
  echo "usage: bench/interleave.sh OUT_FILE RUNS BEFORE_DIR AFTER_DIR" >&2
  exit 2
fi
out=$1; runs=$2; before=$(realpath "$3"); after=$(realpath "$4")
export CUDA_CACHE_DISABLE=1  # only kiln's own cache may help the kiln modes
declare -A warm prewarmed
for build in "$before" "$after"; do
  warm[$build]=$(mktemp -d); prewarmed[$build]=$(mktemp -d)
  KILN_FORCE_JIT=1 KILN_CACHE_DIR=${warm[$build]} "$build/bin/kiln_bench_phases" kiln "$build/bench/ops-h100.kiln" > /dev/null || exit 1
  KILN_FORCE_JIT=1 KILN_CACHE_DIR=${prewarmed[$build]} "$build/bin/kiln" prewarm "$build/bench/ops-h100.kiln" > /dev/null || exit 1
done
for _ in $(seq "$runs"); do
  for build in "$before" "$after"; do
    name=$(basename "$build"); phases=$build/bin/kiln_bench_phases
    bundle=$build/bench/ops-h100.kiln; split=$build/bench/ops-h100-split.kiln
    "$phases" raw "$bundle" | sed "s/^/$name-/"
    "$phases" raw-split "$split" | sed "s/^/$name-/"
    "$phases" raw-all "$bundle" | sed "s/^/$name-/"
    KILN_CACHE_DIR=$(mktemp -d) "$phases" kiln "$split" | sed "s/^/$name-aot-split-/"
    KILN_CACHE_DIR=$(mktemp -d) "$phases" kiln "$bundle" | sed "s/^/$name-aot-/"
    KILN_CACHE_DIR=$(mktemp -d) "$phases" kiln-all "$bundle" | sed "s/^/$name-aot-/"
    KILN_FORCE_JIT=1 KILN_CACHE_DIR=${warm[$build]} "$phases" kiln "$bundle" | sed "s/^/$name-warm-/"
    KILN_FORCE_JIT=1 KILN_CACHE_DIR=${prewarmed[$build]} "$phases" kiln-all "$bundle" | sed "s/^/$name-prewarmed-/"
    if [ -e "$build/bench/ops-h100-lz4.kiln" ]; then
      KILN_CACHE_DIR=$(mktemp -d) "$phases" kiln "$build/bench/ops-h100-split-lz4.kiln" | sed "s/^/$name-aot-split-lz4-/"
      KILN_CACHE_DIR=$(mktemp -d) "$phases" kiln "$build/bench/ops-h100-lz4.kiln" | sed "s/^/$name-aot-lz4-/"
      KILN_CACHE_DIR=$(mktemp -d) "$phases" kiln-all "$build/bench/ops-h100-lz4.kiln" | sed "s/^/$name-aot-lz4-/"
    fi
  done
done > "$out"
