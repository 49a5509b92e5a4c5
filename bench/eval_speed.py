"""phfa's evaluation vs cityscapesScripts on the same 2048x1024 label-id pairs, one run.

    .venv/bin/python bench/eval_speed.py [--n 50] [--repeat 2] [--labels both|random|toytown] [--toytown DIR]

Two kinds of ground truth / prediction pairs, each written as Cityscapes labelIds PNGs
(ground truth) and label-id predictions into a temp folder:

  random   per-pixel noise labels and predictions (the worst case for PNG decoding and for
           counting, but no segmentation looks like that);
  toytown  real-like label maps: the Cityscapes-layout val labels of a toytown (generated with
           `phfa data synth --seed 0 --count cityscapes_val=N ...` unless --toytown DIR is
           given) upscaled nearest to 2048x1024; the prediction is the same map shifted by a
           few pixels, with sidewalk->road and terrain->vegetation confusions on every other
           image and every pixel predicted (as a network does).

For each kind it times cityscapesScripts' evaluateImgLists and `phfa eval`'s
evaluate_folder (pred-format labelid) alternately, best of --repeat, and prints wall and CPU
seconds (process time, all threads: the fair figure on a shared machine), the ratios and
both mIoUs.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import classes as C
from pipeline.data import formats, pngio
from pipeline.data.dataconfig import load_data_config
from pipeline.stages.evaluate import evaluate_folder

_TID = {n: i for i, n in enumerate(C.CLASS_NAMES)}


def random_pairs(n: int, w: int, h: int, seed: int = 0):
    ids = np.array([l.id for l in C.LABELS], np.uint8)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield ids[rng.integers(0, len(ids), (h, w))], C.TRAIN_ID_TO_LABEL_ID[rng.integers(0, 19, (h, w))]


def toytown_gt(toytown: Path, n: int) -> list[Path]:
    spec = load_data_config(toytown / "phfa-data.toml").domain("cityscapes")
    labels = [s.label for s in formats.list_samples(spec.format, spec.root, "val") if s.label is not None]
    if not labels:
        raise SystemExit(f"{toytown}: no labelled cityscapes/val images")
    return [labels[i % len(labels)] for i in range(n)]


def toytown_pairs(toytown: Path, n: int, w: int, h: int):
    """(gt label ids, predicted label ids) at w x h from toytown's val labels (see module doc)."""
    lut = formats.id_lut("cityscapes")
    confuse = np.arange(256, dtype=np.uint8)
    confuse[_TID["sidewalk"]] = _TID["road"]
    confuse[_TID["terrain"]] = _TID["vegetation"]
    for i, p in enumerate(toytown_gt(toytown, n)):
        gt = np.asarray(Image.fromarray(pngio.read_index(p)).resize((w, h), Image.NEAREST))
        tid = lut[gt]
        tid = np.where(tid == C.IGNORE, _TID["road"], tid).astype(np.uint8)  # a network labels every pixel
        pred = np.roll(tid, (h // 170, -(w // 200)), axis=(0, 1))
        if i % 2:
            pred = confuse[pred]
        yield gt, C.TRAIN_ID_TO_LABEL_ID[pred]


def run_kind(pairs, n: int, repeat: int, tmp: Path, ev, workers: int | None) -> dict:
    gts, preds = [], []
    for i, (gt, pr) in enumerate(pairs):
        name = f"bench_{i:06d}_000019"
        g = tmp / "cs" / "gtFine" / "val" / "bench" / f"{name}_gtFine_labelIds.png"
        pngio.write_png(g, gt)
        pngio.write_png(tmp / "cs" / "leftImg8bit" / "val" / "bench" / f"{name}_leftImg8bit.png",
                        np.zeros((8, 8, 3), np.uint8))
        p = tmp / "pred" / f"{name}_leftImg8bit.png"
        pngio.write_png(p, pr)
        gts.append(str(g))
        preds.append(str(p))
    (tmp / "d.toml").write_text('[domains.cityscapes]\nformat = "cityscapes"\nroot = "cs"\n')
    cfg = load_data_config(tmp / "d.toml")
    t_cs, t_phfa, c_cs, c_phfa = [], [], [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        cs = 100 * ev.evaluateImgLists(preds, gts, ev.args)["averageScoreClasses"]
        t_cs.append(time.perf_counter() - t0)
        c_cs.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        m = evaluate_folder(cfg, "cityscapes", "val", tmp / "pred", pred_format="labelid", workers=workers)
        t_phfa.append(time.perf_counter() - t0)
        c_phfa.append(time.process_time() - c0)
    mb = sum(os.path.getsize(x) for x in gts + preds) / 2**20
    return {"n": n, "cityscapesscripts_s": min(t_cs), "phfa_s": min(t_phfa), "miou_cityscapesscripts": cs,
            "miou_phfa": m["miou"], "speedup": min(t_cs) / min(t_phfa), "png_mib": mb,
            "cityscapesscripts_cpu_s": min(c_cs), "phfa_cpu_s": min(c_phfa)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--size", default="2048x1024")
    ap.add_argument("--labels", choices=("both", "random", "toytown"), default="both")
    ap.add_argument("--toytown", type=Path, default=None, help="existing toytown folder (default: generate one)")
    ap.add_argument("--workers", type=int, default=None, help="phfa decoding threads (default: cores, at most 8)")
    a = ap.parse_args()
    w, h = map(int, a.size.split("x"))
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev
    ev.args.evalInstLevelScore = False  # instance scoring crashes on numpy >= 2.4 and is not mIoU
    ev.args.JSONOutput = False
    ev.args.quiet = True
    kinds = ("random", "toytown") if a.labels == "both" else (a.labels,)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        toytown = a.toytown
        if "toytown" in kinds and toytown is None:
            from pipeline.data import toytown as tt
            toytown = tmp / "toytown"
            t0 = time.perf_counter()
            tt.generate(toytown, seed=0, counts={"gta5": 2, "unity": 2, "cityscapes_train": 30,
                                                 "cityscapes_val": a.n})
            print(f"generated toytown (seed 0, {a.n} val images) in {time.perf_counter() - t0:.1f} s")
        for kind in kinds:
            pairs = random_pairs(a.n, w, h) if kind == "random" else toytown_pairs(toytown, a.n, w, h)
            res[kind] = run_kind(pairs, a.n, a.repeat, tmp / kind, ev, a.workers)
    csupport = "C extension" if ev.CSUPPORT else "pure-Python fallback (its C extension is not built)"
    print(f"{a.n} pairs {w}x{h}, best of {a.repeat}, {os.cpu_count()} CPU cores; cityscapesScripts: {csupport}")
    for kind, r in res.items():
        print(f"[{kind}] ({r['png_mib']:.0f} MiB of PNGs)")
        print(f"  cityscapesScripts: {r['cityscapesscripts_s']:7.2f} s wall {r['cityscapesscripts_cpu_s']:7.2f} s CPU"
              f"  mIoU {r['miou_cityscapesscripts']:.6f}")
        print(f"  phfa eval:         {r['phfa_s']:7.2f} s wall {r['phfa_cpu_s']:7.2f} s CPU  mIoU {r['miou_phfa']:.6f}")
        print(f"  speed-up: {r['speedup']:.1f}x wall, {r['cityscapesscripts_cpu_s'] / r['phfa_cpu_s']:.1f}x CPU   "
              f"|mIoU diff| = {abs(r['miou_cityscapesscripts'] - r['miou_phfa']):.2e}")


if __name__ == "__main__":
    main()
