#!/usr/bin/env bash
# Packs the CUDA binaries that build-cuda.sh left in .gpu/ into .gpupack/,
# xz-compressed (the copy to the GPU machine is limited to 64 MiB), for
# benches/gpu/run.sh. The test binary gets a stable name. A second binary,
# when given (a CUDA build of the code before a change), goes along as
# ganscope-base: run.sh then measures it in alternation with the new one.
#
#   benches/gpu/pack.sh [BASELINE_BINARY]
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpupack
rm -f .gpupack/*.xz
xz -T2 -6 -c .gpu/ganscope > .gpupack/ganscope.xz
test=$(ls -t .gpu/ops_equivalence-* | head -1)
xz -T2 -6 -c "$test" > .gpupack/ops_equivalence.xz
[ -n "${1:-}" ] && xz -T2 -6 -c "$1" > .gpupack/ganscope-base.xz
cp .gpu/env.sh .gpupack/
du -sh .gpupack/*
