#!/usr/bin/env python3
"""How busy the other rayon workers are while the training step runs each op.

A profile's call chains cannot say which op a stolen job belongs to: its
stack starts at the worker's loop. Time can: each sample of the thread that
runs the step (the one whose chains hold `Trainer::step_here`) names the op
it is in, and a sample of another worker within `--window` of it counts as
that worker helping with that op. At the same sampling rate, helper samples
over runner samples is the share of the op's time the helper was busy
(helping, or spinning in rayon's or candle's pools).

    RAYON_NUM_THREADS=2 perf record -o two.data --call-graph dwarf,16384 -F 997 --delay 4000 \\
      target/release/ganscope train ...   # as in BENCHMARKS.md
    perf script -i two.data -F tid,time,ip,sym > two.txt
    benches/thread_use.py two.txt
"""
import argparse
import bisect
import collections

# Ops in the order they are looked for in a call chain: the first that
# appears names the sample (weight gradients before the convolutions whose
# backward calls them).
OPS = [
    "conv3x3_weight_grad", "conv4x4s2_weight_grad", "weight_grad", "winograd::conv3x3", "conv_t4x4s2",
    "strided::conv4x4s2", "Geom::patches", "unfold", "shuffle::", "batch_norm::", "adam::", "bias::",
    "activation::", "upsample", "zeros_like", "binary_map", "Tensor::add", "backward", "grad_norm", "gather",
    "Generator::forward", "Discriminator::forward",
]
NOT_OPS = ("backward", "zeros_like", "binary_map", "Tensor::add")


def samples(path):
    """(tid, time, frames innermost first) per sample of `perf script`."""
    head, frames = None, []
    for line in open(path):
        if not line.strip():
            if head:
                yield head[0], head[1], frames
            head, frames = None, []
        elif head is None:
            tid, time = line.split()[:2]
            head = (tid, float(time.rstrip(":")))
        else:
            frames.append(line.strip().split(None, 1)[-1])
    if head:
        yield head[0], head[1], frames


def op_of(frames):
    chain = " | ".join(frames)
    for op in OPS:
        if op in chain:
            return op + (" bwd" if "::bwd" in chain and op not in NOT_OPS else "")
    return "other: " + (frames[0][:40] if frames else "?")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("script", help="output of perf script -F tid,time,ip,sym")
    ap.add_argument("--window", type=float, default=0.0015, help="seconds (default: 1.5 ms)")
    ap.add_argument("--rows", type=int, default=20)
    a = ap.parse_args()
    all_samples = list(samples(a.script))
    runner = collections.Counter(t for t, _, f in all_samples if any("step_here" in x for x in f)).most_common(1)
    if not runner:
        raise SystemExit(f"{a.script}: no sample inside Trainer::step_here (record a training run)")
    runner = runner[0][0]
    run = sorted((time, op_of(f)) for t, time, f in all_samples if t == runner)
    times = [time for time, _ in run]
    counts = collections.Counter(t for t, _, _ in all_samples)
    print(f"runner thread {runner}: {len(run)} samples; others: " +
          ", ".join(f"{t} {n}" for t, n in counts.most_common() if t != runner))
    ops = collections.Counter(op for _, op in run)
    helpers = [t for t, _ in counts.most_common() if t != runner]
    helped = {t: collections.Counter() for t in helpers}
    for t, time, _ in all_samples:
        if t == runner:
            continue
        i = bisect.bisect_left(times, time)
        near = min((j for j in (i - 1, i) if 0 <= j < len(times)), key=lambda j: abs(times[j] - time), default=None)
        if near is not None and abs(times[near] - time) < a.window:
            helped[t][run[near][1]] += 1
    shown = helpers[:2]
    print(f"{'op':34s} {'runner':>7s} " + " ".join(f"{'busy ' + t:>12s}" for t in shown))
    for op, n in ops.most_common(a.rows):
        print(f"{op[:34]:34s} {n:7d} " + " ".join(f"{helped[t][op] / n:12.2f}" for t in shown))


if __name__ == "__main__":
    main()
