#!/usr/bin/env bash
# One prepared GPU session (see ../shared/GPU.md and README "On a GPU"): checks the
# CUDA ops against the CPU, compares the default model's pictures on both
# devices, benchmarks ganscope (our CUDA convolutions, TF32, candle stock)
# against PyTorch on the same GPU, trains a few hundred steps and profiles
# a few more (benches/gpu/profile.sh).
# The results come back as $OUT/results.tgz (the device tool returns at most
# 8 files) and a summary on stdout; benches/ratios.py prints the ratios.
#
# Built here first, then carried as .gpupack (the binaries xz-compressed to
# fit the copy limit):
#   ../shared/gpu/build-cuda.sh --no-default-features --bin ganscope
#   ../shared/gpu/build-cuda.sh --no-default-features --test ops_equivalence
#   benches/gpu/pack.sh [BASELINE_BINARY]
# With a baseline (a CUDA build of the code before a change, packed as
# ganscope-base), step 3 measures it too, in alternation with the new build
# and PyTorch (fp32-base/ has its reports and ratios), and step 5 profiles
# it as well.
# On the GPU machine, from the project root:
#   bash benches/gpu/run.sh          # everything, 2 min on an H100 (3 with a baseline)
#   bash benches/gpu/run.sh quick    # no TF32, stock or profile runs, 1 min
set -uo pipefail
QUICK=$([ "${1:-}" = quick ] && echo 1 || echo 0)
FINAL="${OUT:-/tmp/ganscope-gpu}"
OUT=$(mktemp -d)
mkdir -p "$FINAL" .gpu
for f in .gpupack/*.xz; do
  name=$(basename "$f" .xz)
  [ -x ".gpu/$name" ] || { xz -dc "$f" > ".gpu/$name" && chmod +x ".gpu/$name"; }
done
cp .gpupack/env.sh .gpu/ 2>/dev/null
source .gpu/env.sh 2> "$OUT/env.txt"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
BIN=.gpu/ganscope
step() { echo "== $(date +%T) $*" >> "$OUT/steps.txt"; }

step "1. CUDA ops against candle on the CPU (values and gradients)"
timeout 120 .gpu/ops_equivalence --test-threads 1 --nocapture > "$OUT/equivalence.txt" 2>&1
echo "exit $?" >> "$OUT/equivalence.txt"

step "2. the default model's pictures on both devices"
$BIN sample --device cuda --seed 0 --count 64 --out "$OUT/same-cuda.png" > "$OUT/same.txt" 2>&1
$BIN sample --device cpu --seed 0 --count 64 --out "$OUT/same-cpu.png" >> "$OUT/same.txt" 2>&1
python3 - "$OUT" >> "$OUT/same.txt" 2>&1 <<'PY'
import sys
import numpy as np
from PIL import Image
a, b = (np.asarray(Image.open(f"{sys.argv[1]}/same-{d}.png"), dtype=np.int16) for d in ("cuda", "cpu"))
diff = np.abs(a - b)
print(f"max |cuda - cpu| = {diff.max()}/255, mean {diff.mean():.4f}, subpixels differing: {(diff > 0).sum()} of {diff.size}")
PY

step "3. speed, alternating ganscope and PyTorch on the same GPU"
bench() {  # report file under $OUT, then the command
  local file="$OUT/$1"; shift
  mkdir -p "$(dirname "$file")"
  timeout 150 "$@" --device cuda --json > "$file" 2> "${file%.json}.txt"
  echo "exit $?" >> "${file%.json}.txt"
}
BASE=$([ -x .gpu/ganscope-base ] && echo .gpu/ganscope-base)
for round in 1 2; do
  [ -n "$BASE" ] && bench "fp32-base/ours-$round.json" $BASE bench
  bench "fp32/ours-$round.json" $BIN bench
  bench "fp32/torch-$round.json" python3 benches/reference/torch_dcgan.py
  [ -n "$BASE" ] && cp "$OUT/fp32/torch-$round.json" "$OUT/fp32-base/"
done
if [ "$QUICK" = 0 ]; then
  bench tf32/ours-1.json $BIN bench --tf32
  bench tf32/torch-1.json python3 benches/reference/torch_dcgan.py --tf32
  bench stock/ours-1.json $BIN bench --stock --resolutions 64
fi
for d in fp32 fp32-base tf32; do [ -d "$OUT/$d" ] && python3 benches/ratios.py "$OUT/$d" > "$OUT/$d/ratios.txt" 2>&1; done
[ -n "$BASE" ] && python3 benches/ratios.py "$OUT/fp32" "$OUT/fp32-base" > "$OUT/fp32/ratios.txt" 2>&1

step "4. training the default recipe on CUDA"
timeout 90 $BIN train --device cuda --data builtin:emoji --out "$OUT/emoji" --steps 400 \
  --set batch_size=32 --set model.resolution=64 --set checkpoint_every=400 --set sample_every=400 \
  > "$OUT/train.txt" 2>&1
echo "exit $?" >> "$OUT/train.txt"
d="$OUT/emoji"
if [ -d "$d" ]; then
  last=$(ls "$d"/samples/*.png 2>/dev/null | tail -1)
  [ -n "$last" ] && cp "$last" "$OUT/train-last.png"
  tail -3 "$d/metrics.jsonl" > "$OUT/train-metrics-tail.jsonl" 2>/dev/null
  rm -rf "$d"
fi
if [ "$QUICK" = 0 ]; then
  step "5. GPU time per kernel of a few training steps (Nsight Compute)"
  timeout 150 bash benches/gpu/profile.sh "$BIN" > "$OUT/kernels.txt" 2>&1
  [ -n "$BASE" ] && timeout 150 bash benches/gpu/profile.sh "$BASE" > "$OUT/kernels-base.txt" 2>&1
fi
step "done"
for f in steps.txt equivalence.txt same.txt fp32/ratios.txt fp32-base/ratios.txt tf32/ratios.txt stock/ours-1.txt train.txt kernels.txt kernels-base.txt; do
  [ -f "$OUT/$f" ] && { echo "---- $f"; tail -25 "$OUT/$f"; }
done | tee "$FINAL/summary.txt"
tar czf "$FINAL/results.tgz" -C "$OUT" .
