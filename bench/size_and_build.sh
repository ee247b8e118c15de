#!/usr/bin/env bash
# Bundle size and build time of the example op library (examples/ops/kernels/*.cu): kiln against
# nvcc -fatbin with the same targets (sm_75 sm_80 sm_86 sm_89 sm_90 sm_100 sm_120 cubins +
# compute_120 PTX). Needs no GPU. Prints markdown tables; docs/performance.md holds the results.
#
#   bench/size_and_build.sh [KILN]      KILN: the kiln CLI (default build/bin/kiln)
#
# Environment: JOBS (parallel compiles, default 2), RUNS (rounds of timed builds, default 3),
# CUDA_HOME (default /usr/local/cuda), KEEP=DIR (keep the outputs and hyperfine's JSON in DIR).
#
# Sizes: nvcc builds one fatbin per .cu, so the tables give both the per-file comparison (kiln
# bundle of that file alone vs its fatbin) and the total (one kiln bundle of all files vs the sum
# of the fatbins). Build times (hyperfine): kiln cold (fresh KILN_CACHE_DIR, so an empty compile
# cache), kiln rebuild with nothing changed (a filled cache), nvcc over the files JOBS at a time
# (xargs -P) and one at a time.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
kiln=$(realpath "${1:-$repo/build/bin/kiln}")
cuda_home=${CUDA_HOME:-/usr/local/cuda}
nvcc="$cuda_home/bin/nvcc"
jobs=${JOBS:-2}
runs=${RUNS:-3}

for tool in "$kiln" "$nvcc"; do
  [ -x "$tool" ] || { echo "size_and_build: $tool not found or not executable" >&2; exit 1; }
done
command -v hyperfine >/dev/null || { echo "size_and_build: hyperfine is needed (apt-get install hyperfine)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "size_and_build: python3 is needed" >&2; exit 1; }

kernels_dir="$repo/examples/ops/kernels"
sources=("$kernels_dir"/*.cu)
archs=(75 80 86 89 90 100 120)
ptx_arch=120
devices=$(printf 'sm_%s,' "${archs[@]}"); devices=${devices%,}
gencode=()
for arch in "${archs[@]}"; do gencode+=(-gencode "arch=compute_$arch,code=sm_$arch"); done
gencode+=(-gencode "arch=compute_$ptx_arch,code=compute_$ptx_arch")

if [ -n "${KEEP:-}" ]; then
  work=$(realpath -m "$KEEP"); mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-size-build-XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work/nvcc-plain" "$work/nvcc-compressed" "$work/kiln-per-file"

# One nvcc command per file, the way a build system runs them: `nvcc_one OUT_DIR EXTRA... -- SRC`.
cat > "$work/nvcc_one.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
out_dir=\$1; shift
extra=()
while [ "\$1" != "--" ]; do extra+=("\$1"); shift; done
source=\$2
exec "$nvcc" -fatbin -std=c++17 ${gencode[*]} -I "$kernels_dir" "\${extra[@]}" "\$source" -o "\$out_dir/\$(basename "\$source" .cu).fatbin"
EOF
chmod +x "$work/nvcc_one.sh"
source_list="$work/sources.txt"
printf '%s\n' "${sources[@]}" > "$source_list"

kiln_build="$kiln build ${sources[*]} -I $kernels_dir --devices $devices --ptx compute_$ptx_arch -j $jobs"
nvcc_parallel="xargs -P $jobs -I SRC $work/nvcc_one.sh $work/nvcc-plain -- SRC < $source_list"
nvcc_sequential="xargs -P 1 -I SRC $work/nvcc_one.sh $work/nvcc-plain -- SRC < $source_list"

# The builds timed, each one hyperfine run per round, RUNS rounds. On a shared machine the
# background load drifts; interleaving the builds spreads the drift over all of them instead of
# handing it to whichever ran last. CPU time (user + system) is reported too: it moves less.
names=("kiln build, empty compile cache (-j $jobs)"
       "nvcc -fatbin, $jobs files at a time"
       "nvcc -fatbin, one file at a time"
       "kiln build, nothing changed (-j $jobs)")
commands=("KILN_CACHE_DIR=$work/cache-cold $kiln_build -o $work/ops.kiln"
          "$nvcc_parallel"
          "$nvcc_sequential"
          "KILN_CACHE_DIR=$work/cache-warm $kiln_build -o $work/ops.kiln")
prepares=("rm -rf $work/cache-cold" ":" ":" ":")
echo "== filling the compile cache the rebuilds use" >&2
KILN_CACHE_DIR="$work/cache-warm" $kiln_build -o "$work/ops.kiln" >&2
echo "$(cut -d' ' -f1-3 /proc/loadavg)" > "$work/load-before.txt"
for round in $(seq 1 "$runs"); do
  for index in "${!names[@]}"; do
    echo "== round $round/$runs: ${names[$index]}" >&2
    hyperfine --style basic --runs 1 --prepare "${prepares[$index]}" --export-json "$work/time-$index-$round.json" \
      -n "${names[$index]}" "${commands[$index]}" >&2
  done
done
echo "$(cut -d' ' -f1-3 /proc/loadavg)" > "$work/load-after.txt"

echo "== sizes" >&2
xargs -P "$jobs" -I SRC "$work/nvcc_one.sh" "$work/nvcc-compressed" -Xfatbin -compress-all -- SRC < "$source_list"
KILN_CACHE_DIR="$work/cache-warm" $kiln_build --compress none -o "$work/ops-uncompressed.kiln" >&2
for source in "${sources[@]}"; do
  # Each file on its own, for the per-file comparison; the compile cache makes these cheap.
  KILN_CACHE_DIR="$work/cache-warm" "$kiln" build "$source" -I "$kernels_dir" --devices "$devices" \
    --ptx "compute_$ptx_arch" -j "$jobs" -o "$work/kiln-per-file/$(basename "$source" .cu).kiln" >&2
done

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
nvcc_version=$("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')

python3 - "$work" "$jobs" "$runs" "$cpu" "$(nproc)" "$nvcc_version" "$devices" "$ptx_arch" "${sources[@]}" <<'EOF'
import glob, json, os, statistics, sys

work, jobs, runs, cpu, cores, nvcc_version, devices, ptx_arch = sys.argv[1:9]
sources = sys.argv[9:]
names = [os.path.basename(s)[:-3] for s in sources]
size = lambda path: os.path.getsize(path)
kib = lambda n: f"{n / 1024:,.0f} KiB"

print(f"Machine: {cpu}, {cores} cores, shared with other work; nvcc {nvcc_version}.")
print(f"Targets: {devices} cubins + compute_{ptx_arch} PTX; {len(sources)} source files (examples/ops/kernels).\n")

print("| file | kiln bundle | nvcc -fatbin | nvcc -fatbin -Xfatbin -compress-all | kiln / nvcc | kiln / nvcc -compress-all |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
totals = [0, 0, 0]
for name in names:
    row = [size(f"{work}/kiln-per-file/{name}.kiln"), size(f"{work}/nvcc-plain/{name}.fatbin"),
           size(f"{work}/nvcc-compressed/{name}.fatbin")]
    totals = [t + r for t, r in zip(totals, row)]
    print(f"| {name}.cu | {kib(row[0])} | {kib(row[1])} | {kib(row[2])} | {row[0] / row[1]:.2f} | {row[0] / row[2]:.2f} |")
print(f"| sum of per-file | {kib(totals[0])} | {kib(totals[1])} | {kib(totals[2])} | "
      f"{totals[0] / totals[1]:.2f} | {totals[0] / totals[2]:.2f} |")
whole = size(f"{work}/ops.kiln")
print(f"| **one kiln bundle of all files** vs sum of fatbins | **{kib(whole)}** | {kib(totals[1])} | {kib(totals[2])} | "
      f"**{whole / totals[1]:.2f}** | **{whole / totals[2]:.2f}** |")
print(f"\nThe same bundle with `--compress none`: {kib(size(f'{work}/ops-uncompressed.kiln'))} "
      "(identical images stored once, nothing compressed).\n")

print(f"Build times: {runs} interleaved rounds (load average {open(f'{work}/load-before.txt').read().strip()} "
      f"before, {open(f'{work}/load-after.txt').read().strip()} after).\n")
print(f"| build | wall, median | wall, min … max | CPU (user + sys), mean | wall × nvcc, {jobs} at a time |")
print("| --- | ---: | ---: | ---: | ---: |")
rows = []
for index in range(4):
    runs_of = [json.load(open(path))["results"][0] for path in sorted(glob.glob(f"{work}/time-{index}-*.json"))]
    walls = [r["mean"] for r in runs_of]
    rows.append((runs_of[0]["command"], statistics.median(walls), min(walls), max(walls),
                 statistics.mean(r["user"] + r["system"] for r in runs_of)))
nvcc_parallel = rows[1][1]
for name, median, low, high, cpu_seconds in rows:
    print(f"| {name} | {median:.1f} s | {low:.1f} … {high:.1f} s | {cpu_seconds:.1f} s | {median / nvcc_parallel:.2f} |")
EOF
