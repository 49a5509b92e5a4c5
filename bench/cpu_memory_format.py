"""Training-step time on the CPU, NCHW against channels_last, measured side by side in one run.

    .venv/bin/python bench/cpu_memory_format.py [--backbones effnet-lite0-s5 resnet18-l3] [--threads 1] [--iters 10] [--smoke]

For each backbone: the toy preset's training step (DeepLab-v2 head, batch 4 at 256x128, AdamW,
forward + backward + step) timed in the default layout and in channels_last, alternating
(A B A B) so that drift of a noisy machine falls on both; prints seconds per iteration, the
ratio, and the largest relative difference of one forward pass between the two layouts (the same maths,
other kernels). Training on the CPU uses channels_last under `--precision auto` since 2026-12-06
(pipeline/inference.py `use_channels_last`) because of what this measured; `--precision fp32`
keeps the contiguous layout.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from pipeline.models.deeplab import build_deeplab


def step_time(backbone: str, channels_last: bool, iters: int, warmup: int = 3) -> float:
    """Mean seconds of one training step after `warmup` untimed steps."""
    torch.manual_seed(0)
    model = build_deeplab(backbone, 19).train()
    x = torch.randn(4, 3, 128, 256)
    y = torch.randint(0, 19, (4, 16, 32))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for i in range(warmup + iters):
        if i == warmup:
            t0 = time.perf_counter()
        _, logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / iters


def forward_difference(backbone: str) -> float:
    """Largest |logit difference| of one eval-mode forward pass, NCHW against channels_last, relative
    to the largest |logit| (a randomly initialised network's logits can be tiny)."""
    torch.manual_seed(0)
    model = build_deeplab(backbone, 19).eval()
    x = torch.randn(2, 3, 128, 256)
    with torch.no_grad():
        a = model(x)[1]
        model = model.to(memory_format=torch.channels_last)
        b = model(x.contiguous(memory_format=torch.channels_last))[1]
    return ((a - b).abs().max() / a.abs().max()).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["effnet-lite0-s5", "resnet18-l3"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the chain runs 1 or 2)")
    ap.add_argument("--iters", type=int, default=10, help="timed steps per measurement")
    ap.add_argument("--rounds", type=int, default=2, help="A/B rounds per backbone")
    ap.add_argument("--smoke", action="store_true", help="one step, one round (the test suite's check)")
    args = ap.parse_args()
    if args.smoke:
        args.iters, args.rounds = 1, 1
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch 4 at 256x128, {args.iters} steps x {args.rounds} rounds")
    for backbone in args.backbones:
        nchw, cl = [], []
        for _ in range(args.rounds):
            nchw.append(step_time(backbone, False, args.iters))
            cl.append(step_time(backbone, True, args.iters))
        a, b = statistics.mean(nchw), statistics.mean(cl)
        print(f"{backbone:18s} NCHW {a:.3f} s/it   channels_last {b:.3f} s/it   speed-up x{a / b:.2f}   "
              f"forward difference (relative) {forward_difference(backbone):.1e}")


if __name__ == "__main__":
    main()
