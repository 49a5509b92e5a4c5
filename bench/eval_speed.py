"""phfa's evaluation vs cityscapesScripts on the same random 2048x1024 label-id pairs, one run.

    .venv/bin/python bench/eval_speed.py [--n 50] [--repeat 2]

Writes N random ground-truth labelIds (Cityscapes layout) and N random label-id
predictions to a temp folder, then times cityscapesScripts' evaluateImgLists and
`phfa eval`'s evaluate_folder (pred-format labelid) alternately, best of --repeat, and
prints both times, the ratio and both mIoUs.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import classes as C
from pipeline.data import pngio
from pipeline.data.dataconfig import load_data_config
from pipeline.stages.evaluate import evaluate_folder


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--size", default="2048x1024")
    a = ap.parse_args()
    w, h = map(int, a.size.split("x"))
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev
    ev.args.evalInstLevelScore = False  # instance scoring crashes on numpy >= 2.4 and is not mIoU
    ev.args.JSONOutput = False
    ev.args.quiet = True
    ids = np.array([l.id for l in C.LABELS], np.uint8)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gts, preds = [], []
        for i in range(a.n):
            name = f"bench_{i:06d}_000019"
            gt = tmp / "cs" / "gtFine" / "val" / "bench" / f"{name}_gtFine_labelIds.png"
            pngio.write_png(gt, ids[rng.integers(0, len(ids), (h, w))])
            pngio.write_png(tmp / "cs" / "leftImg8bit" / "val" / "bench" / f"{name}_leftImg8bit.png",
                            np.zeros((8, 8, 3), np.uint8))
            pr = tmp / "pred" / f"{name}_leftImg8bit.png"
            pngio.write_png(pr, C.TRAIN_ID_TO_LABEL_ID[rng.integers(0, 19, (h, w))])
            gts.append(str(gt))
            preds.append(str(pr))
        (tmp / "d.toml").write_text('[domains.cityscapes]\nformat = "cityscapes"\nroot = "cs"\n')
        cfg = load_data_config(tmp / "d.toml")
        t_cs, t_phfa = [], []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            cs = 100 * ev.evaluateImgLists(preds, gts, ev.args)["averageScoreClasses"]
            t_cs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            m = evaluate_folder(cfg, "cityscapes", "val", tmp / "pred", pred_format="labelid")
            t_phfa.append(time.perf_counter() - t0)
    tc, tp = min(t_cs), min(t_phfa)
    print(f"{a.n} pairs {w}x{h}, best of {a.repeat}")
    print(f"cityscapesScripts: {tc:7.2f} s  mIoU {cs:.6f}")
    print(f"phfa eval:         {tp:7.2f} s  mIoU {m['miou']:.6f}")
    print(f"speed-up: {tc / tp:.1f}x   |mIoU diff| = {abs(cs - m['miou']):.2e}")


if __name__ == "__main__":
    main()
