#!/usr/bin/env python3
"""PyTorch reference for `ganscope bench`: the same DCGAN architectures, the
same shapes and the same training step (D on an all-real and an all-fake
batch, then G; Adam for both), timed the same way (median of repetitions).

    python3 benches/reference/torch_dcgan.py [--device cpu|cuda] [--threads N] [--tf32] [--json]
    python3 benches/reference/torch_dcgan.py --threads 1 --resolutions 32 --profile pixel_shuffle

Architecture (see src/bench.rs `arch` and src/gan): z=100, widths 64 at full
resolution doubling per level, G = Linear -> BN -> ReLU, then per level an
upsampling block (4x4 s2 transposed conv | 3x3 conv + pixel shuffle |
nearest x2 + 3x3 conv), BN + ReLU, last block tanh; D = per level 4x4 s2 conv
(no norm on the first), BN, LeakyReLU(0.2), then a linear logit.
"""
import argparse
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def levels(res):
    base = 7 if res == 28 else 4
    return base, (res // base).bit_length() - 1


class Up(nn.Module):
    def __init__(self, kind, cin, cout):
        super().__init__()
        self.kind = kind
        if kind == "conv_transpose":
            self.conv = nn.ConvTranspose2d(cin, cout, 4, 2, 1)
        elif kind == "pixel_shuffle":
            self.conv = nn.Conv2d(cin, cout * 4, 3, 1, 1)
        else:
            self.conv = nn.Conv2d(cin, cout, 3, 1, 1)

    def forward(self, x):
        if self.kind == "conv_transpose":
            return self.conv(x)
        if self.kind == "pixel_shuffle":
            return F.pixel_shuffle(self.conv(x), 2)
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class G(nn.Module):
    def __init__(self, res, ch, up, z=100, w=64):
        super().__init__()
        base, n = levels(res)
        width = lambda l: w << (n - 1 - l)
        self.base, self.c0 = base, width(0)
        self.proj = nn.Linear(z, width(0) * base * base)
        self.norm0 = nn.BatchNorm2d(width(0))
        self.ups = nn.ModuleList()
        self.norms = nn.ModuleList()
        for l in range(n):
            last = l + 1 == n
            cout = ch if last else width(l + 1)
            self.ups.append(Up(up, width(l), cout))
            if not last:
                self.norms.append(nn.BatchNorm2d(cout))

    def forward(self, z):
        x = F.relu(self.norm0(self.proj(z).view(z.shape[0], self.c0, self.base, self.base)))
        for i, up in enumerate(self.ups):
            x = up(x)
            x = F.relu(self.norms[i](x)) if i < len(self.norms) else torch.tanh(x)
        return x


class D(nn.Module):
    def __init__(self, res, ch, w=64):
        super().__init__()
        base, n = levels(res)
        layers, cin = [], ch
        for l in range(n):
            cout = w << l
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1))
            if l > 0:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2))
            cin = cout
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin * base * base, 1)

    def forward(self, x):
        return self.head(self.body(x).flatten(1)).squeeze(1)


def times_ms(fn, reps, sync):
    """`fn` timed `reps` times after one warm-up call, fastest first."""
    fn()
    sync()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        ts.append((time.perf_counter() - t) * 1e3)
    return sorted(ts)


def median_ms(fn, reps, sync):
    ts = times_ms(fn, reps, sync)
    return ts[len(ts) // 2]


def training_step(g, d, res, device):
    """The benchmarked step, as a function: D on an all-real and an all-fake
    batch of 64, then G through the frozen D; Adam for both."""
    ch = 1 if res == 28 else 3
    g.train()
    og = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    real = torch.rand(64, ch, res, res, device=device) * 2 - 1
    ones, zeros = torch.ones(64, device=device), torch.zeros(64, device=device)

    def step():
        od.zero_grad(set_to_none=True)
        fake = g(torch.randn(64, 100, device=device)).detach()
        loss_d = F.binary_cross_entropy_with_logits(d(real), ones) + F.binary_cross_entropy_with_logits(d(fake), zeros)
        loss_d.backward()
        od.step()
        og.zero_grad(set_to_none=True)
        for p in d.parameters():
            p.requires_grad_(False)
        loss_g = F.binary_cross_entropy_with_logits(d(g(torch.randn(64, 100, device=device))), ones)
        loss_g.backward()
        for p in d.parameters():
            p.requires_grad_(True)
        og.step()
        loss_d.item(), loss_g.item()

    return step


def profile(res, up, device, steps=5):
    """PyTorch's profiler over `steps` training steps (after 3 unrecorded),
    per op and input shapes: the layer-by-layer counterpart of `ganscope
    bench --ops`. Times are totals over the steps."""
    from torch.profiler import profile as torch_profile
    ch = 1 if res == 28 else 3
    step = training_step(G(res, ch, up).to(device), D(res, ch).to(device), res, device)
    for _ in range(3):
        step()
    with torch_profile(record_shapes=True) as p:
        for _ in range(steps):
            step()
    print(f"{steps} steps of dcgan{res}-{up}; times are totals over them")
    print(p.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=40))


def bench(res, up, device, quick):
    ch = 1 if res == 28 else 3
    g, d = G(res, ch, up).to(device), D(res, ch).to(device)
    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    g.eval()
    with torch.no_grad():
        z1, z64 = torch.randn(1, 100, device=device), torch.randn(64, 100, device=device)
        g1 = median_ms(lambda: g(z1).sum().item(), 10 if quick else 50, sync)
        g64 = median_ms(lambda: g(z64).sum().item(), 2 if quick else 5, sync)
    step = training_step(g, d, res, device)
    step_ms = median_ms(step, 2 if quick else 5, sync)
    return {"name": f"dcgan{res}-{up}", "resolution": res, "upsample": up, "g_batch1_ms": g1,
            "g_batch64_ms": g64, "train_images_per_sec": 64 / (step_ms / 1e3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--resolutions", default="28,32,64")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--tf32", action="store_true", help="CUDA: TF32 matmuls and convolutions")
    ap.add_argument("--profile", metavar="UPSAMPLE",
                    help="instead: PyTorch's profiler over training steps of this kind at each resolution")
    a = ap.parse_args()
    # PyTorch lets cuDNN convolutions use TF32 by default; f32 means f32 here,
    # as in ganscope, unless --tf32 asks for it on both.
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.profile:
        for res in [int(r) for r in a.resolutions.split(",")]:
            profile(res, a.profile, a.device)
        return
    n = 1024
    x, y = torch.randn(n, n, device=a.device), torch.randn(n, n, device=a.device)
    sync = (lambda: torch.cuda.synchronize()) if a.device == "cuda" else (lambda: None)
    # The fastest of 10, as `ganscope bench`: a ceiling is the best the machine does.
    ms = times_ms(lambda: (x @ y), 10, sync)[0]
    report = {"backend": f"pytorch-{torch.__version__}", "tf32": a.tf32, "threads": torch.get_num_threads(),
              "matmul_gflops": 2 * n ** 3 / (ms / 1e3) / 1e9, "archs": []}
    for res in [int(r) for r in a.resolutions.split(",")]:
        for up in ["conv_transpose", "pixel_shuffle", "nearest_conv"]:
            r = bench(res, up, a.device, a.quick)
            print(f"{r['name']:<26} G b1 {r['g_batch1_ms']:7.2f} ms  G b64 {r['g_batch64_ms']:8.1f} ms  "
                  f"train {r['train_images_per_sec']:7.1f} img/s", file=sys.stderr)
            report["archs"].append(r)
    if a.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
