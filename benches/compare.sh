#!/usr/bin/env bash
# Runs `ganscope bench` and the PyTorch reference in alternation on this
# machine, with the same thread count, and prints the ratios.
#
#   benches/compare.sh [THREADS] [RESOLUTIONS] [PYTHON] [ROUNDS]    e.g. benches/compare.sh 1 32,64
#
# ROUNDS (default 2) alternations; the ratios compare the best of each side.
# Each round measures one resolution at a time, both sides back to back,
# and the side that goes first changes from round to round: on a shared
# machine whose load moves within minutes, the two sides of a ratio are
# then measured a minute apart rather than a whole run apart.
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
ours() { RAYON_NUM_THREADS="$threads" "$bin" bench --json --resolutions "$1" > "$out/ours-$2.json"; }
torch() {
  OMP_NUM_THREADS="$threads" "$py" benches/reference/torch_dcgan.py --threads "$threads" --resolutions "$1" --json \
    > "$out/torch-$2.json"
}
for round in $(seq 1 "$rounds"); do
  for r in ${res//,/ }; do
    if (( round % 2 )); then ours "$r" "$round-$r"; torch "$r" "$round-$r"; else torch "$r" "$round-$r"; ours "$r" "$round-$r"; fi
  done
done
"$py" benches/ratios.py "$out"
