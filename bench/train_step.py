"""Adapt-step speed and memory at paper sizes, side by side in one run.

    .venv/bin/python bench/train_step.py [--steps 30] [--warmup 10] [--backbone resnet101]   # CUDA
    .venv/bin/python bench/train_step.py --cpu [--steps 2] [--warmup 1]                      # CPU

(a) an AdaptSegNet-style step (source CE + target adversarial + D) in fp32 with PyTorch's
    default settings, and (b) phfa's full adapt step (adversarial + object/category/background
    hierarchy) with phfa's defaults on CUDA (bf16 autocast + channels_last); on the CPU both in
    contiguous fp32, so the ratio is what the hierarchy costs beside the same backbone step.
    Both run through the same `pipeline.train.train_step` on random data: DeepLab-v2, source
    1280x720 + target 1024x512, batch 1. Prints seconds per step, peak memory
    and the ratio b/a. CUDA: both in this process, peak = torch's allocator peak. `--cpu`: each
    side in its own child process (a, then b), peak = the child's peak resident set size, so the
    two peaks do not mix; the paper size on a laptop-class CPU takes tens of seconds a step.
    Without CUDA and without --cpu it says so and exits 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import subprocess
import sys
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--backbone", default="resnet101")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks the code path only")
    ap.add_argument("--cpu", action="store_true", help="measure on the CPU, each side in a child process")
    ap.add_argument("--child", choices=["a", "b"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.cpu and a.child is None:
        return cpu_side_by_side(a)
    if not torch.cuda.is_available() and not (a.smoke or a.cpu):
        print("bench/train_step.py needs a CUDA GPU (none found; --cpu measures on the CPU); nothing measured.")
        return
    from pipeline import train
    from pipeline.config import preset
    from pipeline.models.deeplab import build_deeplab
    from pipeline.models.discriminator import OutputDiscriminator

    dev = torch.device("cpu" if a.smoke or a.cpu else "cuda")
    torch.backends.cudnn.benchmark = True
    base = dataclasses.replace(preset("paper"), backbone=a.backbone, pretrained="none")
    if a.smoke:
        base = dataclasses.replace(base, backbone="resnet18", source_size=(64, 32), target_size=(64, 32))
        a.steps, a.warmup = 1, 1
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    peak_mem = (lambda: torch.cuda.max_memory_allocated() / 2**30) if dev.type == "cuda" else (lambda: float("nan"))

    def stream(w, h):
        x = torch.randn(1, 3, h, w, device=dev)
        y = torch.randint(0, 19, (1, h, w), device=dev)
        y[:, : h // 4] = 255
        while True:
            yield x, y, ["x"]

    def measure(cfg, phase, bf16):
        torch.manual_seed(0)
        model = build_deeplab(cfg.backbone, 19, "none", cfg.bn).to(dev)
        if bf16:
            model = model.to(memory_format=torch.channels_last)
        # D, optimisers and the per-level feature memories exactly as the training loop builds them
        D = OutputDiscriminator(19, ndf=cfg.d_ndf).to(dev)
        opt = train.make_optimizer(cfg, model)
        opt_d = train.make_d_optimizer(cfg, D)
        mem = train.hierarchy_memory(cfg, phase.align, model.feature_dim, dev)
        src, tgt = stream(*cfg.source_size), stream(*cfg.target_size)
        for i in range(a.warmup):
            train.train_step(cfg, model, D, opt, opt_d, mem, phase, src, tgt, dev, bf16)
        sync()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for i in range(a.steps):
            train.train_step(cfg, model, D, opt, opt_d, mem, phase, src, tgt, dev, bf16)
        sync()
        ms = (time.perf_counter() - t0) / a.steps * 1000
        peak = peak_mem()
        del model, D, opt, opt_d, mem
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        return ms, peak

    iters = a.warmup + a.steps + 1
    pa = train.Phase("a", "s", iters, adversarial=True, align=())
    pb = train.Phase("b", "s", iters, adversarial=True, align=("object", "category", "background"))
    cfg_a = dataclasses.replace(base, precision="fp32")
    if a.child is not None:  # one side of --cpu, in its own process: both in contiguous fp32 (phfa's
        # CPU default, channels_last, would feed channels-last images to a contiguous model here)
        ms, _ = measure(cfg_a, pa, bf16=False) if a.child == "a" else measure(cfg_a, pb, bf16=False)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps({"ms": ms, "peak_gib": peak, "threads": torch.get_num_threads()}))
        return
    ms_a, mem_a = measure(cfg_a, pa, bf16=False)
    ms_b, mem_b = measure(base, pb, bf16=train.use_bf16(base.precision, dev))
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (smoke)"
    print(f"device: {name}  torch {torch.__version__}  {base.backbone} "
          f"src {base.source_size[0]}x{base.source_size[1]} tgt {base.target_size[0]}x{base.target_size[1]} batch 1")
    print(f"(a) AdaptSegNet-style, fp32 defaults:       {ms_a:7.1f} ms/step  peak {mem_a:5.2f} GiB")
    print(f"(b) phfa full adapt step (adv + hierarchy): {ms_b:7.1f} ms/step  peak {mem_b:5.2f} GiB")
    print(f"ratio b/a: time {ms_b / ms_a:.2f}  memory {mem_b / mem_a:.2f}")


def cpu_side_by_side(a) -> None:
    """(a) then (b), each in a child process; one table with the ratio."""
    if a.smoke:
        a.steps, a.warmup = 1, 1
    out = {}
    for side in ("a", "b"):
        cmd = [sys.executable, __file__, "--cpu", "--child", side, "--steps", str(a.steps), "--warmup", str(a.warmup),
               "--backbone", a.backbone] + (["--smoke"] if a.smoke else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"side {side} failed:\n{r.stderr[-3000:]}")
        out[side] = json.loads(r.stdout.strip().splitlines()[-1])
    size = "64x32 + 64x32 resnet18 (smoke)" if a.smoke else f"1280x720 + 1024x512 {a.backbone}"
    print(f"device: cpu ({platform.processor() or platform.machine()}, {out['a']['threads']} threads)  torch "
          f"{torch.__version__}  src + tgt {size}, batch 1, fp32; {a.steps} timed steps after {a.warmup} warm-up")
    print(f"(a) AdaptSegNet-style (source CE + adversarial + D): {out['a']['ms'] / 1000:7.2f} s/step  "
          f"peak RSS {out['a']['peak_gib']:5.2f} GiB")
    print(f"(b) phfa full PHFA step (+ object, category, background): {out['b']['ms'] / 1000:7.2f} s/step  "
          f"peak RSS {out['b']['peak_gib']:5.2f} GiB")
    print(f"ratio b/a: time {out['b']['ms'] / out['a']['ms']:.2f}  memory {out['b']['peak_gib'] / out['a']['peak_gib']:.2f}")


if __name__ == "__main__":
    main()
