"""Object-level (Eq. 1) and background (Eq. 4-6) feature alignment: the two losses and the memory updates.

The regions and their features are in ``regions.py``, the memories in ``memory.py``.

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
- Memory sizes per level (``memory.HierarchyMemory``): w = 50 per thing and per stuff class
  (Table I); SIM's 10 w = 500 for things is an option.

Other choices where the paper is silent:
- Label maps are taken at feature resolution (``downsample_labels``, nearest); a label map of
  another size is downsampled automatically.
- Components: connectivity 2 (8-neighbourhood), computed on the features' device
  (``regions.components``; equal to ``skimage.measure.label``'s).
- The L1 distance is divided by the feature dimension D (as SIM: / 2048), so the loss scale does
  not depend on the backbone (512 vs 2048 channels).
- With nothing to compare (empty memory, no region) the loss is a zero that is connected to the
  graph, so ``backward`` still works.
- The eps / tau of Eq. (1)/(5)/(6) only guard an empty mask; every averaged region here has
  at least one pixel, so they never change a value.
- The memory stores float32 copies; query features are compared in float32 (safe under
  autocast).

No host round-trip: regions, gates, memory updates and the participation record are tensors of
fixed shape on the features' device (``regions.Regions``); nothing here calls ``.item()``,
``nonzero`` or branches on a tensor's value, so on a GPU the step never waits for the device.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from pipeline.classes import STUFF_CLASSES, THING_CLASSES
from pipeline.losses.memory import FeatureMemory
from pipeline.losses.regions import TOP_K, Regions, class_regions, classifier_agrees, object_regions


# ----------------------------------------------------------------------------- distances and losses


def nearest_l1(query: torch.Tensor, bank: torch.Tensor, filled: torch.Tensor | None = None) -> torch.Tensor:
    """min_j ||q - b_j||_1 / D for each query row: [..., n, D] x [..., m, D] -> [..., n] (m >= 1).

    ``filled`` [...]: how many leading rows of each bank hold samples (a ring memory fills its
    slots in order); the rest are left out. A bank with none gives +inf."""
    if (query.dim() < 2 or query.dim() != bank.dim() or query.shape[-1] != bank.shape[-1]
            or query.shape[:-2] != bank.shape[:-2] or bank.shape[-2] == 0):
        raise ValueError(f"expected query [..., n, D] and non-empty bank [..., m, D], got "
                         f"{tuple(query.shape)}, {tuple(bank.shape)}")
    d = query.shape[-1]
    dist = torch.cdist(query.float(), bank.to(query.device).float(), p=1.0)
    if filled is not None:
        stored = torch.arange(bank.shape[-2], device=dist.device) < filled[..., None]
        dist = dist.masked_fill(~stored[..., None, :], float("inf"))
    return dist.min(dim=-1).values / d


def _graph_zero(features: torch.Tensor) -> torch.Tensor:
    # A zero that depends on the features: backward works and DDP sees every parameter used.
    return features.flatten()[:1].float().sum() * 0.0


def _in_memory(regions: Regions, memory: FeatureMemory) -> Regions:
    """The regions of the classes the memory holds (a choice made on class ids, not tensor values)."""
    keep = [i for i, c in enumerate(regions.classes) if c < memory.num_classes]
    if len(keep) == len(regions.classes):
        return regions
    idx = torch.tensor(keep, dtype=torch.long).to(regions.valid.device)
    return Regions(regions.feats[idx], regions.valid[idx], regions.order[idx],
                   tuple(regions.classes[i] for i in keep))


def _nearest_loss(regions: Regions, memory: FeatureMemory, features: torch.Tensor,
                  require_full: bool) -> torch.Tensor:
    """sum over (image, class) of the mean over that pair's regions of the nearest-sample L1 / D."""
    regions = _in_memory(regions, memory)
    kc, b, k, d = regions.feats.shape
    if kc * b * k == 0:
        return _graph_zero(features)
    ids = regions.class_ids()[:, 0, 0]
    filled = memory.count[ids]                                            # [K]
    need = memory.size if require_full else 1
    use = regions.valid & (filled >= need)[:, None, None]                # [K, B, k]
    memory.joined[ids] = memory.joined[ids] | use.flatten(1).any(1)
    # each region against the stored samples of its own class: [K, B*k] x [K, w, D]
    dist = nearest_l1(regions.feats.reshape(kc, b * k, d), memory.bank[ids], filled).view(kc, b, k)
    dist = torch.where(use, dist, torch.zeros_like(dist))
    # (image, class) groups: mean over the group's regions, then the sum over groups.
    n = use.sum(dim=2).clamp(min=1).to(dist.dtype)
    return (dist.sum(dim=2) / n).sum() + _graph_zero(features)


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
    regions = object_regions(target_feats, target_map, classes, connectivity, top_k)
    return _nearest_loss(regions, memory, target_feats, require_full)


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
    regions = class_regions(target_feats, target_map, classes)
    return _nearest_loss(regions, memory, target_feats, require_full)


def _store(regions: Regions, memory: FeatureMemory, classifier: nn.Module | None) -> torch.Tensor:
    """Push each class's valid regions (in the order found) that pass the classifier check."""
    regions = _in_memory(regions, memory)
    kc, b, k, d = regions.feats.shape
    valid = regions.valid
    if classifier is not None:
        valid = valid & classifier_agrees(classifier, regions)
    return memory.push_many(regions.class_ids()[:, 0, 0], regions.feats.reshape(kc, b * k, d),
                            valid.reshape(kc, b * k), regions.order.reshape(kc, b * k))


@torch.no_grad()
def update_memory_objects(
    source_feats: torch.Tensor,
    correct: torch.Tensor,
    memory: FeatureMemory,
    classes: Sequence[int] = THING_CLASSES,
    connectivity: int = 2,
    top_k: int = TOP_K,
    classifier: nn.Module | None = None,
) -> torch.Tensor:
    """Eq. (1), source side: push thing components of the correct map (Eq. 4); returns how many
    (a tensor: reading it would wait for the device).

    ``top_k`` (SIM: 10): the k largest components per class and image; 0 = all.
    ``classifier``: when given, a component is stored only if the classifier applied to its
    pooled feature predicts its class (SIM's check; ``pooled_logits``).
    """
    regions = object_regions(source_feats.detach(), correct, classes, connectivity, top_k)
    return _store(regions, memory, classifier)


@torch.no_grad()
def update_memory_background(
    source_feats: torch.Tensor,
    correct: torch.Tensor,
    memory: FeatureMemory,
    classes: Sequence[int] = STUFF_CLASSES,
    classifier: nn.Module | None = None,
) -> torch.Tensor:
    """Eq. (5): push each (image, stuff class) average over the correct map (Eq. 4); returns how
    many (a tensor).

    ``classifier`` as in ``update_memory_objects`` (SIM checks its stuff features the same way).
    """
    regions = class_regions(source_feats.detach(), correct, classes)
    return _store(regions, memory, classifier)
