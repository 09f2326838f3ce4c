#!/usr/bin/env bash
# One prepared GPU session (see ../shared/GPU.md): trains the shipped emoji
# model on CUDA, then runs `ganscope bench` and the PyTorch reference on the
# same GPU, and samples the default model on both devices. Everything lands in $OUT.
#
#   bash benches/gpu/run.sh            # on the GPU machine, from the project root with .gpu/
set -uo pipefail
OUT="${OUT:-/tmp/ganscope-gpu}"
mkdir -p "$OUT"
# The binary travels xz-compressed (.gpupack/) to fit the copy limit.
if [ ! -x .gpu/ganscope ] && [ -f .gpupack/ganscope.xz ]; then
  mkdir -p .gpu && xz -dc .gpupack/ganscope.xz > .gpu/ganscope && chmod +x .gpu/ganscope && cp .gpupack/env.sh .gpu/
fi
source .gpu/env.sh 2> "$OUT/env.txt"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
BIN=.gpu/ganscope
# 1. A smoke run: the CUDA device opens and a few steps train.
$BIN train --device cuda --data builtin:emoji --out "$OUT/smoke" --steps 20 --set model.resolution=64 \
  > "$OUT/smoke.log" 2>&1 || { echo "smoke failed"; tail -5 "$OUT/smoke.log"; }
# 2. The shipped emoji model (checkpoints every 500 steps, so a timeout keeps progress).
timeout "${TRAIN_SECONDS:-270}" $BIN train --device cuda --data builtin:emoji --out "$OUT/emoji" \
  --steps "${EMOJI_STEPS:-6000}" --set model.resolution=64 --set model.channels=3 --set model.z_dim=64 \
  --set model.g_width=32 --set model.d_width=32 --set checkpoint_every=500 --set sample_every=500 \
  > "$OUT/emoji.log" 2>&1
echo "emoji exit $?" >> "$OUT/emoji.log"
# 2b. The shipped digits model.
timeout "${DIGITS_SECONDS:-80}" $BIN train --device cuda --data builtin:digits --out "$OUT/digits" \
  --steps "${DIGITS_STEPS:-4000}" --set model.resolution=28 --set model.channels=1 --set model.g_width=32 \
  --set model.d_width=32 --set checkpoint_every=500 --set sample_every=500 --set "background=[0,0,0]" \
  > "$OUT/digits.log" 2>&1
echo "digits exit $?" >> "$OUT/digits.log"
# 3. Speed: ganscope (candle CUDA) and PyTorch on the same GPU.
timeout 50 $BIN bench --device cuda --json --quick --resolutions 64 > "$OUT/bench-ganscope-cuda.json" 2> "$OUT/bench-ganscope-cuda.txt"
timeout 50 python3 benches/reference/torch_dcgan.py --device cuda --json --quick --resolutions 64 \
  > "$OUT/bench-torch-cuda.json" 2> "$OUT/bench-torch-cuda.txt"
# 4. Same pictures on both devices (issue 7, item 4): the embedded default
# model, seeds 0..63, on CUDA and on the CPU; compare the PNGs back home
# (e.g. max per-pixel difference), where tools to read them exist.
$BIN sample --device cuda --seed 0 --count 64 --out "$OUT/same-cuda.png" > "$OUT/same.log" 2>&1
$BIN sample --device cpu --seed 0 --count 64 --out "$OUT/same-cpu.png" >> "$OUT/same.log" 2>&1
cmp -s "$OUT/same-cuda.png" "$OUT/same-cpu.png" && echo "identical bytes" >> "$OUT/same.log"
# Only a few files come back from the machine: keep each run's model, config,
# last grid and metrics tail, and drop the rest (checkpoints, older grids).
rm -rf "$OUT/smoke"
for run in emoji digits; do
  d="$OUT/$run"
  [ -d "$d" ] || continue
  last=$(ls "$d"/samples/*.png 2>/dev/null | tail -1)
  [ -n "$last" ] && cp "$last" "$d/last.png"
  tail -5 "$d/metrics.jsonl" > "$d/metrics-tail.jsonl" 2>/dev/null
  rm -rf "$d/samples" "$d/checkpoint.safetensors" "$d/healthy.safetensors" "$d/metrics.jsonl"
done
ls -la "$OUT" "$OUT/emoji" | tail -20
