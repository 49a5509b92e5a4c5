"""Evaluation metrics (Eq. 12): confusion matrix, per-class IoU = TP / (TP + FP + FN), mIoU.

The confusion matrix has NUM_CLASSES rows (ground truth, pixels whose ground truth is
255 are skipped) and NUM_CLASSES + 1 columns: the last column collects predictions
outside the 19 classes (void ids). Such a pixel is a false negative of its true class
and nobody's false positive, exactly as cityscapesScripts counts it.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline import classes as C

N = C.NUM_CLASSES


_IDENTITY = np.arange(256, dtype=np.uint8)


def confusion(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, n: int = N) -> np.ndarray:
    """(n, n+1) int64 confusion of one prediction/ground-truth pair of trainIds."""
    if isinstance(pred, torch.Tensor):
        return confusion_torch(pred, gt, n).cpu().numpy()
    if pred.dtype == np.uint8 and gt.dtype == np.uint8:
        return confusion_from_ids(gt, pred, _IDENTITY, _IDENTITY, n)
    return confusion_from_ids(gt.astype(np.int64), pred.astype(np.int64), None, None, n)


def confusion_from_ids(gt: np.ndarray, pred: np.ndarray, gt_lut: np.ndarray | None,
                       pred_lut: np.ndarray | None, n: int = N, gt_valid: np.ndarray | None = None):
    """Confusion of raw uint8 id maps, mapped to trainIds through the LUTs *after* counting.

    Counting the 16-bit code gt << 8 | pred first and mapping only the distinct codes
    avoids two full-image LUT passes and the boolean masking: evaluation is then bound by
    PNG decoding (see bench/eval_speed.py). With LUTs of None the inputs are trainIds of
    any integer type. With `gt_valid` (a bool LUT over raw gt ids) it returns
    (confusion, number of gt pixels whose id is not valid).
    """
    if gt_lut is None:
        g = gt.reshape(-1).astype(np.int64)
        p = pred.reshape(-1).astype(np.int64)
        keep = (g >= 0) & (g < n)
        p = np.where((p >= 0) & (p < n), p, n)[keep]
        return np.bincount(g[keep] * (n + 1) + p, minlength=n * (n + 1)).reshape(n, n + 1)
    code = (gt.astype(np.uint16) << 8) | pred
    u, c = np.unique(code.reshape(-1), return_counts=True)
    g = gt_lut[u >> 8].astype(np.int64)
    p = pred_lut[(u & 255)].astype(np.int64)
    p[p >= n] = n
    keep = g < n
    conf = np.bincount(g[keep] * (n + 1) + p[keep], weights=c[keep], minlength=n * (n + 1)) \
        .astype(np.int64).reshape(n, n + 1)
    if gt_valid is None:
        return conf
    return conf, int(c[~gt_valid[u >> 8]].sum())


def confusion_torch(pred: torch.Tensor, gt: torch.Tensor, n: int = N) -> torch.Tensor:
    """Same on the tensors' device (no host sync): accumulate during validation."""
    gt = gt.reshape(-1).long()
    pred = pred.reshape(-1).long()
    keep = gt < n
    p = pred[keep].clamp(max=n)
    idx = gt[keep] * (n + 1) + p
    return torch.bincount(idx, minlength=n * (n + 1)).reshape(n, n + 1)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU per class (nan where the class neither occurs nor is predicted)."""
    conf = np.asarray(conf, dtype=np.float64)
    n = conf.shape[0]
    tp = np.diag(conf[:, :n])
    fp = conf[:, :n].sum(0) - tp
    fn = conf.sum(1) - tp
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)


def summarize(conf: np.ndarray, classes: int = 19) -> dict:
    """metrics.json content: mIoU over the subset's classes (nan-mean), IoU per class, pixel acc."""
    subset = C.SUBSETS[classes]
    iou = iou_per_class(conf)
    sub = iou[list(subset)]
    miou = float(np.nanmean(sub) * 100) if np.any(~np.isnan(sub)) else float("nan")
    total = conf.sum()
    acc = float(np.trace(conf[:, : conf.shape[0]]) / total * 100) if total else float("nan")
    return {
        "miou": miou,
        "iou": {C.CLASS_NAMES[c]: (None if np.isnan(iou[c]) else float(iou[c] * 100)) for c in subset},
        "classes": classes,
        "pixel_acc": acc,
        "pixels": int(total),
    }
