"""Self-guidance pseudo-labels (paper Eq. 8), computed in memory that does not grow with the data.

Eq. 8
-----
Let p(x) be the segmentation network's softmax at target pixel x, ``pred(x) = argmax p(x)``
and ``conf(x) = max p(x)``. For each class c,

    threshold_c = min(0.9, median{ conf(x) : pred(x) = c, x in any target image })

and the pseudo-label is ``pred(x)`` where ``conf(x) >= threshold_{pred(x)}``, else 255 (ignore).
A class that is never predicted has no pixels and no threshold (``None``, recorded as null).
"Median" is numpy's: the middle value of the sorted confidences for an odd count, the mean of
the two middle values for an even count.

The reference code (BDL, SIM) keeps every confidence (float64) of the whole target set in memory,
sorts each class's values and takes ``x[round(n/2)]`` (the upper middle value for an even count,
a neighbour of numpy's median): ~25 GB for 2,975 Cityscapes images at 1024x512. phfa computes
numpy's median (for an even count the mean of the two middle values; the two rules differ by
half the gap between neighbouring confidences, far below any effect on the labels). Here:

Algorithm
---------
Pass 1 (:class:`ConfidenceHistogram`): a per-class histogram of the confidences with ``bins``
equal-width bins over [0, 1] (default 2**16, bin width 2**-16 ~ 1.5e-5); bin of a value is
``min(floor(conf * bins), bins - 1)`` (so 1.0 falls in the top bin; for a power-of-two ``bins``
the product is exact). From the counts, the median rank(s) k1 = (n-1)//2 and k2 = n//2 of each
class (n = pixels predicted c) lie in known bins b1 <= b2; all bins strictly between are empty.
:meth:`ConfidenceHistogram.thresholds` alone gives the bin-centre estimate (mean of the centres of
b1 and b2): error <= bin width / 2 = 2**-17 ~ 7.6e-6 for the default, before and after the cap.

Pass 2 (:class:`MedianRefinement`, from :meth:`ConfidenceHistogram.refine`) is fed the same data
again and keeps, per class, only the values falling in bins b1..b2 (as distinct values with
multiplicities), plus the number of pixels of the class below b1. The k-th smallest value is then
read off exactly and the median formed as numpy does (mean in float64 of the two middle values).

Memory: O(classes * bins) counters (19 * 2**16 int64 = 9.5 MiB) + the distinct values in the
median bins + one image's temporaries -- never O(pixels). For float32 confidences >= 2**-5
(a max-softmax over <= 32 classes is >= 1/32) a bin of width 2**-16 holds at most 2**12
distinct float32 values, so the pass-2 store is bounded too (<= 19 * 2 * 4096 values);
for float64 inputs it is bounded by the number of pixels in the median bins (a tiny share).

Both passes accept numpy arrays or torch tensors (any device; counters then live on that device)
of any shape (HxW, BxHxW, ...): ``conf`` floating in [0, 1], ``pred`` integer class ids in
[0, num_classes) -- pixels with ``pred == 255`` are skipped (e.g. padding).

If the second pass does not see exactly the first pass's data (e.g. non-deterministic GPU
kernels when predictions are recomputed), the result is still the exact median of the second
pass's data whenever its median ranks fall in the collected bins; otherwise a ``ValueError``
says so.

:class:`KeptShare` (pixels predicted / kept per class) and :class:`PseudoLabelDiagnostic`
(precision and coverage against ground truth) are statistics for reports only.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from pipeline.classes import IGNORE, NUM_CLASSES

__all__ = [
    "DEFAULT_BINS", "CAP", "ConfidenceHistogram", "MedianRefinement", "class_thresholds",
    "apply_thresholds", "KeptShare", "PseudoLabelDiagnostic",
]

DEFAULT_BINS = 2 ** 16   # bin width 2**-16; bin-centre error <= 2**-17 ~ 7.6e-6
CAP = 0.9                # Eq. 8's upper bound on every class threshold

Array = Any  # np.ndarray | torch.Tensor


# --------------------------------------------------------------------------- input handling
def _flat(conf: Array, pred: Array, num_classes: int):
    """Flatten a (conf, pred) pair, drop pred == 255 pixels, check ranges.

    Returns (conf float32/float64 1-D, pred int64 1-D), numpy or torch as given (both the same kind).
    """
    if isinstance(conf, torch.Tensor) or isinstance(pred, torch.Tensor):
        if not isinstance(conf, torch.Tensor):
            conf = torch.as_tensor(np.asarray(conf))
        if not isinstance(pred, torch.Tensor):
            pred = torch.as_tensor(np.asarray(pred))
        pred = pred.to(conf.device)
        if conf.shape != pred.shape:
            raise ValueError(f"conf {tuple(conf.shape)} and pred {tuple(pred.shape)} differ in shape")
        if not conf.is_floating_point() or pred.is_floating_point() or pred.dtype == torch.bool:
            raise ValueError("conf must be floating point and pred integer")
        c = conf.reshape(-1)
        if c.dtype not in (torch.float32, torch.float64):
            c = c.float()  # float16/bfloat16 -> float32 is exact
        p = pred.reshape(-1).long()
        keep = p != IGNORE
        if not bool(keep.all()):
            c, p = c[keep], p[keep]
        if p.numel():
            lo, hi = torch.aminmax(p)
            if int(lo) < 0 or int(hi) >= num_classes:
                raise ValueError(f"pred has class ids outside [0, {num_classes}) other than {IGNORE}")
            clo, chi = torch.aminmax(c)
            if not (float(clo) >= 0.0 and float(chi) <= 1.0):
                raise ValueError("conf has values outside [0, 1] (or NaN)")
        return c, p
    conf, pred = np.asarray(conf), np.asarray(pred)
    if conf.shape != pred.shape:
        raise ValueError(f"conf {conf.shape} and pred {pred.shape} differ in shape")
    if conf.dtype.kind != "f" or pred.dtype.kind not in "iu":
        raise ValueError("conf must be floating point and pred integer")
    c = conf.reshape(-1)
    if c.dtype not in (np.float32, np.float64):
        c = c.astype(np.float32)
    p = pred.reshape(-1).astype(np.int64, copy=False)
    keep = p != IGNORE
    if not keep.all():
        c, p = c[keep], p[keep]
    if p.size:
        if p.min() < 0 or p.max() >= num_classes:
            raise ValueError(f"pred has class ids outside [0, {num_classes}) other than {IGNORE}")
        if not (c.min() >= 0.0 and c.max() <= 1.0):
            raise ValueError("conf has values outside [0, 1] (or NaN)")
    return c, p


def _bin_index(c: Array, bins: int):
    """Bin of each confidence: min(floor(conf * bins), bins - 1); monotone in conf."""
    if isinstance(c, torch.Tensor):
        return torch.clamp((c * bins).long(), max=bins - 1)  # conf >= 0: truncation == floor
    return np.minimum((c * bins).astype(np.int64), bins - 1)


def _check_cap(cap: float) -> None:
    if not (0.0 < cap <= 1.0):
        raise ValueError(f"cap must be in (0, 1], got {cap}")


def _capped(medians: Sequence[float | None], cap: float) -> dict[int, float | None]:
    _check_cap(cap)
    return {c: (None if m is None else min(cap, m)) for c, m in enumerate(medians)}


# --------------------------------------------------------------------------- pass 1
class ConfidenceHistogram:
    """Pass 1 of Eq. 8: per-class histogram of confidences, ``bins`` equal bins over [0, 1].

    Memory: ``num_classes * bins`` int64 counters (per device fed), nothing per pixel.
    Resolution: ``1 / bins``; :meth:`thresholds` (bin centres) is within ``0.5 / bins`` of the
    exact value. :meth:`refine` starts pass 2 for the exact median.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, bins: int = DEFAULT_BINS):
        if num_classes < 1 or not (1 <= bins <= 2 ** 24):
            raise ValueError("need num_classes >= 1 and 1 <= bins <= 2**24")
        self.num_classes, self.bins = int(num_classes), int(bins)
        self._np = np.zeros(self.num_classes * self.bins, np.int64)
        self._dev: dict[torch.device, torch.Tensor] = {}

    @property
    def resolution(self) -> float:
        """Bin width."""
        return 1.0 / self.bins

    @property
    def max_error(self) -> float:
        """Bound on |bin-centre threshold - exact threshold|: half a bin."""
        return 0.5 / self.bins

    def add(self, conf: Array, pred: Array) -> "ConfidenceHistogram":
        """Count one image or batch: ``conf`` (float in [0,1]) and ``pred`` (int) of the same shape."""
        c, p = _flat(conf, pred, self.num_classes)
        idx = p * self.bins + _bin_index(c, self.bins)
        if isinstance(idx, torch.Tensor):
            acc = self._dev.get(idx.device)
            if acc is None:
                acc = self._dev[idx.device] = torch.zeros(self.num_classes * self.bins, dtype=torch.int64,
                                                          device=idx.device)
            acc.index_add_(0, idx, torch.ones_like(idx))
        else:
            np.add.at(self._np, idx, 1)
        return self

    @property
    def counts(self) -> np.ndarray:
        """(num_classes, bins) int64 counts, all devices summed (read-only; no copy for numpy-only input)."""
        total = self._np
        for t in self._dev.values():
            total = total + t.cpu().numpy()
        view = total.reshape(self.num_classes, self.bins).view()
        view.flags.writeable = False
        return view

    def pixels(self) -> np.ndarray:
        """Pixels predicted per class, shape (num_classes,)."""
        return self.counts.sum(axis=1)

    def median_bins(self) -> list[tuple[int, int, int, int] | None]:
        """Per class: (n, b1, b2, below) -- pixel count, bins holding ranks (n-1)//2 and n//2, and
        the number of pixels in bins < b1; ``None`` for a class with no pixels."""
        out: list[tuple[int, int, int, int] | None] = []
        for row in self.counts:
            n = int(row.sum())
            if n == 0:
                out.append(None)
                continue
            cum = np.cumsum(row)
            b1 = int(np.searchsorted(cum, (n - 1) // 2, side="right"))
            b2 = int(np.searchsorted(cum, n // 2, side="right"))
            out.append((n, b1, b2, int(cum[b1] - row[b1])))
        return out

    def medians(self) -> list[float | None]:
        """Bin-centre medians per class (error <= ``max_error``); ``None`` for absent classes."""
        w = self.resolution
        return [None if m is None else ((m[1] + 0.5) * w + (m[2] + 0.5) * w) / 2 for m in self.median_bins()]

    def thresholds(self, cap: float = CAP) -> dict[int, float | None]:
        """Eq. 8 from pass 1 alone: {class: min(cap, bin-centre median) or None}."""
        return _capped(self.medians(), cap)

    def refine(self) -> "MedianRefinement":
        """Start pass 2: feed the returned object the same (conf, pred) data again."""
        return MedianRefinement(self)


# --------------------------------------------------------------------------- pass 2
class MedianRefinement:
    """Pass 2 of Eq. 8: keeps only the values in each class's median bin(s), exact medians.

    Memory: per class the distinct values (with multiplicities) in bins b1..b2 of pass 1, plus
    three counters; never the other pixels.
    """

    def __init__(self, hist: ConfidenceHistogram):
        self.num_classes, self.bins = hist.num_classes, hist.bins
        mb = hist.median_bins()
        # absent class: empty range [bins, -1] collects nothing
        self._lo = np.array([self.bins if m is None else m[1] for m in mb], np.int64)
        self._hi = np.array([-1 if m is None else m[2] for m in mb], np.int64)
        self._n = np.zeros(self.num_classes, np.int64)
        self._below = np.zeros(self.num_classes, np.int64)
        self._vals: list[np.ndarray] = [np.empty(0, np.float64) for _ in range(self.num_classes)]
        self._cnt: list[np.ndarray] = [np.empty(0, np.int64) for _ in range(self.num_classes)]
        self._dev_lohi: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def values_held(self) -> int:
        """Distinct values currently stored, all classes (the pass-2 memory)."""
        return sum(v.size for v in self._vals)

    def add(self, conf: Array, pred: Array) -> "MedianRefinement":
        """Feed one image or batch, as in :meth:`ConfidenceHistogram.add`."""
        c, p = _flat(conf, pred, self.num_classes)
        b = _bin_index(c, self.bins)
        k = self.num_classes
        if isinstance(c, torch.Tensor):
            lohi = self._dev_lohi.get(c.device)
            if lohi is None:
                lohi = self._dev_lohi[c.device] = (torch.as_tensor(self._lo, device=c.device),
                                                   torch.as_tensor(self._hi, device=c.device))
            lo, hi = lohi[0][p], lohi[1][p]
            self._n += torch.bincount(p, minlength=k).cpu().numpy()
            self._below += torch.bincount(p[b < lo], minlength=k).cpu().numpy()
            sel = (b >= lo) & (b <= hi)
            sv = c[sel].double().cpu().numpy()
            sp = p[sel].cpu().numpy()
        else:
            lo, hi = self._lo[p], self._hi[p]
            self._n += np.bincount(p, minlength=k)
            self._below += np.bincount(p[b < lo], minlength=k)
            sel = (b >= lo) & (b <= hi)
            sv = c[sel].astype(np.float64)
            sp = p[sel]
        if sp.size:
            order = np.argsort(sp, kind="stable")
            sp, sv = sp[order], sv[order]
            classes, starts = np.unique(sp, return_index=True)
            for cls, vals in zip(classes.tolist(), np.split(sv, starts[1:])):
                self._merge(cls, vals)
        return self

    def _merge(self, cls: int, vals: np.ndarray) -> None:
        u, cnt = np.unique(vals, return_counts=True)
        if self._vals[cls].size:
            allv = np.concatenate([self._vals[cls], u])
            allc = np.concatenate([self._cnt[cls], cnt])
            u, inv = np.unique(allv, return_inverse=True)
            cnt = np.zeros(u.size, np.int64)
            np.add.at(cnt, inv, allc)
        self._vals[cls], self._cnt[cls] = u, cnt

    def medians(self) -> list[float | None]:
        """Exact per-class medians (numpy's definition) of the pass-2 data; ``None`` if absent."""
        out: list[float | None] = []
        for cls in range(self.num_classes):
            n = int(self._n[cls])
            if n == 0:
                out.append(None)
                continue
            cum = np.cumsum(self._cnt[cls])
            held = int(cum[-1]) if cum.size else 0
            p1, p2 = (n - 1) // 2 - int(self._below[cls]), n // 2 - int(self._below[cls])
            if p1 < 0 or p2 >= held:
                raise ValueError(
                    f"class {cls}: the second pass did not see the first pass's data (its median is outside "
                    "the collected bins); make the predictions deterministic or use the histogram thresholds")
            v1 = self._vals[cls][int(np.searchsorted(cum, p1, side="right"))]
            v2 = self._vals[cls][int(np.searchsorted(cum, p2, side="right"))]
            out.append(float(v1) if p1 == p2 else float((v1 + v2) / 2))
        return out

    def thresholds(self, cap: float = CAP) -> dict[int, float | None]:
        """Eq. 8, exact: {class: min(cap, median) or None for a class never predicted}."""
        return _capped(self.medians(), cap)


def class_thresholds(batches_factory: Callable[[], Iterable[tuple[Array, Array]]], num_classes: int = NUM_CLASSES,
                     cap: float = CAP, exact: bool = True, bins: int = DEFAULT_BINS) -> dict[int, float | None]:
    """Eq. 8 thresholds over a whole target set, without keeping any probabilities.

    ``batches_factory()`` must return a fresh iterable of (conf, pred) pairs each time it is
    called (called once, or twice when ``exact``); both calls must yield the same data. Returns
    {class: threshold or None (class never predicted)} for every class in [0, num_classes).
    ``exact=False``: histogram only, each threshold within ``0.5 / bins`` of the exact one.
    """
    _check_cap(cap)
    hist = ConfidenceHistogram(num_classes, bins)
    for conf, pred in batches_factory():
        hist.add(conf, pred)
    if not exact:
        return hist.thresholds(cap)
    ref = hist.refine()
    for conf, pred in batches_factory():
        ref.add(conf, pred)
    return ref.thresholds(cap)


# --------------------------------------------------------------------------- labels
def _threshold_table(thresholds: Mapping[int, float | None] | Sequence[float | None], num_classes: int) -> np.ndarray:
    """float64 table of length num_classes; +inf (nothing kept) where there is no threshold."""
    items = thresholds.items() if isinstance(thresholds, Mapping) else enumerate(thresholds)
    table = np.full(num_classes, np.inf)
    for c, t in items:
        if not 0 <= int(c) < num_classes:
            raise ValueError(f"threshold for class {c} outside [0, {num_classes})")
        if t is not None and not math.isnan(t):
            table[int(c)] = float(t)
    return table


def apply_thresholds(conf: Array, pred: Array, thresholds: Mapping[int, float | None] | Sequence[float | None],
                     ignore: int = IGNORE, num_classes: int = NUM_CLASSES) -> Array:
    """Eq. 8 pseudo-label: ``pred`` where ``conf >= threshold[pred]`` (>=: a pixel exactly at its
    class's threshold is kept, as in the reference code's ``label[prob < thres] = 255``), else
    ``ignore``. A class without a threshold (None/NaN/missing) keeps no pixel; ``pred`` values
    outside [0, num_classes) become ``ignore``. Comparison in float64. Returns uint8 of pred's
    shape: a numpy array, or a tensor on pred's device when given tensors.
    """
    if not 0 <= ignore <= 255:
        raise ValueError("ignore must fit in uint8")
    table = _threshold_table(thresholds, num_classes)
    if isinstance(conf, torch.Tensor) or isinstance(pred, torch.Tensor):
        conf, pred = torch.as_tensor(conf), torch.as_tensor(pred)
        conf = conf.to(pred.device)
        if conf.shape != pred.shape:
            raise ValueError(f"conf {tuple(conf.shape)} and pred {tuple(pred.shape)} differ in shape")
        p = pred.long()
        valid = (p >= 0) & (p < num_classes)
        t = torch.as_tensor(table, device=p.device)[p.clamp(0, num_classes - 1)]
        keep = valid & (conf.double() >= t)
        return torch.where(keep, p, torch.full_like(p, ignore)).to(torch.uint8)
    conf, pred = np.asarray(conf), np.asarray(pred)
    if conf.shape != pred.shape:
        raise ValueError(f"conf {conf.shape} and pred {pred.shape} differ in shape")
    p = pred.astype(np.int64)
    valid = (p >= 0) & (p < num_classes)
    keep = valid & (conf.astype(np.float64) >= table[np.clip(p, 0, num_classes - 1)])
    return np.where(keep, p, ignore).astype(np.uint8)


# --------------------------------------------------------------------------- statistics
def _np_int(x: Array) -> np.ndarray:
    return (x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).reshape(-1).astype(np.int64)


class KeptShare:
    """Per class: pixels predicted c and pixels kept as pseudo-label c (a statistic for reports)."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        self.num_classes = num_classes
        self.predicted = np.zeros(num_classes, np.int64)
        self.kept = np.zeros(num_classes, np.int64)

    def add(self, pred: Array, pseudo: Array) -> "KeptShare":
        """``pred``: argmax map; ``pseudo``: the label from :func:`apply_thresholds` (same shape)."""
        p, q = _np_int(pred), _np_int(pseudo)
        if p.shape != q.shape:
            raise ValueError("pred and pseudo differ in size")
        k = self.num_classes
        self.predicted += np.bincount(p[(p >= 0) & (p < k)], minlength=k)
        self.kept += np.bincount(q[(q >= 0) & (q < k)], minlength=k)
        return self

    def result(self) -> dict[int, dict[str, float | int | None]]:
        """{class: {"predicted", "kept", "share" (kept / predicted, None if never predicted)}}."""
        return {c: {"predicted": int(n), "kept": int(m), "share": (float(m / n) if n else None)}
                for c, (n, m) in enumerate(zip(self.predicted, self.kept))}


class PseudoLabelDiagnostic:
    """DIAGNOSTIC ONLY -- needs target ground truth, which adaptation never uses.

    Per class c, accumulated over (pseudo, gt) pairs:
    precision = |pseudo = c and gt = c| / |pseudo = c and gt != ignore| (of the kept pixels
    labelled c, the share whose ground truth is c), coverage = |pseudo = c and gt = c| / |gt = c|
    (share of the ground-truth-c pixels that received pseudo-label c). Pixels whose ground truth
    is ``ignore`` are left out of both. ``None`` where the denominator is 0.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, ignore: int = IGNORE):
        self.num_classes, self.ignore = num_classes, ignore
        self.correct = np.zeros(num_classes, np.int64)
        self.labelled = np.zeros(num_classes, np.int64)
        self.truth = np.zeros(num_classes, np.int64)

    def add(self, pseudo: Array, gt: Array) -> "PseudoLabelDiagnostic":
        q, g = _np_int(pseudo), _np_int(gt)
        if q.shape != g.shape:
            raise ValueError("pseudo-label and ground truth differ in size")
        k = self.num_classes
        evaluated = g != self.ignore
        q, g = q[evaluated], g[evaluated]
        qin, gin = (q >= 0) & (q < k), (g >= 0) & (g < k)
        self.labelled += np.bincount(q[qin], minlength=k)
        self.truth += np.bincount(g[gin], minlength=k)
        self.correct += np.bincount(q[qin & (q == g)], minlength=k)
        return self

    def result(self) -> dict[int, dict[str, float | int | None]]:
        """{class: {"precision", "coverage", "labelled", "truth", "correct"}} (ratios None if undefined)."""
        return {c: {"precision": float(self.correct[c] / self.labelled[c]) if self.labelled[c] else None,
                    "coverage": float(self.correct[c] / self.truth[c]) if self.truth[c] else None,
                    "labelled": int(self.labelled[c]), "truth": int(self.truth[c]), "correct": int(self.correct[c])}
                for c in range(self.num_classes)}
