"""Object-level (Eq. 1) and background (Eq. 4-6) feature alignment, with the source feature memory.

Source side (features detached, never in the graph):
- Eq. (4) ``correct_map``: ground truth where the prediction agrees with it, else ignore.
- Eq. (1), source: connected components of each thing class in the correct map; each
  component's masked-average feature is pushed into a per-class ring memory
  (``update_memory_objects``).
- Eq. (5): per image and stuff class present in the correct map, the class-averaged feature is
  pushed into a second memory of the same kind (``update_memory_background``). The ring order
  is Eq. (5)'s j = i mod zeta with zeta = w stored samples per class.

Target side (gradients flow into the target features):
- Eq. (1) ``object_loss``: components of the predicted (or pseudo-labelled) target map; each
  component's averaged feature is compared with the nearest stored sample of its class by L1.
- Eq. (6) ``background_loss``: the same with the target's class-averaged stuff features.

Choices where the paper is silent (DESIGN section 3):
- Label maps are taken at feature resolution (``downsample_labels``, nearest); a label map of
  another size is downsampled automatically.
- Components: ``skimage.measure.label`` with connectivity 2 (8-neighbourhood), on the CPU.
- The L1 distance is divided by the feature dimension D, so the loss scale does not depend on
  the backbone (512 vs 2048 channels).
- Reduction: Eq. (1) writes per-class means over components summed over classes and images,
  Eq. (6) a plain sum over images and classes. Both losses here are the mean over all
  compared components (resp. image-class pairs), so their scale does not grow with the batch
  size or the number of classes present; lambda_obj absorbs the constant.
- A class takes part once its memory holds at least one sample; with an empty memory (or no
  component) the loss is a zero that is connected to the graph, so ``backward`` still works.
- The eps / tau of Eq. (1)/(5)/(6) only guard an empty mask; every averaged region here has
  at least one pixel, so they never change a value.
- The memory stores float32 copies; query features are compared in float32 (safe under
  autocast).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from skimage.measure import label as connected_components

from pipeline.classes import IGNORE, NUM_CLASSES, STUFF_CLASSES, THING_CLASSES

EPS = 1e-6


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


def _at_feature_size(label_map: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    if label_map.dim() != 3 or features.dim() != 4 or label_map.shape[0] != features.shape[0]:
        raise ValueError(
            f"expected features [B, D, h, w] and label map [B, h, w], got {tuple(features.shape)} "
            f"and {tuple(label_map.shape)}"
        )
    return downsample_labels(label_map, features.shape[-2:])


# ----------------------------------------------------------------------------- memory


class FeatureMemory(nn.Module):
    """Per-class ring memory of source feature samples (x^s_{j,k} of Eq. 1, x^s_{j,b} of Eq. 5).

    Buffers (saved in ``state_dict`` so a resumed run restores the memory exactly):
    ``bank`` [K, w, D] float32, ``count`` [K] filled entries (<= w), ``ptr`` [K] next slot.
    Entries are detached copies: gradients never reach the memory.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, size: int = 50, dim: int = 2048):
        super().__init__()
        if num_classes < 1 or size < 1 or dim < 1:
            raise ValueError(f"num_classes, size and dim must be >= 1, got {num_classes}, {size}, {dim}")
        self.num_classes = num_classes
        self.size = size
        self.dim = dim
        self.register_buffer("bank", torch.zeros(num_classes, size, dim))
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros(num_classes, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, size={self.size}, dim={self.dim}"

    def _check(self, cls: int) -> int:
        cls = int(cls)
        if not 0 <= cls < self.num_classes:
            raise ValueError(f"class {cls} outside the memory's 0..{self.num_classes - 1}")
        return cls

    @torch.no_grad()
    def push(self, cls: int, feats: torch.Tensor) -> None:
        """Store ``feats`` [n, D] for class ``cls`` in ring order (the oldest entries are overwritten)."""
        cls = self._check(cls)
        if feats.dim() == 1:
            feats = feats[None]
        if feats.dim() != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"expected features [n, {self.dim}], got {tuple(feats.shape)}")
        n = feats.shape[0]
        if n == 0:
            return
        feats = feats.detach().to(device=self.bank.device, dtype=self.bank.dtype)
        skip = max(0, n - self.size)  # only the newest w of a large push survive
        feats = feats[skip:]
        # All on the buffers' device: no host synchronisation per push.
        start = self.ptr[cls] + skip
        slots = (start + torch.arange(feats.shape[0], device=self.bank.device)) % self.size
        self.bank[cls].index_copy_(0, slots, feats)
        self.ptr[cls] = (self.ptr[cls] + n) % self.size
        self.count[cls] = torch.clamp(self.count[cls] + n, max=self.size)

    def samples(self, cls: int) -> torch.Tensor:
        """The filled entries of class ``cls``: [m, D] (m = count, slot order, not age order)."""
        cls = self._check(cls)
        return self.bank[cls, : int(self.count[cls])]

    def has(self, cls: int) -> bool:
        return int(self.count[self._check(cls)]) > 0

    def counts(self) -> list[int]:
        """Filled entries per class (one host transfer)."""
        return [int(c) for c in self.count.tolist()]


# ----------------------------------------------------------------------------- region features


def _components(label_map: torch.Tensor, classes: Sequence[int], connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the given classes, numbered across the batch.

    Returns (index [B*h*w] int64: component id or -1, cls [n] int64: class of each component).
    One host transfer of the label map; scikit-image labels all classes of an image at once
    (touching regions of different classes stay separate components).
    """
    lm = label_map.detach().cpu().numpy().astype(np.int64)
    wanted = np.asarray(sorted(set(int(c) for c in classes)), dtype=np.int64)
    index = np.full(lm.shape, -1, dtype=np.int64)
    comp_cls: list[np.ndarray] = []
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
        offset += n
    cls = np.concatenate(comp_cls) if comp_cls else np.zeros(0, dtype=np.int64)
    return index.reshape(-1), cls


def _region_means(features: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
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


def _object_means(features, label_map, classes, connectivity) -> tuple[np.ndarray, torch.Tensor]:
    label_map = _at_feature_size(label_map, features)
    index, cls = _components(label_map, classes, connectivity)
    if len(cls) == 0:
        return cls, features.new_zeros(0, features.shape[1], dtype=torch.float32)
    index_t = torch.from_numpy(index).to(features.device)
    return cls, _region_means(features, index_t, len(cls))


def _class_means(features, label_map, classes) -> tuple[np.ndarray, torch.Tensor]:
    label_map = _at_feature_size(label_map, features).to(features.device)
    b = label_map.shape[0]
    k = max(int(c) for c in classes) + 1 if len(classes) else 1
    wanted = torch.tensor(sorted(set(int(c) for c in classes)), dtype=torch.long, device=features.device)
    image = torch.arange(b, device=features.device)[:, None, None].expand_as(label_map)
    # Region id = image * k + class for pixels of a wanted class.
    index = torch.where(torch.isin(label_map, wanted), image * k + label_map, torch.full_like(label_map, -1))
    index = index.reshape(-1)
    present = torch.bincount(index[index >= 0], minlength=b * k)[: b * k].nonzero().flatten()
    if present.numel() == 0:
        return np.zeros(0, dtype=np.int64), features.new_zeros(0, features.shape[1], dtype=torch.float32)
    means = _region_means(features, index, b * k)[present]
    return (present % k).cpu().numpy(), means


def object_features(
    features: torch.Tensor,
    label_map: torch.Tensor,
    classes: Sequence[int] = THING_CLASSES,
    connectivity: int = 2,
) -> list[tuple[int, torch.Tensor]]:
    """Eq. (1) object features: one (class, masked-average feature [D]) per connected component.

    ``features`` [B, D, h, w]; ``label_map`` [B, h, w] (CPU or device; resized to h, w with
    nearest if needed). Order: image, then scikit-image's raster order of components. The
    returned features keep the autograd graph of ``features``.
    """
    cls, feats = _object_means(features, label_map, classes, connectivity)
    return [(int(c), feats[i]) for i, c in enumerate(cls)]


def class_features(
    features: torch.Tensor,
    label_map: torch.Tensor,
    classes: Sequence[int] = STUFF_CLASSES,
) -> list[tuple[int, torch.Tensor]]:
    """Eq. (5)/(6) class features: per image and class present, the average feature over its pixels."""
    cls, feats = _class_means(features, label_map, classes)
    return [(int(c), feats[i]) for i, c in enumerate(cls)]


# ----------------------------------------------------------------------------- distances and losses


def nearest_l1(query: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """min_j ||q - b_j||_1 / D for each query row: [n, D] x [m, D] -> [n] (m >= 1)."""
    if query.dim() != 2 or bank.dim() != 2 or query.shape[1] != bank.shape[1] or bank.shape[0] == 0:
        raise ValueError(f"expected query [n, D] and non-empty bank [m, D], got {tuple(query.shape)}, {tuple(bank.shape)}")
    d = query.shape[1]
    dist = torch.cdist(query.float()[None], bank.to(query.device).float()[None], p=1.0)[0]
    return dist.min(dim=1).values / d


def _graph_zero(features: torch.Tensor) -> torch.Tensor:
    # A zero that depends on the features: backward works and DDP sees every parameter used.
    return features.flatten()[:1].float().sum() * 0.0


def _nearest_loss(cls: np.ndarray, feats: torch.Tensor, memory: FeatureMemory, features: torch.Tensor) -> torch.Tensor:
    filled = memory.counts()
    distances = []
    for c in np.unique(cls):
        c = int(c)
        if c >= memory.num_classes or filled[c] == 0:
            continue  # a class is used once its memory holds samples
        rows = torch.from_numpy(np.flatnonzero(cls == c)).to(feats.device)
        distances.append(nearest_l1(feats[rows], memory.bank[c, : filled[c]]))
    if not distances:
        return _graph_zero(features)
    return torch.cat(distances).mean()


def object_loss(
    target_feats: torch.Tensor,
    target_map: torch.Tensor,
    memory: FeatureMemory,
    classes: Sequence[int] = THING_CLASSES,
    connectivity: int = 2,
) -> torch.Tensor:
    """Eq. (1): mean over target components (of classes with stored samples) of the L1/D distance
    of the component's feature to the nearest stored source sample of its class."""
    cls, feats = _object_means(target_feats, target_map, classes, connectivity)
    return _nearest_loss(cls, feats, memory, target_feats)


def background_loss(
    target_feats: torch.Tensor,
    target_map: torch.Tensor,
    memory: FeatureMemory,
    classes: Sequence[int] = STUFF_CLASSES,
) -> torch.Tensor:
    """Eq. (6): mean over (target image, stuff class present) of the L1/D distance of the
    class-averaged feature to the nearest stored source sample of that class."""
    cls, feats = _class_means(target_feats, target_map, classes)
    return _nearest_loss(cls, feats, memory, target_feats)


def _push_all(cls: np.ndarray, feats: torch.Tensor, memory: FeatureMemory) -> int:
    for c in np.unique(cls):
        rows = torch.from_numpy(np.flatnonzero(cls == c)).to(feats.device)
        memory.push(int(c), feats[rows])
    return len(cls)


@torch.no_grad()
def update_memory_objects(
    source_feats: torch.Tensor,
    correct: torch.Tensor,
    memory: FeatureMemory,
    classes: Sequence[int] = THING_CLASSES,
    connectivity: int = 2,
) -> int:
    """Eq. (1), source side: push each thing component of the correct map (Eq. 4); returns how many."""
    cls, feats = _object_means(source_feats.detach(), correct, classes, connectivity)
    return _push_all(cls, feats, memory)


@torch.no_grad()
def update_memory_background(
    source_feats: torch.Tensor,
    correct: torch.Tensor,
    memory: FeatureMemory,
    classes: Sequence[int] = STUFF_CLASSES,
) -> int:
    """Eq. (5): push each (image, stuff class) average over the correct map (Eq. 4); returns how many."""
    cls, feats = _class_means(source_feats.detach(), correct, classes)
    return _push_all(cls, feats, memory)
