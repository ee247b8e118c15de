#!/usr/bin/env bash
# The main job: set up a fresh Debian machine, build kiln and the example op library, and
# run the demo. On a GPU it runs every op and prints the path each kernel took; without one
# it says so and shows what common GPUs would get from the embedded bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${KILN_AOT_DEVLIST:+-DKILN_AOT_DEVLIST="$KILN_AOT_DEVLIST"}
cmake --build build -j "$(nproc)" --target kiln_demo
./build/bin/kiln_demo "$@"
