"""Where the feature alignment of Eq. 1 and Eq. 4-6 takes its features from, computed on the
features' device with no host round-trip (no ``.item()``, ``nonzero``, boolean indexing or
``bincount``, each of which waits for the device on a GPU).

- Eq. (4) ``correct_map``: the ground truth where the prediction agrees with it, else ignore.
- Label maps at feature resolution (``downsample_labels``, nearest).
- Eq. (1) regions: connected components of each thing class (``components``, a min-label
  propagation with pointer jumping, 8-neighbourhood by default), the ``top_k`` largest per class
  and image (SIM: 10) and each component's masked-average feature (``object_regions``).
- Eq. (5)/(6) regions: per image and stuff class present, the class-averaged feature
  (``class_regions``).
- SIM's classifier check (``classifier_agrees``): the segmentor's classifier applied to a pooled
  feature (``pooled_logits``) must predict the region's class for it to be stored.

Every function returns fixed shapes that depend only on the batch, the map size and the classes,
never on the data: a ``Regions`` holds one slot per (class, image, rank) and a mask of the slots
that hold a region. The eps of Eq. (1)/(5)/(6) only guards an empty mask; every region that is
used has at least one pixel, so it never changes a value. Features are averaged in float32 (safe
under autocast) and keep the autograd graph of the features they come from.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.classes import IGNORE

EPS = 1e-6
TOP_K = 10               # SIM: the 10 largest components per class and image
LABEL_RANGE = 256        # label maps hold trainIds 0..18 and 255 (ignore)


# ----------------------------------------------------------------------------- label maps


def correct_map(pred: torch.Tensor, gt: torch.Tensor, ignore: int = IGNORE) -> torch.Tensor:
    """Eq. (4): the ground truth where ``pred == gt``, ``ignore`` elsewhere. [B, h, w] -> [B, h, w]."""
    if pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape")
    gt = gt.long()
    return torch.where(pred.long() == gt, gt, torch.full_like(gt, ignore))


def downsample_labels(labels: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of a [B, H, W] label map to ``size`` (h, w); returns a LongTensor."""
    size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if tuple(labels.shape[-2:]) == size:
        return labels.long()
    # float32 holds every label value (0..255) exactly; nearest never mixes labels.
    out = F.interpolate(labels[:, None].float(), size=size, mode="nearest")
    return out[:, 0].long()


def at_feature_size(label_map: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    if label_map.dim() != 3 or features.dim() != 4 or label_map.shape[0] != features.shape[0]:
        raise ValueError(
            f"expected features [B, D, h, w] and label map [B, h, w], got {tuple(features.shape)} "
            f"and {tuple(label_map.shape)}"
        )
    return downsample_labels(label_map, features.shape[-2:]).to(features.device)


@functools.lru_cache(maxsize=64)
def class_table(classes: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(class ids [K], lookup [LABEL_RANGE]: label -> position in ``classes`` or -1) on ``device``,
    built once: a blocking host-to-device copy in every step would wait for the device."""
    if any(not 0 <= c < LABEL_RANGE for c in classes):
        raise ValueError(f"classes must lie in 0..{LABEL_RANGE - 1}, got {list(classes)}")
    ids = torch.tensor(classes, dtype=torch.long).to(device)
    lut = torch.full((LABEL_RANGE,), -1, dtype=torch.long)
    lut[list(classes)] = torch.arange(len(classes))
    return ids, lut.to(device)


def class_positions(label_map: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    """Per pixel, the position of its label in ``classes`` (sorted, unique), or -1."""
    lut = class_table(classes, label_map.device)[1]
    inside = (label_map >= 0) & (label_map < LABEL_RANGE)
    return torch.where(inside, lut[label_map.clamp(0, LABEL_RANGE - 1)], torch.full_like(label_map, -1))


# ----------------------------------------------------------------------------- connected components


def _neighbour_index(b: int, h: int, w: int, connectivity: int, device) -> torch.Tensor:
    """[n_offsets, B*h*w]: the flat index of each pixel's neighbour, or B*h*w outside the image."""
    offsets = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    if connectivity == 2:
        offsets += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    ys = torch.arange(h, device=device)[:, None]
    xs = torch.arange(w, device=device)[None, :]
    base = (torch.arange(b, device=device) * h * w)[:, None, None]
    out = []
    for dy, dx in offsets:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        out.append(torch.where(inside[None], (ny * w + nx)[None] + base, b * h * w).reshape(-1))
    return torch.stack(out)


def _same_label_neighbours(label_map: torch.Tensor, connectivity: int) -> torch.Tensor:
    """[n_offsets, B*h*w]: each pixel's neighbour that exists and carries the same label (>= 0),
    else B*h*w."""
    b, h, w = label_map.shape
    flat = label_map.reshape(-1)
    nb = _neighbour_index(b, h, w, connectivity, label_map.device)
    same = (torch.cat([flat, flat.new_full((1,), -2)])[nb] == flat[None]) & (flat[None] >= 0)
    return torch.where(same, nb, b * h * w)


def propagation_rounds(h: int, w: int) -> int:
    """Rounds of ``components`` for an h x w map: twice the log2 bound its convergence follows.

    Measured against scikit-image on random maps, serpentines and random mazes up to 180 x 320,
    the labels settle after at most ceil(log2(h*w)) + 2 rounds (the pointer jumping halves every
    path); twice that leaves a margin, at a few small tensor operations a round."""
    return 2 * math.ceil(math.log2(max(2, h * w))) + 2


def components(label_map: torch.Tensor, connectivity: int = 2, rounds: int | None = None) -> torch.Tensor:
    """Connected components of each label >= 0 of a [B, h, w] map (-1 = background), on its device.

    Returns the root [B*h*w]: for each pixel, the flat index of its component's first pixel in
    raster order (so components are ordered as scikit-image numbers them), the pixel's own index
    on the background. A min-label propagation with hooking and pointer jumping (FastSV:
    Zhang, Azad, Hu 2020) run for a fixed number of rounds (``propagation_rounds``), so it never
    asks the device whether it has converged; ``converged`` checks a result.
    Touching regions of different labels stay separate components.
    """
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2, got {connectivity}")
    b, h, w = label_map.shape
    n = b * h * w
    nb = _same_label_neighbours(label_map, connectivity)
    f = torch.arange(n, device=label_map.device)
    beyond = f.new_full((1,), n)
    for _ in range(propagation_rounds(h, w) if rounds is None else rounds):
        gf = f[f]                                                   # grandparents
        low = torch.minimum(torch.cat([gf, beyond])[nb].amin(0), gf)  # smallest grandparent around
        nxt = f.scatter_reduce(0, f, low, "amin")                  # hook the parent
        f = torch.minimum(torch.minimum(nxt, low), gf)             # hook the pixel, shortcut
    for _ in range(math.ceil(math.log2(max(2, n)))):              # flatten what is left to roots
        f = f[f]
    return f


def converged(label_map: torch.Tensor, root: torch.Tensor, connectivity: int = 2) -> bool:
    """True when every pixel shares its root with each same-label neighbour and roots are fixed
    points: what ``components`` must return (a test and diagnostic helper; it reads the device)."""
    nb = _same_label_neighbours(label_map, connectivity)
    same = nb < root.shape[0]
    ext = torch.cat([root, root.new_full((1,), -1)])
    agree = torch.where(same, ext[nb] == root[None], torch.ones_like(same))
    return bool(agree.all()) and bool((root[root] == root).all())


# ----------------------------------------------------------------------------- regions


@dataclass
class Regions:
    """Region features in fixed slots: ``feats`` [K, B, k, D] float32, ``valid`` [K, B, k] (the
    slot holds a region), ``order`` [K, B, k] (the order in which a class's regions are found:
    image first, then raster order of their first pixel), for ``classes`` (K class ids, sorted)."""

    feats: torch.Tensor
    valid: torch.Tensor
    order: torch.Tensor
    classes: tuple[int, ...]

    def class_ids(self) -> torch.Tensor:
        """[K, B, k] class id of each slot."""
        ids = class_table(self.classes, self.valid.device)[0]
        return ids[:, None, None].expand_as(self.valid)

    def found(self) -> list[tuple[int, int, torch.Tensor]]:
        """(class, image, feature) of every valid slot in the order found (reads the device: for
        tests and reports, never the training step)."""
        valid = self.valid.cpu()
        order = self.order.cpu()
        out = []
        for ci, c in enumerate(self.classes):
            for b in range(valid.shape[1]):
                for r in range(valid.shape[2]):
                    if valid[ci, b, r]:
                        out.append((int(order[ci, b, r]), c, b, self.feats[ci, b, r]))
        return [(c, b, f) for _, c, b, f in sorted(out, key=lambda t: t[0])]


def _sorted_classes(classes: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted(set(int(c) for c in classes)))


def region_means(features: torch.Tensor, index: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked averages sum(F * mask) / max(eps, |mask|) of n regions given a per-pixel region index,
    and each region's pixel count.

    ``index`` [B*h*w] holds a region id per pixel or -1. One ``index_add`` over all pixels (the -1
    pixels go to a discarded extra row), differentiable w.r.t. ``features``.
    """
    d = features.shape[1]
    flat = features.float().permute(0, 2, 3, 1).reshape(-1, d)
    idx = torch.where(index >= 0, index, torch.full_like(index, n))
    sums = flat.new_zeros(n + 1, d).index_add(0, idx, flat)[:n]
    sizes = flat.new_zeros(n + 1).index_add(0, idx, flat.new_ones(idx.shape[0]))[:n]
    return sums / sizes.clamp(min=EPS)[:, None], sizes


def max_components(h: int, w: int, connectivity: int) -> int:
    """The most components one class can form in an h x w map (isolated pixels)."""
    if connectivity == 2:
        return math.ceil(h / 2) * math.ceil(w / 2)
    return math.ceil(h * w / 2)


def object_regions(features: torch.Tensor, label_map: torch.Tensor, classes: Sequence[int],
                   connectivity: int = 2, top_k: int = TOP_K) -> Regions:
    """Eq. (1) regions: the ``top_k`` largest components of each class and image (ties: the one
    found first), slot (class, image, rank by size); ``top_k`` 0 keeps every component."""
    classes = _sorted_classes(classes)
    lm = at_feature_size(label_map, features)
    b, h, w = lm.shape
    n, hw = b * h * w, h * w
    dev = features.device
    pos = class_positions(lm, classes).reshape(-1)               # class position or -1
    wanted = pos >= 0
    root = components(pos.view(b, h, w), connectivity)
    ids = torch.arange(n, device=dev)
    is_root = wanted & (root == ids)
    size = torch.zeros(n, dtype=torch.long, device=dev).index_add(0, root, wanted.long())
    k = min(top_k if top_k > 0 else max_components(h, w, connectivity), max_components(h, w, connectivity))
    group = pos * b + ids // hw                                  # (class, image) of a root
    # rank within (class, image): size descending, then first pixel (scikit-image's numbering)
    key = (group * (n + 1) + (n - size)) * (n + 1) + ids
    key = torch.where(is_root, key, torch.full_like(key, torch.iinfo(torch.long).max))
    order = torch.argsort(key)
    g = group[order]
    start = torch.ones(n, dtype=torch.bool, device=dev)
    start[1:] = g[1:] != g[:-1]
    first = torch.cummax(torch.where(start, ids, torch.zeros_like(ids)), 0).values
    rank = torch.empty_like(ids).scatter_(0, order, ids - first)
    keep = is_root & (rank < k)
    slots = len(classes) * b * k
    slot_of_root = torch.where(keep, group * k + rank, torch.full_like(ids, -1))
    pixel_slot = torch.where(wanted, slot_of_root[root], torch.full_like(ids, -1))
    means, sizes = region_means(features, pixel_slot, slots)
    found = torch.full((slots + 1,), n, dtype=torch.long, device=dev).scatter_reduce(
        0, torch.where(keep, slot_of_root, slots), ids, "amin")[:slots]
    shape = (len(classes), b, k)
    return Regions(means.view(*shape, -1), (sizes > 0).view(shape), found.view(shape), classes)


def class_regions(features: torch.Tensor, label_map: torch.Tensor, classes: Sequence[int]) -> Regions:
    """Eq. (5)/(6) regions: per stuff class and image, the class-averaged feature, slot (class, image)."""
    classes = _sorted_classes(classes)
    lm = at_feature_size(label_map, features)
    b, h, w = lm.shape
    pos = class_positions(lm, classes)
    image = torch.arange(b, device=features.device)[:, None, None].expand_as(pos)
    index = torch.where(pos >= 0, pos * b + image, torch.full_like(pos, -1)).reshape(-1)
    means, sizes = region_means(features, index, len(classes) * b)
    shape = (len(classes), b, 1)
    order = torch.arange(b, device=features.device)[None, :, None].expand(shape)
    return Regions(means.view(*shape, -1), (sizes > 0).view(shape), order, classes)


# ----------------------------------------------------------------------------- classifier check


def pooled_logits(classifier: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    """The classifier applied to pooled features [n, D] as 1x1 maps: logits [n, C].

    A classifier with a ``pointwise`` method (``ASPPClassifier``) computes this exactly as a
    linear layer of its convolutions' centre taps: on a 1x1 map every other tap of a 3x3 conv
    with padding = dilation falls on the zero padding. Any other module is run on [n, D, 1, 1].
    """
    if hasattr(classifier, "pointwise"):
        return classifier.pointwise(feats)
    return classifier(feats[:, :, None, None]).flatten(1)


@torch.no_grad()
def classifier_agrees(classifier: nn.Module, regions: Regions) -> torch.Tensor:
    """SIM's check, per slot [K, B, k]: the classifier's argmax over the pooled feature is the
    slot's class (computed for every slot; the caller combines it with ``valid``)."""
    feats = regions.feats.reshape(-1, regions.feats.shape[-1])
    if feats.shape[0] == 0:
        return regions.valid.clone()
    pred = pooled_logits(classifier, feats.float()).argmax(dim=1).view(regions.valid.shape)
    return pred == regions.class_ids()
