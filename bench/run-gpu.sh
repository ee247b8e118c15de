#!/usr/bin/env bash
# Every GPU measurement of docs/performance.md in one go: cold start (RUNS fresh processes per
# variant), launch overhead, and the GPU load test. Everything lands in OUT_DIR; the tables for
# docs/performance.md are printed at the end.
#
#   bench/run-gpu.sh BUILD_DIR OUT_DIR
#
# BUILD_DIR was configured with -DKILN_BUILD_BENCH=ON and built (kiln_bench_coldstart,
# kiln_bench_launch, kiln_load_test, and the bundle bench/ops-h100.kiln that comes with
# kiln_bench_coldstart) on the build machine: this machine needs only the NVIDIA driver. RUNS
# (default 7) sets the cold-start processes per variant. Each stage runs even if an earlier one
# failed; the exit status says whether all passed.
set -uo pipefail

if [ $# -ne 2 ]; then
  echo "usage: bench/run-gpu.sh BUILD_DIR OUT_DIR" >&2
  exit 2
fi
build=$(realpath "$1")
out=$(realpath -m "$2")
runs=${RUNS:-7}
mkdir -p "$out" || exit 1

bundle="$build/bench/ops-h100.kiln"
split_bundle="$build/bench/ops-h100-split.kiln"
lz4_bundle="$build/bench/ops-h100-lz4.kiln"
split_lz4_bundle="$build/bench/ops-h100-split-lz4.kiln"
for file in "$build/bin/kiln_bench_coldstart" "$build/bin/kiln_bench_launch" "$build/bin/kiln_bench_phases" \
  "$build/bin/kiln_load_test" "$bundle" "$split_bundle" "$lz4_bundle" "$split_lz4_bundle"; do
  [ -e "$file" ] || { echo "run-gpu: $file is missing: build BUILD_DIR with -DKILN_BUILD_BENCH=ON first" >&2; exit 1; }
done

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  if command -v nvidia-smi > /dev/null; then
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
  else
    echo "gpu: (no nvidia-smi)"
  fi
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
  echo "os: $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
  echo "CUDA_MODULE_LOADING: ${CUDA_MODULE_LOADING:-unset, the driver default}"
} > "$out/machine.txt"
cat "$out/machine.txt"

failed=()
# stage NAME COMMAND...: runs it with stdout to OUT_DIR/NAME.txt and stderr to OUT_DIR/NAME.log.
stage() {
  local name=$1; shift
  echo "== $name: $*"
  local start=$SECONDS
  "$@" > "$out/$name.txt" 2> "$out/$name.log"
  local status=$?
  echo "   exit $status after $((SECONDS - start)) s"
  if [ $status -ne 0 ]; then
    failed+=("$name (exit $status)")
    tail -n 20 "$out/$name.log"
  fi
}

stage coldstart "$build/bin/kiln_bench_coldstart" --bundle "$bundle" --split-bundle "$split_bundle" \
  --lz4-bundle "$lz4_bundle" --split-lz4-bundle "$split_lz4_bundle" --runs "$runs" \
  --out "$out"
# The step-by-step breakdown of the cold start (kiln_bench_phases), RUNS fresh processes per mode.
# The kiln modes run as in kiln_bench_coldstart: only kiln's own cache can help them.
phases() (
  export CUDA_CACHE_DISABLE=1
  warm_cache=$(mktemp -d)
  KILN_FORCE_JIT=1 KILN_CACHE_DIR="$warm_cache" "$build/bin/kiln_bench_phases" kiln-all "$bundle" > /dev/null || return 1
  for _ in $(seq "$runs"); do
    for mode in raw raw-all; do "$build/bin/kiln_bench_phases" $mode "$bundle" || return 1; done
    for mode in kiln kiln-all; do
      KILN_CACHE_DIR=$(mktemp -d) "$build/bin/kiln_bench_phases" $mode "$bundle" | sed 's/^/aot-/' || return 1
      KILN_FORCE_JIT=1 KILN_CACHE_DIR="$warm_cache" "$build/bin/kiln_bench_phases" $mode "$bundle" | sed 's/^/warm-/' || return 1
    done
    for mode in kiln kiln-all; do
      KILN_CACHE_DIR=$(mktemp -d) "$build/bin/kiln_bench_phases" $mode "$split_bundle" | sed 's/^/aot-split-/' || return 1
    done
    KILN_FORCE_JIT=1 KILN_CACHE_DIR=$(mktemp -d) "$build/bin/kiln_bench_phases" kiln "$bundle" | sed 's/^/cold-/' || return 1
    "$build/bin/kiln_bench_phases" link-empty || return 1
  done | sort
)
stage phases phases
# Random interleaving runs the two sides' repetitions in a shuffled order, so that a drift of
# the machine over the run (clock, other load) falls on both alike.
stage launch "$build/bin/kiln_bench_launch" --benchmark_repetitions=20 --benchmark_min_time=0.5 \
  --benchmark_enable_random_interleaving=true \
  --benchmark_display_aggregates_only=true --benchmark_out="$out/launch.json" --benchmark_out_format=json
stage load "$build/bin/kiln_load_test" --gpu --report "$out/load-report.txt"

echo
echo "== results (for docs/performance.md)"
cat "$out/machine.txt"
echo
cat "$out/coldstart.md" 2>/dev/null
echo
grep -E '^launch' "$out/launch.txt"
echo
cat "$out/phases.txt"
echo
cat "$out/load-report.txt" 2>/dev/null

if [ ${#failed[@]} -ne 0 ]; then
  echo "run-gpu: failed: ${failed[*]} (logs in $out)" >&2
  exit 1
fi
