"""Self-guidance pseudo-labels (paper Eq. 8): exact class medians in memory that does not grow.

Eq. 8
-----
Let p(x) be the network's softmax at target pixel x, ``pred(x) = argmax p(x)`` and
``conf(x) = max p(x)`` (float32). For each class c,

    threshold_c = min(0.9, median{ conf(x) : pred(x) = c, x in any target image })

and the pseudo-label is ``pred(x)`` where ``conf(x) >= threshold_{pred(x)}``, else 255 (ignore).
A class never predicted has no threshold (``None``) and keeps no pixel. The median is numpy's:
the middle value for an odd count, the mean (float64) of the two middle values for an even one.
The reference code (BDL, SIM) keeps every confidence of the target set and takes
``np.sort(x)[round(n/2)]``, the upper middle value for an even count -- half a gap between two
neighbouring confidences away -- in memory that grows with the images (~25 GB for 2,975
Cityscapes images at 1024x512).

Algorithm: a two-pass radix select on the float32 bit pattern
-------------------------------------------------------------
For non-negative float32 values the bit pattern, read as an integer, is ordered like the values,
and every confidence in [0, 1] has a pattern <= 0x3F800000 (1.0). Split it into its high 16
bits (sign, exponent and 7 mantissa bits: at most 0x3F80, so ``HIGH`` = 2**14 buckets) and its
low 16 bits.

- Pass 1 (:meth:`ClassMedian.count`): per class, a histogram of the high halves. From it, the
  median ranks k1 = (n-1)//2 and k2 = n//2 of each class lie in known high buckets h1 <= h2.
- Pass 2 (:meth:`ClassMedian.refine`, the same data again): per class, a histogram of the low
  halves of the pixels whose high half is h1 (and one for h2). The k-th value is then read off
  exactly: its high half is the bucket, its low half the bin where the counts reach the rank.

Memory: ``classes * (2**14 + 2 * 2**16)`` int64 counters (19 classes: 22 MiB) on the device of
the data, plus one batch's temporaries -- never a value per pixel, whatever the number of images.
Pass 2 also recounts the high halves; if they differ from pass 1's (the two passes did not see
the same predictions), :meth:`ClassMedian.medians` refuses with a ``ValueError``.

:class:`ClassCounts` counts per class pixels predicted, kept, and (with ground truth, for the
report's diagnostic only) pseudo-labels that are right.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence

import torch

from pipeline.classes import IGNORE, NUM_CLASSES

__all__ = ["CAP", "ClassMedian", "class_thresholds", "apply_thresholds", "ClassCounts"]

CAP = 0.9                  # Eq. 8's upper bound on every class threshold
HIGH = 2 ** 14             # high-half buckets: 0x3F80 (the high half of 1.0) < 2**14
LOW = 2 ** 16              # low-half bins
ONE = 0x3F800000           # float32 bit pattern of 1.0


def _classes_and_bits(conf: torch.Tensor, pred: torch.Tensor, num_classes: int):
    """Flatten a batch, drop pixels with pred == 255, check ranges.

    Returns (class ids int64, float32 bit patterns int64), 1-D, on conf's device.
    """
    if not isinstance(conf, torch.Tensor) or not isinstance(pred, torch.Tensor):
        raise TypeError("conf and pred must be torch tensors")
    if conf.shape != pred.shape:
        raise ValueError(f"conf {tuple(conf.shape)} and pred {tuple(pred.shape)} differ in shape")
    if not conf.is_floating_point() or pred.is_floating_point() or pred.dtype == torch.bool:
        raise ValueError("conf must be floating point and pred integer")
    c = conf.reshape(-1).to(torch.float32)          # the network's softmax is float32 already
    p = pred.reshape(-1).to(conf.device, torch.int64)
    ignored = p == IGNORE
    if bool(ignored.any()):                         # padding only: skip the copy for whole images
        c, p = c[~ignored], p[~ignored]
    bits = c.view(torch.int32).long()
    if p.numel():
        lo, hi = torch.aminmax(p)
        if int(lo) < 0 or int(hi) >= num_classes:
            raise ValueError(f"pred has class ids outside [0, {num_classes}) other than {IGNORE}")
        blo, bhi = torch.aminmax(bits)              # negative values and NaN fall outside [0, ONE]
        if int(blo) < 0 or int(bhi) > ONE:
            raise ValueError("conf has values outside [0, 1] (or NaN)")
    return p, bits


class ClassMedian:
    """Exact per-class medians of float32 confidences: :meth:`count` every batch (pass 1), then
    :meth:`refine` every batch again (pass 2), then :meth:`medians`. Memory is fixed (see the module)."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        if num_classes < 1:
            raise ValueError("need num_classes >= 1")
        self.num_classes = int(num_classes)
        self._high: torch.Tensor | None = None    # (classes * HIGH,) pass-1 counts
        self._recount: torch.Tensor | None = None  # the same, counted again in pass 2
        self._low: torch.Tensor | None = None      # (2 * classes * LOW,) pass-2 counts, slots h1 and h2
        self._buckets: torch.Tensor | None = None  # (2, classes): h1, h2 (-1 for an absent class)

    def _add(self, counts: torch.Tensor | None, index: torch.Tensor, size: int) -> torch.Tensor:
        if counts is None:
            counts = torch.zeros(size, dtype=torch.int64, device=index.device)
        return counts.index_add_(0, index.to(counts.device), torch.ones_like(index, device=counts.device))

    def count(self, conf: torch.Tensor, pred: torch.Tensor) -> "ClassMedian":
        """Pass 1: one image or batch, ``conf`` in [0, 1] and ``pred`` class ids of the same shape."""
        if self._buckets is not None:
            raise RuntimeError("count() after refine(): pass 1 is over")
        p, bits = _classes_and_bits(conf, pred, self.num_classes)
        counts = torch.bincount(p * HIGH + (bits >> 16), minlength=self.num_classes * HIGH)
        self._high = counts if self._high is None else self._high.add_(counts.to(self._high.device))
        return self

    def _pixels_and_ranks(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per class: n, and the median ranks k1 = (n-1)//2, k2 = n//2 (as a (2, classes) tensor)."""
        hist = self._high.view(self.num_classes, HIGH)
        n = hist.sum(1)
        ranks = torch.stack([(n - 1).clamp(min=0) // 2, n // 2])
        return n, ranks, hist.cumsum(1)

    def refine(self, conf: torch.Tensor, pred: torch.Tensor) -> "ClassMedian":
        """Pass 2: the same batches as pass 1, in any order."""
        if self._high is None:
            raise RuntimeError("refine() before count(): run pass 1 first")
        if self._buckets is None:  # first batch of pass 2: the buckets holding ranks k1 and k2
            n, ranks, cum = self._pixels_and_ranks()
            found = torch.searchsorted(cum, ranks.T.contiguous(), right=True).T
            self._buckets = torch.where(n > 0, found, torch.full_like(found, -1))
        p, bits = _classes_and_bits(conf, pred, self.num_classes)
        high = bits >> 16
        counts = torch.bincount(p * HIGH + high, minlength=self.num_classes * HIGH)
        self._recount = counts if self._recount is None else self._recount.add_(counts.to(self._recount.device))
        buckets = self._buckets.to(p.device)
        for slot in (0, 1):
            hit = high == buckets[slot][p]
            index = (slot * self.num_classes + p[hit]) * LOW + (bits[hit] & (LOW - 1))
            self._low = self._add(self._low, index, 2 * self.num_classes * LOW)
        return self

    def medians(self) -> list[float | None]:
        """Exact per-class medians (numpy's definition); ``None`` for a class never predicted."""
        if self._buckets is None:
            raise RuntimeError("medians() needs both passes: count() every batch, then refine() every batch")
        if self._recount is None or not torch.equal(self._recount, self._high):
            raise ValueError("the second pass did not see the first pass's data; make the predictions "
                             "deterministic (the same model, inputs and kernels) and run both passes over the "
                             "same images")
        n, ranks, cum = (t.cpu() for t in self._pixels_and_ranks())
        buckets = self._buckets.cpu()
        low = self._low.view(2, self.num_classes, LOW)
        out: list[float | None] = []
        for c in range(self.num_classes):
            if int(n[c]) == 0:
                out.append(None)
                continue
            values = []
            for slot in (0, 1):
                h = int(buckets[slot, c])
                below = int(cum[c, h - 1]) if h > 0 else 0           # pixels in lower buckets
                rank = int(ranks[slot, c]) - below                     # rank inside bucket h
                cum_low = low[slot, c].cpu().cumsum(0)
                lo = int(torch.searchsorted(cum_low, torch.tensor(rank), right=True))
                bits = torch.tensor([(h << 16) | lo], dtype=torch.int32)
                values.append(float(bits.view(torch.float32)))
            out.append((values[0] + values[1]) / 2)                   # float64; equal values for odd n
        return out


def class_thresholds(passes: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
                     num_classes: int = NUM_CLASSES, cap: float = CAP) -> dict[int, float | None]:
    """Eq. 8 thresholds over a whole target set, without keeping any confidences.

    ``passes()`` returns a fresh iterable of (conf, pred) batches; it is called twice and must
    give the same data both times. Returns {class: min(cap, median) or None (never predicted)}.
    """
    if not (0.0 < cap <= 1.0):
        raise ValueError(f"cap must be in (0, 1], got {cap}")
    median = ClassMedian(num_classes)
    for conf, pred in passes():
        median.count(conf, pred)
    for conf, pred in passes():
        median.refine(conf, pred)
    return {c: (None if m is None else min(cap, m)) for c, m in enumerate(median.medians())}


def apply_thresholds(conf: torch.Tensor, pred: torch.Tensor,
                     thresholds: Mapping[int, float | None] | Sequence[float | None],
                     num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Eq. 8 pseudo-label: ``pred`` where ``conf >= threshold[pred]`` (a pixel at its class's
    threshold is kept, as the reference's ``label[prob < thres] = 255``), else 255. A class
    without a threshold (None, NaN or missing) keeps nothing, and so does a ``pred`` outside
    [0, num_classes). Compared in float64; uint8 of pred's shape on pred's device."""
    if conf.shape != pred.shape:
        raise ValueError(f"conf {tuple(conf.shape)} and pred {tuple(pred.shape)} differ in shape")
    items = thresholds.items() if isinstance(thresholds, Mapping) else enumerate(thresholds)
    table = torch.full((num_classes,), math.inf, dtype=torch.float64)
    for c, t in items:
        if not 0 <= int(c) < num_classes:
            raise ValueError(f"threshold for class {c} outside [0, {num_classes})")
        if t is not None and not math.isnan(t):
            table[int(c)] = float(t)
    p = pred.long()
    valid = (p >= 0) & (p < num_classes)
    keep = valid & (conf.to(p.device, torch.float64) >= table.to(p.device)[p.clamp(0, num_classes - 1)])
    return torch.where(keep, p, torch.full_like(p, IGNORE)).to(torch.uint8)


class ClassCounts:
    """Per class: pixels predicted, pixels kept as pseudo-label, and -- given the target's ground
    truth, a diagnostic only (adaptation never sees it) -- the kept pixels that are right.

    precision_c = |pseudo = c, gt = c| / |pseudo = c, gt != 255|  (of the kept pixels labelled c,
    the share that are c); coverage_c = |pseudo = c, gt = c| / |gt = c|. Pixels whose ground truth
    is 255 count for neither. Ratios are ``None`` where the denominator is 0.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        self.num_classes = num_classes
        zeros = lambda: torch.zeros(num_classes, dtype=torch.int64)  # noqa: E731
        self.predicted, self.kept = zeros(), zeros()
        self.labelled, self.truth, self.correct = zeros(), zeros(), zeros()

    def _bincount(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1).long().cpu()
        return torch.bincount(x[(x >= 0) & (x < self.num_classes)], minlength=self.num_classes)

    def add(self, pred: torch.Tensor, pseudo: torch.Tensor, gt: torch.Tensor | None = None) -> "ClassCounts":
        """``pred`` the argmax map, ``pseudo`` its pseudo-label, ``gt`` the ground truth (optional)."""
        if pred.shape != pseudo.shape or (gt is not None and gt.shape != pseudo.shape):
            raise ValueError("pred, pseudo-label and ground truth differ in size")
        self.predicted += self._bincount(pred)
        self.kept += self._bincount(pseudo)
        if gt is not None:
            q, g = pseudo.reshape(-1).long().cpu(), gt.reshape(-1).long().cpu()
            q, g = q[g != IGNORE], g[g != IGNORE]
            self.labelled += self._bincount(q)
            self.truth += self._bincount(g)
            self.correct += self._bincount(q[q == g])
        return self

    @staticmethod
    def _ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    def kept_share(self) -> dict[int, dict[str, float | int | None]]:
        """{class: {"predicted", "kept", "share" (kept / predicted, None if never predicted)}}."""
        return {c: {"predicted": int(n), "kept": int(k), "share": self._ratio(int(k), int(n))}
                for c, (n, k) in enumerate(zip(self.predicted, self.kept))}

    def diagnostic(self) -> dict[int, dict[str, float | int | None]]:
        """{class: {"precision", "coverage", "labelled", "truth", "correct"}} against the ground truth."""
        return {c: {"precision": self._ratio(int(self.correct[c]), int(self.labelled[c])),
                    "coverage": self._ratio(int(self.correct[c]), int(self.truth[c])),
                    "labelled": int(self.labelled[c]), "truth": int(self.truth[c]),
                    "correct": int(self.correct[c])}
                for c in range(self.num_classes)}
