"""Where the feature alignment of Eq. 1 and Eq. 4-6 takes its features from.

- Eq. (4) ``correct_map``: the ground truth where the prediction agrees with it, else ignore.
- Label maps at feature resolution (``downsample_labels``, nearest).
- Eq. (1) regions: connected components of each thing class (``components``;
  ``skimage.measure.label``, connectivity 2, on the CPU), the ``top_k`` largest per class and
  image (``largest_per_group``; SIM: 10), and each component's masked-average feature
  (``object_means``).
- Eq. (5)/(6) regions: per image and stuff class present, the class-averaged feature
  (``class_means``).
- SIM's classifier check (``classifier_agrees``): the segmentor's classifier applied to a pooled
  feature (``pooled_logits``) must predict the region's class for it to be stored.

The eps of Eq. (1)/(5)/(6) only guards an empty mask; every averaged region has at least one
pixel, so it never changes a value. Features are averaged in float32 (safe under autocast) and
keep the autograd graph of the features they come from.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from skimage.measure import label as connected_components

from pipeline.classes import IGNORE

EPS = 1e-6
TOP_K = 10               # SIM: the 10 largest components per class and image


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
    return downsample_labels(label_map, features.shape[-2:])


# ----------------------------------------------------------------------------- region features


def components(label_map: torch.Tensor, classes: Sequence[int], connectivity: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Connected components of the given classes, numbered across the batch.

    Returns (index [B*h*w] int64: component id or -1, cls [n], image [n], pixels [n]: class,
    image and pixel count of each component). One host transfer of the label map;
    scikit-image labels all classes of an image at once (touching regions of different classes
    stay separate components, as labelling each class's mask on its own would give).
    """
    lm = label_map.detach().cpu().numpy().astype(np.int64)
    wanted = np.asarray(sorted(set(int(c) for c in classes)), dtype=np.int64)
    index = np.full(lm.shape, -1, dtype=np.int64)
    comp_cls: list[np.ndarray] = []
    comp_img: list[np.ndarray] = []
    comp_px: list[np.ndarray] = []
    offset = 0
    for b in range(lm.shape[0]):
        mask = np.isin(lm[b], wanted)
        if not mask.any():
            continue
        # Shift by one so class 0 is not scikit-image's background.
        shifted = np.where(mask, lm[b] + 1, 0)
        comp, n = connected_components(shifted, background=0, connectivity=connectivity, return_num=True)
        cls_of = np.zeros(n + 1, dtype=np.int64)
        cls_of[comp.ravel()] = shifted.ravel() - 1  # every pixel of a component has its class
        index[b] = np.where(comp > 0, comp - 1 + offset, -1)
        comp_cls.append(cls_of[1:])
        comp_img.append(np.full(n, b, dtype=np.int64))
        comp_px.append(np.bincount(comp.ravel(), minlength=n + 1)[1:].astype(np.int64))
        offset += n
    if not comp_cls:
        empty = np.zeros(0, dtype=np.int64)
        return index.reshape(-1), empty, empty, empty
    return index.reshape(-1), np.concatenate(comp_cls), np.concatenate(comp_img), np.concatenate(comp_px)


def largest_per_group(image: np.ndarray, cls: np.ndarray, pixels: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` largest components of each (image, class); ``k`` <= 0 keeps all.

    Ties keep the component found first (scikit-image's raster order)."""
    n = len(cls)
    if k <= 0 or n == 0:
        return np.ones(n, dtype=bool)
    order = np.lexsort((np.arange(n), -pixels, cls, image))  # group, then size desc, then id
    g_img, g_cls = image[order], cls[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (g_img[1:] != g_img[:-1]) | (g_cls[1:] != g_cls[:-1])
    starts = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    rank = np.arange(n) - starts
    keep = np.zeros(n, dtype=bool)
    keep[order[rank < k]] = True
    return keep


def region_means(features: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Masked averages sum(F * mask) / max(eps, |mask|) of n regions given a per-pixel region index.

    ``index`` [B*h*w] holds a region id per pixel or -1. A single ``index_add`` over all
    pixels (the -1 pixels go to a discarded extra row), differentiable w.r.t. ``features``.
    """
    d = features.shape[1]
    flat = features.float().permute(0, 2, 3, 1).reshape(-1, d)
    idx = torch.where(index >= 0, index, torch.full_like(index, n))
    sums = flat.new_zeros(n + 1, d).index_add(0, idx, flat)[:n]
    sizes = torch.bincount(idx, minlength=n + 1)[:n].to(flat.dtype)
    return sums / sizes.clamp(min=EPS)[:, None]


def object_means(features, label_map, classes, connectivity, top_k
                  ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """(cls [n], image [n], features [n, D]) of the kept components (raster order per image)."""
    label_map = at_feature_size(label_map, features)
    index, cls, image, pixels = components(label_map, classes, connectivity)
    keep = largest_per_group(image, cls, pixels, top_k)
    if not keep.all():
        renumber = np.full(len(cls), -1, dtype=np.int64)
        renumber[keep] = np.arange(int(keep.sum()))
        index = np.where(index >= 0, renumber[np.maximum(index, 0)], -1)
        cls, image = cls[keep], image[keep]
    if len(cls) == 0:
        return cls, image, features.new_zeros(0, features.shape[1], dtype=torch.float32)
    index_t = torch.from_numpy(index).to(features.device)
    return cls, image, region_means(features, index_t, len(cls))


def class_means(features, label_map, classes) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """(cls [n], image [n], features [n, D]): per image and wanted class present, its mean feature."""
    label_map = at_feature_size(label_map, features).to(features.device)
    b = label_map.shape[0]
    k = max(int(c) for c in classes) + 1 if len(classes) else 1
    wanted = torch.tensor(sorted(set(int(c) for c in classes)), dtype=torch.long, device=features.device)
    image = torch.arange(b, device=features.device)[:, None, None].expand_as(label_map)
    # Region id = image * k + class for pixels of a wanted class.
    index = torch.where(torch.isin(label_map, wanted), image * k + label_map, torch.full_like(label_map, -1))
    index = index.reshape(-1)
    present = torch.bincount(index[index >= 0], minlength=b * k)[: b * k].nonzero().flatten()
    if present.numel() == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, features.new_zeros(0, features.shape[1], dtype=torch.float32)
    means = region_means(features, index, b * k)[present]
    present_np = present.cpu().numpy()
    return present_np % k, present_np // k, means


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
def classifier_agrees(classifier: nn.Module, cls: np.ndarray, feats: torch.Tensor) -> np.ndarray:
    """SIM's check: True where the classifier's argmax over the pooled feature is the region's class."""
    if len(cls) == 0:
        return np.zeros(0, dtype=bool)
    pred = pooled_logits(classifier, feats.float()).argmax(dim=1).cpu().numpy()
    return pred == cls
