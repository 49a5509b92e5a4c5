"""How far image-level alignment moves a source towards the target, and whether it keeps the labels.

    .venv/bin/python bench/image_stats.py --run runs/toy --config data/toytown/phfa-data.toml
                                          [--source gta5] [--limit 100] [--miou-stage adapt-noadv-nohier]

For the source images, each translated copy the run holds (translate-<source>, translate-<source>-fda,
...) and the run's few-shot target images, prints the RGB mean and standard deviation (0-1), the
mean absolute pixel change a translation makes, and the distance of each image set's colours to the
target's: W1, the 1-D Wasserstein distance between the pixel values of each channel (in grey
levels, averaged over R, G, B). A translation that leaves W1 where the source had it, with a
change of a few grey levels, is close to identity: an ablation row built on it measures little
image-level alignment, whatever its mIoU.

With --miou-stage, the final.pt of that stage of the run (the source-only model, say) labels the
first --limit source images and their translated copies: a translation that keeps the labels
keeps that model's mIoU on them (the translated copies carry the source's labels).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline import classes as C
from pipeline import inference, metrics
from pipeline.config import from_dict
from pipeline.data import datasets, formats, pngio
from pipeline.data.dataconfig import DomainSpec, load_data_config
from pipeline.data.transforms import to_tensor
from pipeline.models.segmentor import load_segmentor
from pipeline.runtime import layout
from pipeline.runtime.run import StageDir

QUANTILES = np.linspace(0.0, 1.0, 201)


def stats(imgs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB mean, RGB std, per-channel quantiles) of the pixels of `imgs`, values in 0-1."""
    px = np.concatenate([im.reshape(-1, 3) for im in imgs]).astype(np.float64) / 255.0
    return px.mean(0), px.std(0), np.quantile(px, QUANTILES, axis=0)


def w1(q: np.ndarray, q_ref: np.ndarray) -> float:
    """1-D Wasserstein distance per channel from quantile functions, averaged over channels, in grey levels."""
    return float(np.abs(q - q_ref).mean() * 255.0)


def fmt(v: np.ndarray) -> str:
    return "(" + ", ".join(f"{x:.3f}" for x in v) + ")"


def miou(model, spec: DomainSpec, items, size) -> float:
    """mIoU (19 classes) of `model` on `items` of `spec`, inputs at `size`, logits at the label's size."""
    conf = torch.zeros(C.NUM_CLASSES, C.NUM_CLASSES + 1, dtype=torch.long)
    for s in items:
        img, _ = datasets.load_pair(spec, s, size, with_label=False)
        gt = formats.decode_label(spec.format, s.label).train_ids
        pred = inference.predict_logits(model, to_tensor(img)[None], gt.shape).argmax(1)[0]
        conf += metrics.confusion_torch(pred, torch.from_numpy(gt))
    return metrics.summarize(conf.numpy(), 19)["miou"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--source", default="gta5")
    ap.add_argument("--target", default="cityscapes")
    ap.add_argument("--limit", type=int, default=100, help="source images to read")
    ap.add_argument("--miou-stage", help="a stage of the run whose final.pt labels source and translated images")
    a = ap.parse_args()
    run, cfg = Path(a.run), load_data_config(a.config)
    src_spec = cfg.domain(a.source)
    items = datasets.samples(src_spec, "all")[: a.limit]
    src = [pngio.read_rgb(s.image) for s in items]
    names = datasets.few_shot_names(cfg.domain(a.target), 0, layout.few_shot_file(run, a.target))
    tgt = [pngio.read_rgb(s.image) for s in datasets.SegDataset(cfg.domain(a.target), "train", names=names).items]
    model = size = None
    if a.miou_stage:
        model, ck = load_segmentor(StageDir(run, a.miou_stage).model("--miou-stage"), "--miou-stage")
        model.eval()
        size = tuple(from_dict(ck["config"]).source_size)
    _, _, q_t = stats(tgt)
    head = f"{'images':34s} {'n':>4s}  {'RGB mean':21s}  {'RGB std':21s}  {'|change|':>8s}  {'W1 to target':>12s}"
    print(head + (f"  mIoU ({a.miou_stage})" if model is not None else ""))
    m, s, q = stats(src)
    row = f"{a.source + ' (source)':34s} {len(src):4d}  {fmt(m):21s}  {fmt(s):21s}  {'':>8s}  {w1(q, q_t):12.1f}"
    print(row + (f"  {miou(model, src_spec, items, size):.2f}" if model is not None else ""), flush=True)
    for d in sorted(run.glob(f"translate-{a.source}*/domain")):
        tr = [(im, pngio.read_rgb(d / it.image.relative_to(src_spec.root))) for im, it in zip(src, items)
              if (d / it.image.relative_to(src_spec.root)).is_file()]
        if not tr:
            continue
        m, s, q = stats([t for _, t in tr])
        # the translated image is written at the size adapt reads the source at: compare there
        change = np.mean([np.abs(t.astype(np.float64) - np.asarray(
            Image.fromarray(im).resize((t.shape[1], t.shape[0]), Image.BICUBIC), np.float64)).mean() / 255.0
            for im, t in tr])
        row = f"{d.parent.name:34s} {len(tr):4d}  {fmt(m):21s}  {fmt(s):21s}  {change:8.3f}  {w1(q, q_t):12.1f}"
        if model is not None:
            spec = DomainSpec(name=d.parent.name, format=src_spec.format, root=d)
            by = {x.name: x for x in datasets.samples(spec, "all")}
            row += f"  {miou(model, spec, [by[it.name] for it in items if it.name in by], size):.2f}"
        print(row, flush=True)
    if tgt:
        m, s, _ = stats(tgt)
        print(f"{a.target + ' few-shot (target)':34s} {len(tgt):4d}  {fmt(m):21s}  {fmt(s):21s}  {'':>8s}  {0.0:12.1f}")


if __name__ == "__main__":
    main()
