"""Peak memory of `phfa predict` on one large photo: logits upsampled in bands of rows (what predict
runs) vs the whole frame's logits at once, side by side in one run.

    .venv/bin/python bench/predict_memory.py [--size 8000 6000] [--overlay] [--smoke] [--json]

Each side runs `pipeline.stages.predict.predict` in its own child process on the same PNG (a smooth
gradient, so that writing and decoding it is quick) with the same tiny checkpoint (ResNet-18 DeepLab,
random weights, target_size 256x128: the network's share is negligible beside the photo's). Peak =
the child's peak resident memory (VmHWM, reset through /proc/self/clear_refs after a warm-up predict
on a small image, so first-call allocations are out) minus its resident memory at that moment, in MiB
and in bytes per pixel of the photo.

banded      inference.upsampled_argmax: C x h x W, then bands of rows of ~64 MB (what predict runs)
full frame  the same predict with upsampled_argmax replaced by upsample(logits, H x W).argmax():
            float32 logits of every pixel (C x 4 bytes a pixel) and an int64 argmax
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.runtime import layout  # noqa: E402


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(mode: str, image: str, ckpt: str, out: str, overlay: bool) -> dict:
    import torch

    from pipeline import inference
    from pipeline.stages import predict as P

    torch.set_num_threads(1)
    if mode == "full":
        inference.upsampled_argmax = lambda logits, size, **_: inference.upsample(logits, size).argmax(1)[0].to(torch.uint8)
    from PIL import Image
    warm = Path(out).with_name(Path(out).name + "-warm")
    Image.open(image).resize((64, 48)).save(Path(out).parent / "warm.png")
    P.predict([Path(out).parent / "warm.png"], warm, Path(ckpt), overlay=overlay, workers=1)  # first-call allocations
    Path("/proc/self/clear_refs").write_text("5")   # peak RSS := current RSS
    base = _rss_kib("VmRSS")
    s = P.predict([image], Path(out), Path(ckpt), overlay=overlay, workers=1)
    assert s["written"] == 1, s
    return {"mode": mode, "peak_mib": (_rss_kib("VmHWM") - base) / 1024}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, nargs=2, default=[8000, 6000], metavar=("W", "H"))
    ap.add_argument("--overlay", action="store_true", help="also write the overlay (keeps the photo in memory)")
    ap.add_argument("--smoke", action="store_true", help="a 1200x800 photo: checks the code path only")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    ap.add_argument("--child", nargs=4, metavar=("MODE", "IMAGE", "CKPT", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(*a.child, a.overlay)))
        return
    if a.smoke:
        a.size = [1200, 800]
    import numpy as np
    import torch
    from PIL import Image

    from pipeline import classes as C
    from pipeline.config import preset
    from pipeline.models.deeplab import build_deeplab
    from pipeline.models.segmentor import payload
    from pipeline.runtime import checkpoint

    W, H = a.size
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        cfg = preset("toy")
        cfg.backbone, cfg.target_size, cfg.precision = "resnet18", (256, 128), "fp32"
        checkpoint.save(tmp / layout.FINAL, payload(build_deeplab("resnet18", C.NUM_CLASSES, "none", cfg.bn), cfg, {}))
        x = np.linspace(0, 255, W, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 255, H, dtype=np.float32)[:, None, None]
        img = np.concatenate([np.broadcast_to(x, (H, W, 1)), np.broadcast_to(y, (H, W, 1)),
                              np.broadcast_to((x + y) / 2, (H, W, 1))], 2).astype(np.uint8)
        Image.fromarray(img).save(tmp / "photo.png", compress_level=1)
        del img
        rows = []
        for mode in ("banded", "full"):
            cmd = [sys.executable, __file__, "--child", mode, str(tmp / "photo.png"), str(tmp / layout.FINAL),
                   str(tmp / f"out-{mode}")] + (["--overlay"] if a.overlay else [])
            r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
            if r.returncode != 0:
                raise SystemExit(f"{mode}: {r.stderr[-2000:]}")
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    px = W * H
    for row in rows:
        row["bytes_per_pixel"] = row["peak_mib"] * 2 ** 20 / px
    ratio = rows[0]["peak_mib"] / rows[1]["peak_mib"]
    if a.json:
        print(json.dumps({"size": [W, H], "overlay": a.overlay, "rows": rows, "ratio": ratio}))
        return
    print(f"phfa predict on one {W}x{H} photo ({px / 1e6:.1f} Mpx){' with --overlay' if a.overlay else ''}; "
          "peak resident memory above the state before predict")
    print(f"{'':>11} {'peak MiB':>9} {'bytes/px':>9}")
    for row in rows:
        print(f"{row['mode']:>11} {row['peak_mib']:>9.0f} {row['bytes_per_pixel']:>9.1f}")
    print(f"ratio banded/full frame: {ratio:.2f}")


if __name__ == "__main__":
    main()
