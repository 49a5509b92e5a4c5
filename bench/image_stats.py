"""How far image-level alignment moves a source towards the target: per-channel pixel statistics.

    .venv/bin/python bench/image_stats.py --run runs/toy --config data/toytown/phfa-data.toml [--source gta5]

Prints the RGB mean and standard deviation (0-1) of the source images, of each translated copy
the run holds (translate-<source>, translate-<source>-fda, ...), and of the run's few-shot target
images, plus the mean absolute pixel change a translation makes. A translation that leaves the
statistics where the source had them, with a change of a few grey levels, is close to identity:
an ablation row built on it measures little image-level alignment, whatever its mIoU.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data import datasets, pngio
from pipeline.data.dataconfig import load_data_config
from pipeline.runtime import layout


def stats(imgs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    px = np.concatenate([im.reshape(-1, 3) for im in imgs]).astype(np.float64) / 255.0
    return px.mean(0), px.std(0)


def fmt(v: np.ndarray) -> str:
    return "(" + ", ".join(f"{x:.3f}" for x in v) + ")"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--source", default="gta5")
    ap.add_argument("--target", default="cityscapes")
    ap.add_argument("--limit", type=int, default=100, help="source images to read")
    a = ap.parse_args()
    run, cfg = Path(a.run), load_data_config(a.config)
    items = datasets.samples(cfg.domain(a.source), "all")[: a.limit]
    src = [pngio.read_rgb(s.image) for s in items]
    names = datasets.few_shot_names(cfg.domain(a.target), 0, layout.few_shot_file(run, a.target))
    tgt = [pngio.read_rgb(s.image) for s in datasets.SegDataset(cfg.domain(a.target), "train", names=names).items]
    print(f"{'images':34s} {'n':>4s}  {'RGB mean':21s}  {'RGB std':21s}  mean |change|")
    m, s = stats(src)
    print(f"{a.source + ' (source)':34s} {len(src):4d}  {fmt(m):21s}  {fmt(s):21s}")
    for d in sorted(run.glob(f"translate-{a.source}*/domain/images")):
        tr = []
        for im, it in zip(src, items):
            p = d / it.image.name
            if p.is_file():
                tr.append((im, pngio.read_rgb(p)))
        if not tr:
            continue
        m, s = stats([t for _, t in tr])
        # the translated image is written at the size adapt reads the source at: compare there
        change = np.mean([np.abs(t.astype(np.float64) - np.asarray(
            Image.fromarray(im).resize((t.shape[1], t.shape[0]), Image.BICUBIC), np.float64)).mean() / 255.0
            for im, t in tr])
        print(f"{d.parent.parent.name:34s} {len(tr):4d}  {fmt(m):21s}  {fmt(s):21s}  {change:.3f}")
    if tgt:
        m, s = stats(tgt)
        print(f"{a.target + ' few-shot (target)':34s} {len(tgt):4d}  {fmt(m):21s}  {fmt(s):21s}")


if __name__ == "__main__":
    main()
