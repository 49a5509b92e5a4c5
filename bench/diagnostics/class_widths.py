"""How wide each class is at a working resolution: can a model at that size see it at all?

    .venv/bin/python bench/diagnostics/class_widths.py --config data/toytown/phfa-data.toml --domain cityscapes --split train --width 128

Labels are resized (nearest) to the working width. Per class: share of labelled pixels, number of
images containing it, and the median / 90th percentile of its horizontal run widths (pixels on
one row between two other classes). A class whose median run is narrower than the output stride
(8 for DeepLab-v2) occupies less than one feature cell in most places where it occurs.
"""
from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from pipeline import classes as C
from pipeline.data import datasets
from pipeline.data.dataconfig import load_data_config
from pipeline.data.formats import decode_label


def run_widths(mask: np.ndarray) -> np.ndarray:
    """Lengths of the horizontal runs of True in a 2-D boolean mask."""
    pad = np.zeros((mask.shape[0], 1), np.int8)
    d = np.diff(np.concatenate([pad, mask.astype(np.int8), pad], axis=1), axis=1)
    return np.flatnonzero(d.ravel() == -1) - np.flatnonzero(d.ravel() == 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="data/toytown/phfa-data.toml")
    ap.add_argument("--domain", default="cityscapes")
    ap.add_argument("--split", default="train")
    ap.add_argument("--width", type=int, default=128, help="working width in pixels (height keeps the aspect)")
    a = ap.parse_args()
    spec = load_data_config(a.config).domain(a.domain)
    items = [s for s in datasets.samples(spec, a.split) if s.label is not None]
    runs: dict[int, list[np.ndarray]] = {c: [] for c in range(C.NUM_CLASSES)}
    px, imgs = np.zeros(C.NUM_CLASSES), np.zeros(C.NUM_CLASSES, int)
    for s in items:
        y = decode_label(spec.format, s.label).train_ids
        h = max(1, round(y.shape[0] * a.width / y.shape[1]))
        y = np.asarray(Image.fromarray(y).resize((a.width, h), Image.NEAREST))
        for c in np.unique(y):
            if c >= C.NUM_CLASSES:
                continue
            m = y == c
            px[c] += m.sum()
            imgs[c] += 1
            runs[c].append(run_widths(m))
    print(f"{a.domain}/{a.split}: {len(items)} labelled images at width {a.width}")
    print(f"{'class':14s} {'pixels %':>8s} {'images':>6s} {'run median':>10s} {'run p90':>7s}")
    for c in range(C.NUM_CLASSES):
        r = np.concatenate(runs[c]) if runs[c] else np.zeros(1)
        print(f"{C.CLASS_NAMES[c]:14s} {100 * px[c] / max(px.sum(), 1):8.2f} {imgs[c]:6d} "
              f"{np.median(r):10.1f} {np.percentile(r, 90):7.1f}")


if __name__ == "__main__":
    main()
