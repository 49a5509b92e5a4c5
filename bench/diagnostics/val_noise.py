"""Is a spread between training seeds the models or the val split? Bootstrap the val images.

    .venv/bin/python bench/diagnostics/val_noise.py --config T/phfa-data.toml \
        --runs runs/calib-g-more/s3 runs/calib-g-more/s4 runs/calib-g-more/s5

For each run's stage (default: source-only, `adapt-noadv-nohier`) it evaluates final.pt on the
target val split as `phfa eval` does, keeping each image's confusion matrix, and resamples the
images with replacement (`--boot` times): the standard deviation of mIoU over those resamples is
how much that one model's figure would move with another val split of the same size. Then it
compares the spread between the runs (sample std of their mIoU) with that val noise:

    model spread = sqrt(max(0, between-run variance - mean val-noise variance))

and prints the between-run std one would expect with a val split `--scale` times larger. If the
val noise is most of the spread, enlarge the val split; if it is a small part, the spread is the
models' own and a larger val split will not narrow it. A diagnostic, not a method stage.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from pipeline import metrics
from pipeline.data.dataconfig import load_data_config
from pipeline.inference import evaluate
from pipeline.models.segmentor import load_segmentor
from pipeline.runtime import layout


def bootstrap_miou(confs: np.ndarray, boot: int, seed: int = 0) -> np.ndarray:
    """mIoU (19 classes, %) of `boot` resamples, with replacement, of the images whose confusion
    matrices are stacked in `confs` [N, 19, 20]: each resample's matrix is the count-weighted sum."""
    n = len(confs)
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=boot)   # [boot, N]
    sums = (counts @ confs.reshape(n, -1)).reshape(boot, *confs.shape[1:])
    return np.array([metrics.summarize(c)["miou"] for c in sums])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", required=True, help="run folders, one per training seed")
    ap.add_argument("--config", required=True, help="the toytown's phfa-data.toml")
    ap.add_argument("--stage", default="adapt-noadv-nohier")
    ap.add_argument("--domain", default="cityscapes")
    ap.add_argument("--split", default="val")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--scale", type=float, default=4.0, help="a val split this many times larger")
    a = ap.parse_args()
    spec = load_data_config(a.config).domain(a.domain)
    dev = torch.device("cpu")
    print(f"{'run':40s} {'mIoU':>7s} {'val noise (boot std)':>21s}   ({a.domain}/{a.split}, stage {a.stage})")
    mious, noise = [], []
    for run in a.runs:
        model, ck = load_segmentor(Path(run) / a.stage / layout.FINAL)
        per_image: list = []
        conf = evaluate(model, spec, a.split, tuple(ck["config"]["target_size"]), dev, per_image=per_image)
        mious.append(metrics.summarize(conf)["miou"])
        noise.append(float(bootstrap_miou(np.stack(per_image), a.boot).std(ddof=1)))
        print(f"{run:40s} {mious[-1]:7.2f} {noise[-1]:21.2f}", flush=True)
    if len(mious) < 2:
        return
    between = float(np.std(mious, ddof=1))
    val_var = float(np.mean(np.square(noise)))
    model = math.sqrt(max(0.0, between ** 2 - val_var))
    print(f"between runs: mean {np.mean(mious):.2f}, std {between:.2f}; val noise {math.sqrt(val_var):.2f}; "
          f"model spread {model:.2f}; expected std with a val split x{a.scale:g}: "
          f"{math.sqrt(model ** 2 + val_var / a.scale):.2f}")


if __name__ == "__main__":
    main()
