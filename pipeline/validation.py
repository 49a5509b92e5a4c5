"""Periodic validation during training (`val_every`): every `val_every` stage steps the target's
labelled val split is evaluated (the same mIoU as `phfa eval`, Eq. 12), the mIoU goes to
TensorBoard (`val/mIoU`) and to metrics.jsonl (a row `{"phase", "iter", "val": {"miou", "step",
"images"}}`), a few target-val images are shown (image | prediction | ground truth), and the
weights of the best validation so far are kept as best.pt (final.pt's format, so `predict` and
`eval` load it), its stage step and mIoU recorded in the manifest (`best`) and in last.pt.

Which checkpoint counts: final.pt, always. Every later stage (pseudolabel, retrain, translate's
`--seg-from`), `phfa eval`, `predict` and `report` use final.pt, the last iterate, as the paper's
protocol does: choosing weights by target-val mIoU would choose on the split the results are
reported on. best.pt is for looking (a curve that peaked early) and is used only when asked for,
e.g. `phfa predict --checkpoint RUN/STAGE/best.pt`.

Validation never changes training: rank 0 runs it under torch.no_grad with the model in eval mode
(BatchNorm uses and keeps its running statistics) and puts back the model's mode afterwards, it
draws no random numbers, and it reads the val images itself, never through the training datasets
or their caches; a stage trained with it has the same final weights as one trained without it,
and a resumed one equals a straight one (tests/test_tensorboard.py). It validates the model's
current weights: with `weight_average` on, a phase's last validation sees its last weights, not
their average. The other ranks of a multi-process run wait for rank 0 at their next step.

Cost: one validation on the toy preset (toytown's 150 val images at 256x128, EfficientNet-Lite0-s5)
took 5.7-6.3 s on one CPU thread, where an adaptation iteration took 2.1-2.2 s: about 3 iterations,
so the toy preset validates every 250 steps (about 1% of a stage). The paper preset leaves it off;
`--set val_every=5000` adds 24 validations of the 500 Cityscapes val images to a 120,000-step stage.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from pipeline import classes as C
from pipeline import inference
from pipeline import metrics as M
from pipeline.config import TrainConfig
from pipeline.data import datasets
from pipeline.data.dataconfig import DomainSpec
from pipeline.errors import PhfaError
from pipeline.models import segmentor
from pipeline.runtime import checkpoint, layout
from pipeline.runtime.loop import append_jsonl
from pipeline.runtime.progress import Reporter
from pipeline.runtime.tensorboard import Board

SHOWN = 2   # target-val images shown at each validation, the split's first by name


def labelled_split(spec: DomainSpec, split: str = "val") -> list | None:
    """The split's samples when it exists and every one has a label, else None."""
    try:
        items = datasets.samples(spec, split)
    except PhfaError:
        return None
    if not items or any(s.label is None for s in items):
        return None
    return items


def panel(image: np.ndarray, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """image | prediction | ground truth side by side (colours of the Cityscapes palette, ignore
    black), at the image's size, 2 white pixels apart."""
    h, w = image.shape[:2]

    def fit(ids: np.ndarray) -> np.ndarray:
        if ids.shape != (h, w):
            ids = np.asarray(Image.fromarray(ids.astype(np.uint8)).resize((w, h), Image.NEAREST))
        return C.colorize(ids.astype(np.uint8))
    gap = np.full((h, 2, 3), 255, np.uint8)
    return np.concatenate([image, gap, fit(pred), gap, fit(gt)], 1)


class Validator:
    """Target-val validation every `cfg.val_every` stage steps, on rank 0 (see the module's text).
    `extra`: the metadata best.pt stores beside the weights (as final.pt does); `best`: the record
    a resumed stage had; `on_best(record)` is called at each new best (the runner writes the manifest)."""

    def __init__(self, model: torch.nn.Module, spec: DomainSpec, cfg: TrainConfig, device: torch.device, out: Path,
                 board: Board | None, reporter: Reporter, extra: dict, best: dict | None = None,
                 on_best: Callable[[dict], None] | None = None):
        self.model, self.spec, self.cfg, self.device, self.out = model, spec, cfg, device, Path(out)
        self.board, self.reporter, self.extra, self.on_best = board, reporter, extra, on_best
        self.best = dict(best) if best else None
        self.images = len(datasets.samples(spec, "val"))
        self.bf16 = inference.use_bf16(cfg.precision, device)

    def state(self) -> dict | None:
        """The best record so far, {"iter": stage step, "miou", "phase"}: saved in last.pt."""
        return dict(self.best) if self.best else None

    def hook(self, offset: int, phase: str) -> Callable[[int], None]:
        """The loop's `after_step` for a phase starting at stage step `offset`."""
        def after(it: int) -> None:
            if (offset + it) % self.cfg.val_every == 0:
                self.validate(offset + it, phase, it)
        return after

    def validate(self, step: int, phase: str, it: int) -> float:
        t0 = time.time()
        shown: list[tuple[str, np.ndarray]] = []

        def show(i, s, image, pred, gt):
            if i < SHOWN:
                shown.append((s.name, panel(image, pred.cpu().numpy(), gt)))
        conf = inference.evaluate(self.model, self.spec, "val", self.cfg.target_size, self.device, self.bf16,
                                  on_image=show)
        miou = M.summarize(conf, C.NUM_CLASSES)["miou"]
        if self.board is not None:
            self.board.scalars(step, {"mIoU": miou}, prefix="val/")
            for name, im in shown:
                self.board.image(f"val/{name}", im, step)
        append_jsonl(self.out / layout.METRIC_ROWS,
                     {"phase": phase, "iter": it, "val": {"miou": miou, "step": step, "images": self.images}})
        if math.isfinite(miou) and (self.best is None or miou > self.best["miou"]):
            rec = {"iter": step, "miou": miou, "phase": phase}
            checkpoint.save(self.out / layout.BEST,
                            segmentor.payload(self.model, self.cfg, {**self.extra, "best": rec}))
            self.best = rec
            if self.on_best is not None:
                self.on_best(dict(rec))
        b = self.best
        self.reporter.message(f"[val] step {step}: {self.spec.name} val mIoU {miou:.2f}"
                              + (f" (best {b['miou']:.2f} at step {b['iter']})" if b else "")
                              + f", {time.time() - t0:.1f} s")
        return miou


def periodic(model: torch.nn.Module, spec: DomainSpec, cfg: TrainConfig, device: torch.device, out: Path,
             board: Board | None, reporter: Reporter, extra: dict, best: dict | None = None,
             on_best: Callable[[dict], None] | None = None) -> Validator | None:
    """A Validator when `val_every` asks for one and the target's val split is labelled, else None
    (said on the reporter when it was asked for)."""
    if cfg.val_every <= 0:
        return None
    if labelled_split(spec) is None:
        reporter.message(f"val_every {cfg.val_every}: domain '{spec.name}' has no labelled val split; "
                         "no periodic validation")
        return None
    return Validator(model, spec, cfg, device, out, board, reporter, extra, best, on_best)
