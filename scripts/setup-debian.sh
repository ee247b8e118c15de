#!/usr/bin/env bash
# Installs what kiln needs to build and test on a fresh Debian 12 machine. The CUDA 13
# toolkit (nvcc, NVRTC, nvJitLink, headers) is not a Debian package: it must already be at
# $CUDA_HOME or /usr/local/cuda. No GPU is needed to build or to run the CPU tests.
set -euo pipefail

cuda_home=${CUDA_HOME:-/usr/local/cuda}
if [ ! -f "$cuda_home/include/nvrtc.h" ]; then
  echo "setup: the CUDA 13 toolkit was not found at $cuda_home (set CUDA_HOME); kiln needs its headers and NVRTC" >&2
  exit 1
fi

packages=(cmake ninja-build g++ pkg-config python3
          libzstd-dev liblz4-dev libxxhash-dev libcli11-dev nlohmann-json3-dev libgtest-dev libbenchmark-dev
          clang libclang-rt-14-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -ne 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
