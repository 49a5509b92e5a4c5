"""The adapt and retrain step never waits for the device: no call in `train_step` reads a tensor's
value on the host (`.item()`, `.tolist()`, `.numpy()`, `.cpu()`, `nonzero`, truth/int/float
conversions), with every PHFA level active and the memories full, so each alignment term does
its whole work (the shapes are fixed, so the same kernels run whatever the maps hold). On a GPU each such call stalls the stream until the queued kernels finish."""
from __future__ import annotations

import collections
import dataclasses

import pytest
import torch

from pipeline import train
from pipeline.config import preset
from pipeline.losses import memory as memories
from pipeline.models.deeplab import build_deeplab

SYNC_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "nonzero")
SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero")


class _Stream:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __next__(self):
        return self.x, self.y, ["n"]


def _scene(b=2, h=64, w=128):
    """Labels with road, sky, cars and persons in blocks, so every level finds regions."""
    y = torch.zeros(b, h, w, dtype=torch.long)           # road
    y[:, : h // 4] = 10                                    # sky
    y[:, h // 2:, 8:40] = 13                               # a car
    y[:, h // 2:, 70:80] = 11                              # a person
    y[:, h // 2: h // 2 + 8, 100:120] = 13                 # another car
    return y


def _step(target_labels: bool):
    torch.manual_seed(0)
    cfg = dataclasses.replace(preset("paper"), backbone="resnet18", pretrained="none", lr=1e-3,
                              memory_size=4, memory_size_object=4)
    model = build_deeplab("resnet18", 19, "none", bn=cfg.bn)
    D = train.OutputDiscriminator(19)
    cpu = torch.device("cpu")
    opt = train.make_optimizer(cfg, model)
    opt_d = train.make_d_optimizer(cfg, D)
    ph = train.Phase("p", "s", 10, adversarial=True, align=("object", "category", "background"),
                     target_labels=target_labels)
    mem = train.hierarchy_memory(cfg, ph.align, model.feature_dim, cpu)
    for m in (mem.objects, mem.background):                # full rings: the gates let every class in
        for c in range(19):
            m.push(c, torch.rand(m.size, model.feature_dim))
    y = _scene()
    src = _Stream(torch.randn(2, 3, 64, 128), y)
    tgt = _Stream(torch.randn(2, 3, 64, 128), y if target_labels else torch.full_like(y, 255))
    return lambda: train.train_step(cfg, model, D, opt, opt_d, mem, ph, src, tgt, cpu, False), mem


def _in_fused_adam(event) -> bool:
    # The CPU build of the fused Adam kernel reads its step counter, a CPU tensor there; on a GPU
    # the counter lives on the device and the kernel reads it there.
    while event is not None:
        if event.name.startswith("aten::_fused_adam"):
            return True
        event = event.cpu_parent
    return False


def _count(fn, monkeypatch) -> tuple[collections.Counter, collections.Counter]:
    calls = collections.Counter()

    def wrap(owner, name):
        f = getattr(owner, name)

        def counted(*a, **k):
            calls[name] += 1
            return f(*a, **k)
        monkeypatch.setattr(owner, name, counted)
    for m in SYNC_METHODS:
        wrap(torch.Tensor, m)
    wrap(torch, "nonzero")
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = fn()
    monkeypatch.undo()
    ops = collections.Counter(e.name for e in prof.events() if e.name in SYNC_OPS and not _in_fused_adam(e))
    return calls, ops, out


@pytest.mark.parametrize("target_labels", [False, True], ids=["adapt", "retrain"])
def test_train_step_reads_nothing_back_from_the_device(target_labels, monkeypatch):
    step, mem = _step(target_labels)
    step()                                                  # first step: memories see a real batch
    calls, ops, out = _count(step, monkeypatch)
    assert {"obj", "back", "class", "adv", "d"} <= set(out)
    if target_labels:  # pseudo-labels hold cars, persons, road and sky: both terms compare regions
        assert float(out["obj"]) > 0 and float(out["back"]) > 0
    assert sum(calls.values()) == 0, dict(calls)
    assert sum(ops.values()) == 0, dict(ops)
    # the counter sees a read when there is one: the participation record reads the device
    calls, ops, _ = _count(lambda: memories.participation(mem, [str(i) for i in range(19)]), monkeypatch)
    assert calls["tolist"] >= 1
