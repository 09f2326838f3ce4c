#!/usr/bin/env bash
# Runs `ganscope bench` and the PyTorch reference in alternation on this
# machine, with the same thread count, and prints the ratios.
#
#   benches/compare.sh [THREADS] [RESOLUTIONS] [PYTHON] [ROUNDS]    e.g. benches/compare.sh 1 32,64
#
# ROUNDS (default 2) alternations; the ratios compare the best of each side.
#
# Needs a release build (cargo build --release) and PyTorch (pip install torch).
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-$(nproc)}"
res="${2:-28,32,64}"
py="${3:-python3}"
rounds="${4:-2}"
bin="${GANSCOPE_BIN:-target/release/ganscope}"
out="$(mktemp -d)"
for round in $(seq 1 "$rounds"); do
  RAYON_NUM_THREADS="$threads" "$bin" bench --json --resolutions "$res" > "$out/ours-$round.json"
  OMP_NUM_THREADS="$threads" "$py" benches/reference/torch_dcgan.py --threads "$threads" --resolutions "$res" --json > "$out/torch-$round.json"
done
"$py" benches/ratios.py "$out"
