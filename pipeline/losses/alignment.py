"""Object-level (Eq. 1) and background (Eq. 4-6) feature alignment, with the source feature memories.

Source side (features detached, never in the graph):
- Eq. (4) ``correct_map``: ground truth where the prediction agrees with it, else ignore.
- Eq. (1), source: connected components of each thing class in the correct map; each
  component's masked-average feature is pushed into the thing memory
  (``update_memory_objects``).
- Eq. (5): per image and stuff class present in the correct map, the class-averaged feature is
  pushed into the stuff memory (``update_memory_background``). The ring order is Eq. (5)'s
  j = i mod zeta with zeta stored samples per class.

Target side (gradients flow into the target features):
- Eq. (1) ``object_loss``: components of the predicted (or pseudo-labelled) target map; each
  component's averaged feature is compared with the nearest stored sample of its class by L1.
- Eq. (6) ``background_loss``: the same with the target's class-averaged stuff features.

Reductions, as the equations write them (docs/method.md, "Eq. 1" and "Eq. 6"):
- Eq. (1): sum over images i and thing classes k of the *mean over that class's components*
  in image i, (1/|T_k|) sum_{r in T_k} min_j ||f_r - x_{j,k}||_1 / D. A class with nine
  fragments weighs as much as a class with one object.
- Eq. (6): sum over images i and stuff classes b present of min_j ||f_{i,b} - x_{j,b}||_1 / D.
  That is Eq. (1)'s reduction with exactly one region per (image, class), so lambda_obj and
  lambda_back weigh terms of the same kind (SIM uses one lambda, 0.01, for both).
- Images of a batch are summed (the Sigma_i). At the paper's batch 1 this equals a mean; at
  batch B both terms are B times larger relative to the batch-mean cross-entropy.

Where the paper is silent, SIM (the code Eq. 1 comes from) decides; each is an option whose
default is SIM's value:
- ``top_k`` (10): only the k largest components per class and image take part, on the source
  (stored) and the target (compared) side, so one-pixel speckles at output stride 8 do not count.
  0 = every component.
- ``require_full`` (True): a class takes part in Eq. (1)/(6) once its memory is full (SIM waits
  until its ring pointer has passed w, i.e. one push later; the difference is one sample).
  False = as soon as one sample is stored.
- ``classifier`` (given by the training step): a pooled source feature is stored only if the
  segmentor's classifier, applied to it, predicts its class (SIM's check), on both levels.
  None = store every region.
- Memory sizes per level (``HierarchyMemory``): things 10 w = 500, stuff w = 50 (SIM's
  ``num_ins`` and ``num_prototype``).

Other choices where the paper is silent:
- Label maps are taken at feature resolution (``downsample_labels``, nearest); a label map of
  another size is downsampled automatically.
- Components: ``skimage.measure.label`` with connectivity 2 (8-neighbourhood), on the CPU.
- The L1 distance is divided by the feature dimension D (as SIM: / 2048), so the loss scale does
  not depend on the backbone (512 vs 2048 channels).
- With nothing to compare (empty memory, no region) the loss is a zero that is connected to the
  graph, so ``backward`` still works.
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
TOP_K = 10               # SIM: the 10 largest components per class and image
OBJECT_MEMORY_FACTOR = 10  # SIM: num_ins = 10 * num_prototype


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
    ``bank`` [K, w, D] float32, ``count`` [K] filled entries (<= w), ``ptr`` [K] next slot,
    ``joined`` [K] whether the class has taken part in its loss yet.
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
        # classes that have contributed a term to Eq. 1 / Eq. 6 (the participation record)
        self.register_buffer("joined", torch.zeros(num_classes, dtype=torch.bool))

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


class HierarchyMemory(nn.Module):
    """The two source memories of the hierarchy, one per level, each with its own size.

    ``objects``: thing classes (Eq. 1), ``object_size`` samples per class (SIM: 10 w = 500);
    ``background``: stuff classes (Eq. 5), ``background_size`` per class (SIM and Table I: w = 50).
    A size of 0 leaves that level out (None). ``state_dict`` holds both (``objects.bank``, ...),
    so a resumed run restores them; ``counts()`` is the filled entries per class over both.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, dim: int = 2048, object_size: int = 500,
                 background_size: int = 50):
        super().__init__()
        self.add_module("objects", FeatureMemory(num_classes, object_size, dim) if object_size > 0 else None)
        self.add_module("background", FeatureMemory(num_classes, background_size, dim)
                        if background_size > 0 else None)

    def counts(self) -> list[int]:
        mems = [m for m in (self.objects, self.background) if m is not None]
        if not mems:
            return []
        return [int(c) for c in sum(m.count for m in mems).tolist()]


def participation(memory: nn.Module | None, names: Sequence[str]) -> dict | None:
    """Which classes took part in Eq. 1 (things) and Eq. 6 (stuff) so far, by name (one transfer)."""
    things, stuff = level_memories(memory)
    if things is None and stuff is None:
        return None
    out = {}
    for level, mem, classes in (("object", things, THING_CLASSES), ("background", stuff, STUFF_CLASSES)):
        if mem is not None:
            joined = mem.joined.tolist()
            out[level] = [names[c] for c in classes if joined[c]]
    return out


def level_memories(memory: nn.Module | None) -> tuple[FeatureMemory | None, FeatureMemory | None]:
    """(thing memory, stuff memory) of a ``HierarchyMemory``; one ``FeatureMemory`` serves both."""
    if memory is None:
        return None, None
    if isinstance(memory, HierarchyMemory):
        return memory.objects, memory.background
    return memory, memory


# ----------------------------------------------------------------------------- region features


def _components(label_map: torch.Tensor, classes: Sequence[int], connectivity: int
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


def _object_means(features, label_map, classes, connectivity, top_k
                  ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """(cls [n], image [n], features [n, D]) of the kept components (raster order per image)."""
    label_map = _at_feature_size(label_map, features)
    index, cls, image, pixels = _components(label_map, classes, connectivity)
    keep = largest_per_group(image, cls, pixels, top_k)
    if not keep.all():
        renumber = np.full(len(cls), -1, dtype=np.int64)
        renumber[keep] = np.arange(int(keep.sum()))
        index = np.where(index >= 0, renumber[np.maximum(index, 0)], -1)
        cls, image = cls[keep], image[keep]
    if len(cls) == 0:
        return cls, image, features.new_zeros(0, features.shape[1], dtype=torch.float32)
    index_t = torch.from_numpy(index).to(features.device)
    return cls, image, _region_means(features, index_t, len(cls))


def _class_means(features, label_map, classes) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """(cls [n], image [n], features [n, D]): per image and wanted class present, its mean feature."""
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
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, features.new_zeros(0, features.shape[1], dtype=torch.float32)
    means = _region_means(features, index, b * k)[present]
    present_np = present.cpu().numpy()
    return present_np % k, present_np // k, means


def object_features(
    features: torch.Tensor,
    label_map: torch.Tensor,
    classes: Sequence[int] = THING_CLASSES,
    connectivity: int = 2,
    top_k: int = 0,
) -> list[tuple[int, torch.Tensor]]:
    """Eq. (1) object features: one (class, masked-average feature [D]) per connected component.

    ``features`` [B, D, h, w]; ``label_map`` [B, h, w] (CPU or device; resized to h, w with
    nearest if needed). ``top_k`` > 0 keeps only the k largest components per class and image
    (0 here: all). Order: image, then scikit-image's raster order of components. The returned
    features keep the autograd graph of ``features``.
    """
    cls, _, feats = _object_means(features, label_map, classes, connectivity, top_k)
    return [(int(c), feats[i]) for i, c in enumerate(cls)]


def class_features(
    features: torch.Tensor,
    label_map: torch.Tensor,
    classes: Sequence[int] = STUFF_CLASSES,
) -> list[tuple[int, torch.Tensor]]:
    """Eq. (5)/(6) class features: per image and class present, the average feature over its pixels."""
    cls, _, feats = _class_means(features, label_map, classes)
    return [(int(c), feats[i]) for i, c in enumerate(cls)]


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


def _nearest_loss(cls: np.ndarray, image: np.ndarray, feats: torch.Tensor, memory: FeatureMemory,
                  features: torch.Tensor, require_full: bool) -> torch.Tensor:
    """sum over (image, class) of the mean over that pair's regions of the nearest-sample L1 / D."""
    filled = memory.counts()
    need = memory.size if require_full else 1
    use = np.asarray([c < memory.num_classes and filled[c] >= need for c in cls], dtype=bool)
    if not use.any():
        return _graph_zero(features)
    cls, image = cls[use], image[use]
    memory.joined[torch.from_numpy(np.unique(cls)).to(memory.joined.device)] = True
    feats = feats[torch.from_numpy(np.flatnonzero(use)).to(feats.device)]
    dist = feats.new_zeros(len(cls))
    for c in np.unique(cls):
        rows = torch.from_numpy(np.flatnonzero(cls == c)).to(feats.device)
        dist = dist.index_put((rows,), nearest_l1(feats[rows], memory.bank[int(c), : filled[int(c)]]))
    # (image, class) groups: mean over the group's regions, then the sum over groups.
    _, group = np.unique(image * memory.num_classes + cls, return_inverse=True)
    group_t = torch.from_numpy(group.reshape(-1)).to(feats.device)
    n_groups = int(group.max()) + 1
    sums = dist.new_zeros(n_groups).index_add(0, group_t, dist)
    sizes = torch.bincount(group_t, minlength=n_groups).to(dist.dtype)
    return (sums / sizes).sum()


def object_loss(
    target_feats: torch.Tensor,
    target_map: torch.Tensor,
    memory: FeatureMemory,
    classes: Sequence[int] = THING_CLASSES,
    connectivity: int = 2,
    top_k: int = TOP_K,
    require_full: bool = True,
) -> torch.Tensor:
    """Eq. (1): sum over images i and thing classes k of the mean over the class's target
    components r of min_j ||f_r - x^s_{j,k}||_1 / D.

    ``top_k`` (SIM: 10): only the k largest components per class and image; 0 = all.
    ``require_full`` (SIM: True): a class takes part once its memory holds ``memory.size``
    samples; False: once it holds one. Classes without a stored sample never take part.
    """
    cls, image, feats = _object_means(target_feats, target_map, classes, connectivity, top_k)
    return _nearest_loss(cls, image, feats, memory, target_feats, require_full)


def background_loss(
    target_feats: torch.Tensor,
    target_map: torch.Tensor,
    memory: FeatureMemory,
    classes: Sequence[int] = STUFF_CLASSES,
    require_full: bool = True,
) -> torch.Tensor:
    """Eq. (6): sum over images i and stuff classes b present in the target map of
    min_j ||f_{i,b} - x^s_{j,b}||_1 / D, f_{i,b} the class-averaged target feature.

    ``require_full`` as in ``object_loss`` (SIM gates its stuff classes the same way).
    """
    cls, image, feats = _class_means(target_feats, target_map, classes)
    return _nearest_loss(cls, image, feats, memory, target_feats, require_full)


def _push_all(cls: np.ndarray, feats: torch.Tensor, memory: FeatureMemory) -> int:
    for c in np.unique(cls):
        rows = torch.from_numpy(np.flatnonzero(cls == c)).to(feats.device)
        memory.push(int(c), feats[rows])
    return len(cls)


def _checked(cls: np.ndarray, feats: torch.Tensor, classifier: nn.Module | None) -> tuple[np.ndarray, torch.Tensor]:
    if classifier is None or len(cls) == 0:
        return cls, feats
    keep = classifier_agrees(classifier, cls, feats)
    return cls[keep], feats[torch.from_numpy(np.flatnonzero(keep)).to(feats.device)]


@torch.no_grad()
def update_memory_objects(
    source_feats: torch.Tensor,
    correct: torch.Tensor,
    memory: FeatureMemory,
    classes: Sequence[int] = THING_CLASSES,
    connectivity: int = 2,
    top_k: int = TOP_K,
    classifier: nn.Module | None = None,
) -> int:
    """Eq. (1), source side: push thing components of the correct map (Eq. 4); returns how many.

    ``top_k`` (SIM: 10): the k largest components per class and image; 0 = all.
    ``classifier``: when given, a component is stored only if the classifier applied to its
    pooled feature predicts its class (SIM's check; ``pooled_logits``).
    """
    cls, _, feats = _object_means(source_feats.detach(), correct, classes, connectivity, top_k)
    cls, feats = _checked(cls, feats, classifier)
    return _push_all(cls, feats, memory)


@torch.no_grad()
def update_memory_background(
    source_feats: torch.Tensor,
    correct: torch.Tensor,
    memory: FeatureMemory,
    classes: Sequence[int] = STUFF_CLASSES,
    classifier: nn.Module | None = None,
) -> int:
    """Eq. (5): push each (image, stuff class) average over the correct map (Eq. 4); returns how many.

    ``classifier`` as in ``update_memory_objects`` (SIM checks its stuff features the same way).
    """
    cls, _, feats = _class_means(source_feats.detach(), correct, classes)
    cls, feats = _checked(cls, feats, classifier)
    return _push_all(cls, feats, memory)
