"""A picture of what image-level alignment does: rows of source | CycleGAN | FDA | a target image.

    .venv/bin/python bench/diagnostics/translation_grid.py --run runs/ablation/s0 --config data/toytown/phfa-data.toml --out docs/translation-grid.png [--rows 4]

Reads the domains written by `phfa translate` (translate-gta5 and, if the run has it,
translate-gta5-fda; without it the FDA column is left out) and the run's few-shot target list;
images are shown at the size adapt trains at.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data import datasets, pngio
from pipeline.data.dataconfig import load_data_config


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--source", default="gta5")
    ap.add_argument("--target", default="cityscapes")
    ap.add_argument("--rows", type=int, default=4)
    a = ap.parse_args()
    run = Path(a.run)
    cfg = load_data_config(a.config)
    src = cfg.domain(a.source)
    names = [n.strip() for n in (run / f"fewshot-{a.target}.txt").read_text().splitlines() if n and not n.startswith("#")]
    tgt_ds = datasets.SegDataset(cfg.domain(a.target), "train", names=names)
    items = datasets.samples(src, "all")[: a.rows]
    fda_dir = run / f"translate-{a.source}-fda" / "domain" / "images"
    # without an FDA stage the grid drops that column rather than drawing it black
    with_fda = fda_dir.is_dir()
    rows = []
    for i, s in enumerate(items):
        cg = run / f"translate-{a.source}" / "domain" / "images" / s.image.name
        tr = pngio.read_rgb(cg)
        size = (tr.shape[1], tr.shape[0])
        raw = np.asarray(Image.fromarray(pngio.read_rgb(s.image)).resize(size, Image.BICUBIC))
        tg = np.asarray(Image.fromarray(pngio.read_rgb(tgt_ds.items[i % len(tgt_ds)].image)).resize(size, Image.BICUBIC))
        cells = [raw, tr, *([pngio.read_rgb(fda_dir / s.image.name)] if with_fda else []), tg]
        rows.append(np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255) for c in cells], 1))
    grid = np.concatenate(rows, 0)
    grid = np.asarray(Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST))
    pngio.write_png(a.out, grid)
    fda_col = " FDA |" if with_fda else ""
    print(f"wrote {a.out}: columns = {a.source} | CycleGAN (Eq. 7) |{fda_col} a few-shot {a.target} image"
          + ("" if with_fda else f" (no FDA column: {fda_dir.parent.parent} does not exist)"))


if __name__ == "__main__":
    main()
