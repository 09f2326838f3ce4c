#!/usr/bin/env bash
# GPU time per kernel of a few training steps (Nsight Compute, one metric:
# each kernel's duration), summed by kernel name, on the bench's 64x64
# transposed-conv DCGAN at batch 64 with the plain recipe. Compare the total
# with the step's wall time from `ganscope bench` to see how much of a step
# is GPU work and how much is launch and host overhead.
#
#   bash benches/gpu/profile.sh [BINARY] > kernels.txt    (on the GPU machine, after env.sh)
set -euo pipefail
BIN="${1:-.gpu/ganscope}"
dir=$(mktemp -d)
ncu --csv --metrics gpu__time_duration.sum --print-units base \
  "$BIN" train --device cuda --data builtin:emoji --out "$dir/run" --steps "${STEPS:-3}" --preset plain-dcgan \
  --set batch_size=64 --set model.resolution=64 --set model.z_dim=100 --set model.g_width=64 --set model.d_width=64 \
  --set sample_every=1000 --set checkpoint_every=1000 > "$dir/ncu.csv" 2> "$dir/ncu.err" || { tail -20 "$dir/ncu.err" >&2; exit 1; }
python3 - "$dir/ncu.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head, rows = rows[0], rows[1:]
name, value = head.index("Kernel Name"), head.index("Metric Value")
total, count = collections.Counter(), collections.Counter()
for r in rows:
    k = r[name].split("(")[0][:60]
    total[k] += float(r[value].replace(",", ""))
    count[k] += 1
ns = sum(total.values())
print(f"{len(rows)} kernels, {ns / 1e6:.2f} ms of GPU time in all")
for k, t in total.most_common(40):
    print(f"{t / 1e6:9.3f} ms {100 * t / ns:5.1f}% {count[k]:6d}x  {k}")
PY
