#!/usr/bin/env python3
"""Prints ganscope's speed against PyTorch's from the JSON reports in DIR:
ours-*.json (`ganscope bench --json`) and torch-*.json
(benches/reference/torch_dcgan.py --json), the best of the rounds for each.
With BASE_DIR (another build's ours-*.json, as benches/gpu/run.sh keeps for
a baseline), a last column gives our training speed over that build's.

    python3 benches/ratios.py DIR [BASE_DIR]  (benches/compare.sh and benches/gpu/run.sh write them)
"""
import json, sys, glob

d = sys.argv[1]
def best(kind, key, lower, d=d):
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{d}/{kind}-*.json"))]
    out = {}
    for r in runs:
        for a in r["archs"]:
            v = a[key]
            if a["name"] not in out or (v < out[a["name"]] if lower else v > out[a["name"]]):
                out[a["name"]] = v
    # The ceiling is the best matmul of the rounds, as the speeds are the best.
    return out, dict(runs[0], matmul_gflops=max(r["matmul_gflops"] for r in runs))
ours_t, ours = best("ours", "train_images_per_sec", False)
torch_t, torch = best("torch", "train_images_per_sec", False)
base_t = best("ours", "train_images_per_sec", False, sys.argv[2])[0] if len(sys.argv) > 2 else {}
ours_g1, _ = best("ours", "g_batch1_ms", True); torch_g1, _ = best("torch", "g_batch1_ms", True)
ours_g64, _ = best("ours", "g_batch64_ms", True); torch_g64, _ = best("torch", "g_batch64_ms", True)
print(f"threads: ours {ours['threads']}, torch {torch['threads']} ({torch['backend']}); "
      f"matmul ceiling ours {ours['matmul_gflops']:.0f} GFLOP/s, torch {torch['matmul_gflops']:.0f}")
print(f"{'arch':<26}{'train img/s ours/torch':>26}{'ratio':>8}{'G b1 ms ours/torch':>22}{'speedup':>9}{'G b64 ms ours/torch':>24}{'speedup':>9}{'ceiling':>9}" + (f"{'vs base':>9}" if base_t else ""))
ours_gf, _ = best("ours", "train_gflops", False)
share = {n: v / ours['matmul_gflops'] for n, v in ours_gf.items()}
for n in ours_t:
    print(f"{n:<26}{ours_t[n]:>13.1f} /{torch_t[n]:>9.1f}{ours_t[n]/torch_t[n]:>8.2f}x"
          f"{ours_g1[n]:>11.2f} /{torch_g1[n]:>8.2f}{torch_g1[n]/ours_g1[n]:>8.2f}x"
          f"{ours_g64[n]:>13.1f} /{torch_g64[n]:>8.1f}{torch_g64[n]/ours_g64[n]:>8.2f}x{100*share[n]:>8.1f}%"
          + (f"{ours_t[n]/base_t[n]:>8.2f}x" if n in base_t else ""))
