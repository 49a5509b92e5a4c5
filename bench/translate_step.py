"""CycleGAN step speed, bf16 vs fp32, and write throughput (CUDA), side by side in one process.

    .venv/bin/python bench/translate_step.py [--steps 20] [--crop WxH]

Paper-preset CycleGAN (ResNet-9 generators, ngf 64, PatchGAN 64) on random crops (default: the
TranslateConfig crop, 512x256; the paper gives none); prints
ms/step for fp32 and bf16 autocast, their ratio, and images/s when translating
1280x720 images (the write phase). Without CUDA it says so and exits 0.
"""
from __future__ import annotations

import argparse
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--crop", default=None, help="WxH (default: TranslateConfig().crop)")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks the code path only")
    a = ap.parse_args()
    if not torch.cuda.is_available() and not a.smoke:
        print("bench/translate_step.py needs a CUDA GPU (none found); nothing measured.")
        return
    from pipeline.config import TranslateConfig
    from pipeline.models.cyclegan import CycleGAN
    dev = torch.device("cpu" if a.smoke else "cuda")
    torch.backends.cudnn.benchmark = True
    cfg = TranslateConfig()
    w, h = map(int, a.crop.split("x")) if a.crop else cfg.crop
    full = (1280, 720)
    if a.smoke:
        w, h, full, a.steps, a.warmup = 64, 32, (64, 32), 1, 1
        cfg = TranslateConfig(ngf=8, ndf=8, n_blocks=1)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def measure(dtype):
        torch.manual_seed(0)
        gan = CycleGAN(cfg).to(dev)
        og, od = gan.optimizers()
        xa = torch.rand(1, 3, h, w, device=dev) * 2 - 1
        xb = torch.rand(1, 3, h, w, device=dev) * 2 - 1
        for _ in range(a.warmup):
            gan.train_step(xa, xb, og, od, autocast_dtype=dtype)
        sync()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            gan.train_step(xa, xb, og, od, autocast_dtype=dtype)
        sync()
        ms = (time.perf_counter() - t0) / a.steps * 1000
        peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
        x = torch.rand(1, 3, full[1], full[0], device=dev) * 2 - 1
        n = 2 if a.smoke else 20
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            for _ in range(1 if a.smoke else 3):
                gan.translate(x)
            sync()
            t0 = time.perf_counter()
            for _ in range(n):
                gan.translate(x)
            sync()
        ips = n / (time.perf_counter() - t0)
        return ms, peak, ips

    f_ms, f_mem, f_ips = measure(None)
    b_ms, b_mem, b_ips = measure(torch.bfloat16)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (smoke)"
    print(f"device: {name}  crop {w}x{h}, batch 1")
    print(f"fp32: {f_ms:7.1f} ms/step  peak {f_mem:5.2f} GiB  write {f_ips:6.1f} img/s ({full[0]}x{full[1]})")
    print(f"bf16: {b_ms:7.1f} ms/step  peak {b_mem:5.2f} GiB  write {b_ips:6.1f} img/s ({full[0]}x{full[1]})")
    print(f"bf16 step rate / fp32 step rate: {f_ms / b_ms:.2f}x   write: {b_ips / f_ips:.2f}x")


if __name__ == "__main__":
    main()
