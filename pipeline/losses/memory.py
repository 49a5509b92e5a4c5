"""The source feature memories of Eq. 1 (thing components, x^s_{j,k}) and Eq. 5 (stuff class
averages, x^s_{j,b}): per-class rings of detached float32 samples, saved in ``state_dict`` so a
resumed run restores them exactly.

Sizes per level (``HierarchyMemory``): w = 50 samples per thing and per stuff class by default
(Table I, Sec. IV-B); ``memory_size_object = 0`` stores SIM's 10 w = 500 per thing class
(``OBJECT_MEMORY_FACTOR``). ``participation`` reads which classes have taken part in Eq. 1 / Eq. 6.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from pipeline.classes import NUM_CLASSES, STUFF_CLASSES, THING_CLASSES

OBJECT_MEMORY_FACTOR = 10  # SIM: num_ins = 10 * num_prototype


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
        if feats.shape[0] == 0:
            return
        n = feats.shape[0]
        dev = self.bank.device
        self.push_many(torch.full((1,), cls, dtype=torch.long, device=dev), feats.to(dev)[None],
                       torch.ones(1, n, dtype=torch.bool, device=dev), torch.arange(n, device=dev)[None])

    @torch.no_grad()
    def push_many(self, classes: torch.Tensor, feats: torch.Tensor, valid: torch.Tensor,
                  order: torch.Tensor) -> torch.Tensor:
        """Store, for each of K distinct classes, its valid candidates in ``order`` (ascending):
        ``classes`` [K], ``feats`` [K, n, D], ``valid`` and ``order`` [K, n]. Returns how many were
        valid (a tensor). The same as one ``push`` per class with the valid rows in that order,
        computed on the buffers' device with fixed shapes: no host synchronisation."""
        if feats.dim() != 3 or feats.shape[-1] != self.dim:
            raise ValueError(f"expected features [K, n, {self.dim}], got {tuple(feats.shape)}")
        k, n = valid.shape
        dev = self.bank.device
        feats = feats.detach().to(device=dev, dtype=self.bank.dtype)
        valid = valid.to(dev)
        if k == 0 or n == 0:
            return torch.zeros((), dtype=torch.long, device=dev)
        # rank of each candidate among its class's valid ones, in the given order
        key = torch.where(valid, order.to(dev), torch.full_like(order, torch.iinfo(torch.long).max, device=dev))
        sort = torch.argsort(key, dim=1)
        ar = torch.arange(n, device=dev).expand(k, n)
        rank = torch.empty_like(sort).scatter_(1, sort, ar)
        count = valid.sum(1)
        skip = (count - self.size).clamp(min=0)  # only the newest w of a large push survive
        write = valid & (rank >= skip[:, None])
        # ring slot: the class's pointer plus the rank (Eq. 5's j = i mod zeta)
        slot = (self.ptr[classes][:, None] + rank) % self.size
        local = torch.where(write, torch.arange(k, device=dev)[:, None] * self.size + slot,
                            torch.full_like(slot, k * self.size))
        # which candidate writes each slot (written slots are distinct; the rest go to a spare cell)
        writer = torch.full((k * self.size + 1,), -1, dtype=torch.long, device=dev).scatter_reduce(
            0, local.reshape(-1), torch.arange(k * n, device=dev), "amax")
        writer = writer[: k * self.size].view(k, self.size)
        rows = feats.reshape(k * n, self.dim)[writer.clamp(min=0)]
        self.bank[classes] = torch.where((writer >= 0)[..., None], rows, self.bank[classes])
        self.ptr[classes] = (self.ptr[classes] + count) % self.size
        self.count[classes] = torch.clamp(self.count[classes] + count, max=self.size)
        return count.sum()

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

    ``objects``: thing classes (Eq. 1), ``object_size`` samples per class (Table I: w = 50);
    ``background``: stuff classes (Eq. 5), ``background_size`` per class (SIM and Table I: w = 50).
    A size of 0 leaves that level out (None). ``state_dict`` holds both (``objects.bank``, ...),
    so a resumed run restores them; ``counts()`` is the filled entries per class over both.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, dim: int = 2048, object_size: int = 50,
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
