"""Evaluation stage (Eq. 12): mIoU of a folder of prediction PNGs, or of a stage's checkpoint.

Folder mode matches predictions to ground truth by sample name, decodes both at the
label's native size, and accumulates a bincount confusion matrix (`pipeline.metrics`).
Predictions smaller (or larger) than their label are resized nearest to it, and the
count is reported. Decoding runs in a thread pool (PNG decoding releases the GIL).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import classes as C
from pipeline import metrics
from pipeline.data import datasets, formats, pngio
from pipeline.data.dataconfig import DataConfig
from pipeline.errors import PhfaError
from pipeline.runtime import layout
from pipeline.runtime.atomic import write_json
from pipeline.runtime.run import StageDir
from pipeline.runtime.runindex import RunIndex
from pipeline.stages.outdir import dataset_roots, open_out

PRED_FORMATS = ("trainid", "labelid")
# name suffixes stripped from prediction file stems before matching them to samples
_SUFFIXES = ("_leftImg8bit", "_gtFine_labelIds", "_labelIds", "_trainIds", "_pred", "_prediction")
_LABELID_LUT = C.lookup_table(C.CITYSCAPES_ID_TO_TRAIN_ID)


def _key(stem: str) -> str:
    for suf in _SUFFIXES:
        if stem.endswith(suf):
            return stem[: -len(suf)]
    return stem


def index_predictions(pred_dir: Path) -> dict[str, Path]:
    if not pred_dir.is_dir():
        raise PhfaError(f"--pred-dir: {pred_dir} is not a folder")
    out: dict[str, Path] = {}
    for p in sorted(pred_dir.rglob("*.png")):
        k = _key(p.stem)
        if k in out:
            raise PhfaError(f"--pred-dir: two predictions for '{k}': {out[k]} and {p}")
        out[k] = p
    return out


def _open_out(cfg: DataConfig, out: Path, names: list[str], save_color: bool, overwrite: bool) -> Path:
    """A user's --out for metrics.json (and color/): see `outdir.open_out`."""
    return open_out(out, names + (["color"] if save_color else []), overwrite=overwrite,
                    protected=dataset_roots(cfg, near=out))


def evaluate_folder(cfg: DataConfig, domain: str, split: str, pred_dir: Path, classes: int = 19,
                    pred_format: str = "trainid", out: Path | None = None, save_color: bool = False,
                    workers: int | None = None, overwrite: bool = False) -> dict:
    if classes not in C.SUBSETS:
        raise PhfaError(f"--classes must be one of {sorted(C.SUBSETS)}, not {classes}")
    if pred_format not in PRED_FORMATS:
        raise PhfaError(f"--pred-format must be one of {', '.join(PRED_FORMATS)}, not '{pred_format}'")
    spec = cfg.domain(domain)
    items = datasets.samples(spec, split)
    unlabelled = [s for s in items if s.label is None]
    if unlabelled:
        raise PhfaError(f"split '{split}' of domain '{domain}' has {len(unlabelled)} image(s) without labels, "
                        f"e.g. {unlabelled[0].image}; evaluate on a labelled split")
    preds = index_predictions(Path(pred_dir))
    missing = [s.name for s in items if s.name not in preds]
    if missing:
        raise PhfaError(f"--pred-dir: no prediction for {len(missing)} of {len(items)} images of "
                        f"{domain}/{split}, e.g. '{missing[0]}' (expected {Path(pred_dir) / missing[0]}.png)")
    if out is not None:
        _open_out(cfg, Path(out), [layout.METRICS], save_color, overwrite)
    color_dir = (Path(out) / "color") if (save_color and out) else None

    gt_lut = formats.id_lut(spec.format)
    gt_valid = formats.valid_ids(spec.format, np.arange(256))
    pred_lut = _LABELID_LUT if pred_format == "labelid" else np.arange(256, dtype=np.uint8)

    def one(s: formats.Sample):
        gt = formats.read_label_ids(spec.format, s.label)
        pred = pngio.read_prediction(preds[s.name])
        resized = 0
        if pred.shape != gt.shape:
            resized = 1
            pred = np.asarray(Image.fromarray(pred).resize((gt.shape[1], gt.shape[0]), Image.NEAREST))
        if color_dir is not None:
            pngio.write_png(color_dir / f"{s.name}.png", C.colorize(pred_lut[pred]))
        if gt.dtype == np.uint8:
            conf, unknown = metrics.confusion_from_ids(gt, pred, gt_lut, pred_lut, gt_valid=gt_valid)
        else:  # 16-bit SYNTHIA ids: map first
            conf = metrics.confusion(pred_lut[pred], gt_lut[gt])
            unknown = int(gt.size - np.count_nonzero(formats.valid_ids(spec.format, gt)))
        return conf, resized, unknown

    conf = np.zeros((C.NUM_CLASSES, C.NUM_CLASSES + 1), np.int64)
    resized = unknown = 0
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as ex:
        for c, r, u in ex.map(one, items):
            conf += c
            resized += r
            unknown += u
    result = metrics.summarize(conf, classes)
    result.update(domain=domain, split=split, images=len(items), pred_dir=str(pred_dir),
                  pred_format=pred_format, resized_predictions=resized, unknown_label_pixels=unknown,
                  # of the evaluated pixels, the share predicted outside the 19 classes (the extra column)
                  outside_class_share=float(conf[:, C.NUM_CLASSES].sum() / max(conf.sum(), 1)),
                  confusion=conf.tolist())
    if out is not None:
        write_json(Path(out) / layout.METRICS, result)
    return result


def evaluate_run(cfg: DataConfig, run: Path, stage: str | None, domain: str, split: str, classes: int = 19,
                 out: Path | None = None, save_color: bool = False, overwrite: bool = False) -> dict:
    """Evaluate RUN/STAGE/final.pt: inputs at the stage's target size, logits upsampled
    (bilinear, align_corners=True) to each label's size, argmax, confusion."""
    import torch

    from pipeline import inference
    from pipeline.config import from_dict
    from pipeline.models.segmentor import load_segmentor

    if classes not in C.SUBSETS:
        raise PhfaError(f"--classes must be one of {sorted(C.SUBSETS)}, not {classes}")
    if stage is None:
        done = evaluated_stages(run)
        if len(done) > 1:
            raise PhfaError(f"--stage: {run} has several stages with models ({', '.join(done)}); name one")
        stage = done[0]
    layout.plain_name(stage, "--stage")
    sd = StageDir(run, stage)
    model, ck = load_segmentor(sd.model("--stage"), "--stage", expect_classes=C.NUM_CLASSES)
    tcfg = from_dict(ck.get("config", {}))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    spec = cfg.domain(domain)
    if out is not None:
        _open_out(cfg, Path(out), [layout.METRICS], save_color, overwrite)
    out = Path(out) if out is not None else sd.path / f"eval-{domain}-{split}"
    conf = inference.evaluate(model, spec, split, tcfg.target_size, device,
                              inference.use_bf16(tcfg.precision, device),
                              color_dir=out / "color" if save_color else None)
    m = metrics.summarize(conf, classes)
    m.update(domain=domain, split=split, stage=stage, run=str(run), images=len(datasets.samples(spec, split)),
             checkpoint=str(sd.path / layout.FINAL), confusion=conf.tolist(), metrics_path=str(out / layout.METRICS))
    write_json(out / layout.METRICS, m)
    return m


def evaluated_stages(run: Path) -> list[str]:
    """Every finished stage of `run` with a model, in the run index's table order: source-only,
    adapt variants, PHFA, retrain rounds, oracle last."""
    done = RunIndex(run).models()
    if not done:
        raise PhfaError(f"--run: {run} has no finished stage with a model; run `phfa adapt --run {run} ...` first")
    return done
