#!/usr/bin/env bash
# One CLI case per call: cli_tests.sh CASE KILN DATA_DIR SHARED_BUILD_CACHE. Each case asserts
# exit codes and output. Builds share one compile cache (content-addressed, so sharing is safe)
# to keep the suite fast; each case has its own run-time cache.
set -u
case_name=$1 kiln=$2 data=$3 shared_cache=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export KILN_CACHE_DIR=$work/cache
unset KILN_AOT_DEVLIST
failures=0

# expect CODE CMD...: runs CMD, keeps stdout/stderr in $out/$err, checks the exit code.
expect() {
  local want=$1; shift
  "$@" >"$work/out" 2>"$work/err"
  local got=$?
  out=$(cat "$work/out") err=$(cat "$work/err")
  if [ "$got" != "$want" ]; then
    echo "FAIL: '$*' exited $got, expected $want"; echo "stdout: $out"; echo "stderr: $err"; failures=$((failures + 1))
  fi
}
# contains TEXT HAYSTACK
contains() {
  if ! grep -qF -- "$1" <<<"$2"; then echo "FAIL: expected to find '$1' in:"; echo "$2"; failures=$((failures + 1)); fi
}
json() { python3 -c "import json,sys; d=json.load(open('$work/out')); $1"; }

build_ops() {  # build_ops OUT ARGS...
  local output=$1; shift
  KILN_CACHE_DIR=$shared_cache expect 0 "$kiln" build "$data/kernels.cu" -I "$data/include" -o "$output" -q "$@"
}

case $case_name in
devices_table)
  expect 0 "$kiln" devices
  contains "h100" "$out"; contains "sm_90" "$out"; contains "jetson-orin" "$out"; contains "sm_121" "$out"
  contains "v100" "$out"
  ;;
devices_json)
  expect 0 "$kiln" devices --json
  json "assert any(x['name']=='l4' and x['arch']=='sm_89' for x in d['devices']); assert [x for x in d['devices'] if x['name']=='v100'][0]['supported'] is False; assert 'sm_90' in d['toolkit']['architectures']" || failures=$((failures + 1))
  ;;
unknown_flag)
  expect 2 "$kiln" devices --bogus
  expect 2 "$kiln"
  expect 2 "$kiln" cache shred
  ;;
build_inspect)
  build_ops "$work/ops.kiln" --devices h100,a100 --ptx compute_80
  expect 0 "$kiln" inspect "$work/ops.kiln" --kernels
  contains "sm_80" "$out"; contains "sm_90" "$out"; contains "compute_80" "$out"
  contains "scale<float>" "$out"; contains "block_sum" "$out"; contains "_Z5scaleIdEvPT_S0_i" "$out"
  ;;
inspect_json)
  build_ops "$work/ops.kiln" --devices h100,a100 --ptx compute_80 --embed-source
  expect 0 "$kiln" inspect "$work/ops.kiln" --json
  json "
imgs=d['images']; t=sorted((i['target'],i['kind']) for i in imgs)
assert t==[('compute_80','ptx'),('sm_80','cubin'),('sm_90','cubin'),('source','source')], t
for i in imgs:
  assert i['raw_size']>0 and i['stored_size']<=i['raw_size'], i
  assert sorted(i['kernels'])==sorted(['_Z5scaleIfEvPT_S0_i','_Z5scaleIdEvPT_S0_i','block_sum']), i['kernels']
" || failures=$((failures + 1))
  ;;
build_split_kernels)
  build_ops "$work/ops.kiln" --devices sm_80,sm_90 --ptx compute_80 --split-kernels
  expect 0 "$kiln" inspect "$work/ops.kiln" --json
  json "
imgs=d['images']
cubins=[i for i in imgs if i['kind']=='cubin']
assert len(cubins)==6, [(i['target'],i['kernels']) for i in cubins]
assert all(len(i['kernels'])==1 for i in cubins), cubins
for arch in ('sm_80','sm_90'):
  assert sorted(k for i in cubins if i['target']==arch for k in i['kernels'])==sorted(['_Z5scaleIfEvPT_S0_i','_Z5scaleIdEvPT_S0_i','block_sum'])
assert [i['target'] for i in imgs if i['kind']=='ptx']==['compute_80']
" || failures=$((failures + 1))
  expect 0 "$kiln" select "$work/ops.kiln" --device l4
  contains "aot-compatible" "$out"
  ;;
build_compress)
  # --compress names every image's codec; every bundle is the newest format version (4).
  build_ops "$work/lz4.kiln" --devices sm_80,sm_90 --ptx compute_80 --embed-source --compress lz4
  expect 0 "$kiln" inspect "$work/lz4.kiln"
  contains "kiln bundle v4" "$out"; contains "CODEC" "$out"; contains " lz4 " "$out"
  if grep -q zstd <<<"$out"; then echo "FAIL: zstd in an lz4 bundle"; failures=$((failures + 1)); fi
  expect 0 "$kiln" inspect "$work/lz4.kiln" --json
  json "
assert d['format_version']==4, d['format_version']
imgs=d['images']
assert all(i['codec'] in ('lz4','none') for i in imgs), imgs
assert all(i['codec']=='lz4' and i['stored_size']<i['raw_size'] for i in imgs if i['kind']=='cubin'), imgs
" || failures=$((failures + 1))
  expect 0 "$kiln" select "$work/lz4.kiln" --device l4
  contains "aot-compatible: sm_80 cubin" "$out"
  build_ops "$work/lz4-again.kiln" --devices sm_80,sm_90 --ptx compute_80 --embed-source --compress lz4
  cmp "$work/lz4.kiln" "$work/lz4-again.kiln" || { echo "FAIL: lz4 bundles differ"; failures=$((failures + 1)); }
  for codec in zstd none; do
    build_ops "$work/$codec.kiln" --devices sm_80,sm_90 --ptx compute_80 --embed-source --compress $codec
    expect 0 "$kiln" inspect "$work/$codec.kiln" --json
    json "assert d['format_version']==4, d; assert {i['codec'] for i in d['images']} <= {'$codec','none'}, d['images']" ||
      failures=$((failures + 1))
  done
  expect 2 "$kiln" build "$data/kernels.cu" -o "$work/x.kiln" --devices sm_80 --compress brotli
  contains "brotli" "$err"
  expect 0 "$kiln" build --help
  contains "lz4" "$out"
  ;;
inspect_corrupt)
  build_ops "$work/ops.kiln" --devices sm_80
  cp "$work/ops.kiln" "$work/bad.kiln"
  printf '\xff\xff\xff\xff' | dd of="$work/bad.kiln" bs=1 seek=100 conv=notrunc 2>/dev/null
  expect 1 "$kiln" inspect "$work/bad.kiln"
  contains "bundle" "$err"
  head -c 40 "$work/ops.kiln" >"$work/short.kiln"
  expect 1 "$kiln" inspect "$work/short.kiln"
  echo "not a bundle at all" >"$work/text.kiln"
  expect 1 "$kiln" inspect "$work/text.kiln"
  ;;
inspect_missing)
  expect 1 "$kiln" inspect "$work/nope.kiln"
  contains "nope.kiln" "$err"
  # A directory is named as one (it once crashed the reader), and so is a FIFO (it once hung it).
  mkdir "$work/dir.kiln"
  expect 1 "$kiln" inspect "$work/dir.kiln"
  contains "is a directory" "$err"; contains "dir.kiln" "$err"
  mkfifo "$work/fifo.kiln"
  expect 1 timeout 20 "$kiln" inspect "$work/fifo.kiln"
  contains "not a regular file" "$err"
  ;;
select_paths)
  build_ops "$work/ops.kiln" --devices h100,a100 --ptx compute_80
  expect 0 "$kiln" select "$work/ops.kiln" --device l4
  contains "aot-compatible: sm_80 cubin" "$out"
  expect 0 "$kiln" select "$work/ops.kiln" --device h200
  contains "aot-exact: sm_90 cubin" "$out"
  expect 0 "$kiln" select "$work/ops.kiln" --device b200
  contains "jit-ptx: compute_80 ptx" "$out"
  expect 0 "$kiln" select "$work/ops.kiln" --device sm_86
  contains "aot-compatible: sm_80" "$out"
  ;;
select_json)
  build_ops "$work/ops.kiln" --devices h100,a100 --ptx compute_80
  expect 0 "$kiln" select "$work/ops.kiln" --device l4 --json
  json "assert d=={'device':'l4','arch':'sm_89','path':'aot-compatible','choice':{'target':'sm_80','kind':'cubin'},'reason':d['reason']}, d; assert d['reason']" || failures=$((failures + 1))
  ;;
select_nothing_fits)
  build_ops "$work/h100.kiln" --devices h100 --ptx none
  expect 3 "$kiln" select "$work/h100.kiln" --device l4
  contains "l4 (sm_89)" "$err"; contains "sm_90 cubin" "$err"; contains "--devices l4" "$err"
  expect 3 "$kiln" select "$work/h100.kiln" --device b200 --json
  json "assert d['path'] is None" || failures=$((failures + 1))
  ;;
select_unknown_device)
  build_ops "$work/ops.kiln" --devices sm_80
  expect 2 "$kiln" select "$work/ops.kiln" --device h10
  contains "h100" "$err"
  ;;
device_list_errors)
  expect 2 "$kiln" build "$data/kernels.cu" -o "$work/x.kiln" --devices h100,rtx409
  contains "'rtx409'" "$err"; contains "rtx4090" "$err"
  expect 2 "$kiln" build "$data/kernels.cu" -o "$work/x.kiln" --devices v100
  contains "sm_70" "$err"; contains "CUDA 13" "$err"
  expect 2 "$kiln" build "$data/kernels.cu" -o "$work/x.kiln" --devices sm_80 --ptx banana
  expect 2 "$kiln" build "$work/missing.cu" -o "$work/x.kiln" --devices sm_80
  [ ! -e "$work/x.kiln" ] || { echo "FAIL: output written on error"; failures=$((failures + 1)); }
  ;;
env_device_list)
  KILN_CACHE_DIR=$shared_cache KILN_AOT_DEVLIST="h100, a100" expect 0 "$kiln" build "$data/kernels.cu" -I "$data/include" -o "$work/env.kiln" -q
  expect 0 "$kiln" inspect "$work/env.kiln" --json
  json "t=sorted(i['target'] for i in d['images']); assert t==['compute_80','sm_80','sm_90'], t" || failures=$((failures + 1))
  ;;
no_device_list)
  expect 2 "$kiln" build "$data/kernels.cu" -o "$work/x.kiln"
  contains "KILN_AOT_DEVLIST" "$err"
  ;;
compile_error)
  expect 1 "$kiln" build "$data/broken.cu" -o "$work/x.kiln" --devices sm_80
  contains "broken.cu(2)" "$err"; contains "undeclared_name" "$err"
  ;;
parallel_build)
  # -j 3 compiles in helper processes (NVRTC serializes threads); the bundle is the one a
  # single-job build without the cache makes, and a compile error is reported once.
  KILN_CACHE_DIR=$work/parallel expect 0 "$kiln" build "$data/kernels.cu" -I "$data/include" -o "$work/a.kiln" -q \
    --devices sm_75,sm_80,sm_90 --ptx compute_75 -j 3
  expect 0 "$kiln" build "$data/kernels.cu" -I "$data/include" -o "$work/b.kiln" -q \
    --devices sm_75,sm_80,sm_90 --ptx compute_75 -j 1 --no-cache
  cmp "$work/a.kiln" "$work/b.kiln" || { echo "FAIL: bundles differ"; failures=$((failures + 1)); }
  [ -n "$(ls "$work/parallel/build")" ] || { echo "FAIL: the helpers filled no compile cache"; failures=$((failures + 1)); }
  # Every directory the build made under the cache directory is private (build/slots once was 0755),
  # with the default -j as with -j 3.
  KILN_CACHE_DIR=$work/private/cache expect 0 "$kiln" build "$data/kernels.cu" -I "$data/include" -o "$work/c.kiln" -q \
    --devices sm_80,sm_90
  if [ "$(nproc)" -ge 2 ]; then
    [ -d "$work/private/cache/build/slots" ] || { echo "FAIL: the helpers made no build/slots"; failures=$((failures + 1)); }
  fi
  [ -d "$work/parallel/build/slots" ] || { echo "FAIL: the -j 3 helpers made no build/slots"; failures=$((failures + 1)); }
  for made in "$work/private/cache" "$work/parallel"; do
    while IFS= read -r directory; do
      mode=$(stat -c %a "$directory")
      [ "$mode" = 700 ] || { echo "FAIL: $directory has mode $mode, not 700"; failures=$((failures + 1)); }
    done < <(find "$made" -type d)
  done
  KILN_CACHE_DIR=$work/broken expect 1 "$kiln" build "$data/broken.cu" -o "$work/x.kiln" --devices sm_75,sm_80,sm_90 -j 3
  [ "$(grep -c "undeclared_name" <<<"$err")" -ge 1 ] && [ "$(grep -c "^kiln: " <<<"$err")" = 1 ] ||
    { echo "FAIL: expected one error report, got:"; echo "$err"; failures=$((failures + 1)); }
  ;;
deterministic)
  build_ops "$work/a.kiln" --devices sm_80,sm_90 --embed-source
  build_ops "$work/b.kiln" --devices sm_80,sm_90 --embed-source --no-cache
  cmp "$work/a.kiln" "$work/b.kiln" || { echo "FAIL: bundles differ"; failures=$((failures + 1)); }
  ;;
depfile)
  build_ops "$work/ops.kiln" --devices sm_80 --depfile "$work/ops.d"
  contains "ops.kiln:" "$(cat "$work/ops.d")"; contains "scale.cuh" "$(cat "$work/ops.d")"
  contains "kernels.cu" "$(cat "$work/ops.d")"
  ;;
ptx_newest_and_none)
  build_ops "$work/n.kiln" --devices sm_80,sm_90 --ptx newest
  expect 0 "$kiln" inspect "$work/n.kiln"
  contains "compute_90" "$out"
  build_ops "$work/z.kiln" --devices sm_80 --ptx none
  expect 0 "$kiln" inspect "$work/z.kiln"
  if grep -q compute_ <<<"$out"; then echo "FAIL: PTX kept with --ptx none"; failures=$((failures + 1)); fi
  ;;
cache_commands)
  expect 0 "$kiln" cache stats
  contains "$work/cache" "$out"
  expect 0 "$kiln" cache list --json
  json "assert d['entries']==[]" || failures=$((failures + 1))
  expect 0 "$kiln" cache prune --max-size 1M
  expect 2 "$kiln" cache prune --max-size lots
  expect 2 "$kiln" cache stats --max-size 1M
  expect 0 "$kiln" cache clear
  # kiln build's compile cache lives in build/ under the same directory and is managed too.
  expect 0 "$kiln" build "$data/kernels.cu" -I "$data/include" -o "$work/c.kiln" -q --devices sm_80 --ptx none
  expect 0 "$kiln" cache stats --json
  json "assert d['entries']==0 and d['build']['entries']==1 and d['build']['directory'].endswith('/cache/build'), d" ||
    failures=$((failures + 1))
  expect 0 "$kiln" cache list --json
  json "assert [e['cache'] for e in d['entries']]==['build'], d" || failures=$((failures + 1))
  expect 0 "$kiln" cache prune --max-size 1 --json
  json "assert d['removed']==1 and d['by_cache']=={'jit':0,'build':1}, d" || failures=$((failures + 1))
  expect 0 "$kiln" build "$data/kernels.cu" -I "$data/include" -o "$work/c.kiln" -q --devices sm_80 --ptx none
  expect 0 "$kiln" cache clear
  contains "compile cache (kiln build) 1" "$out"
  ;;
doctor_no_gpu)
  expect 0 "$kiln" doctor
  contains "driver" "$out"; contains "NVRTC" "$out"; contains "$work/cache" "$out"
  ;;
prewarm_no_gpu)
  build_ops "$work/ops.kiln" --devices sm_80
  if [ -e /dev/nvidia0 ]; then echo "skipped on a GPU machine"; exit 0; fi
  expect 1 "$kiln" prewarm "$work/ops.kiln"
  contains "driver" "$err"
  ;;
*)
  echo "unknown case $case_name"; exit 2 ;;
esac

if [ "$failures" -ne 0 ]; then echo "$case_name: $failures failure(s)"; exit 1; fi
echo "$case_name: ok"
