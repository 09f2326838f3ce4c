#!/usr/bin/env bash
# Packs the CUDA binaries that build-cuda.sh left in .gpu/ into .gpupack/,
# xz-compressed (the copy to the GPU machine is limited to 64 MiB), for
# benches/gpu/run.sh. The test binary gets a stable name.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpupack
rm -f .gpupack/*.xz
xz -T2 -6 -c .gpu/ganscope > .gpupack/ganscope.xz
test=$(ls -t .gpu/ops_equivalence-* | head -1)
xz -T2 -6 -c "$test" > .gpupack/ops_equivalence.xz
cp .gpu/env.sh .gpupack/
du -sh .gpupack/*
