"""Fidelity to the written equations and the reference setup: the poly horizon (poly_iters !=
iters), the per-level memories through the training loop, and the documented loss scales
(Eq. 3 against IW-MaxSquare, Eq. 7's normalisation). See docs/method.md."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import Dataset

from pipeline import train
from pipeline.train import hierarchy_memory
from pipeline.config import TrainConfig, preset
from pipeline.errors import PhfaError
from pipeline.losses import alignment as al
from pipeline.losses import memory as memories
from pipeline.losses.maxsquare import class_balanced_max_square
from pipeline.losses.perceptual import SegPerceptualLoss
from pipeline.models.deeplab import build_deeplab
from pipeline.runtime.progress import Silent

# ----------------------------------------------------------------------------- poly schedule


def test_paper_preset_decays_over_250k_and_stops_at_120k():
    cfg = preset("paper")
    assert (cfg.iters, cfg.poly_iters, cfg.poly_power) == (120_000, 250_000, 0.9)
    assert preset("toy").poly_iters == 0  # the toy preset decays over its own iters
    f = train.poly_schedule(cfg.poly_iters or cfg.iters, cfg.poly_power)
    assert f(0) == 1.0
    assert f(50_000) == pytest.approx(0.8 ** 0.9, rel=1e-12)          # (1 - 50k / 250k)^0.9
    assert f(cfg.iters) == pytest.approx(0.52 ** 0.9, rel=1e-12)       # at the stop: 0.555, not 0
    assert f(cfg.iters) == pytest.approx(0.5551, abs=1e-4)


def test_poly_lr_at_0_k_and_stop_with_horizon_beyond_iters():
    """The segmentor's two groups and D, stepped as train.run steps them, with iters 4 and
    poly_iters 10: lr(k) = lr0 * mult * (1 - k / 10)^0.9 up to the stop, which is not 0."""
    cfg = dataclasses.replace(preset("toy"), iters=4, poly_iters=10, lr=0.01, lr_d=1e-3)
    model = build_deeplab("resnet18", 19, "none")
    opt = torch.optim.SGD(model.param_groups(cfg.lr), lr=cfg.lr, momentum=0.9)
    opt_d = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr_d)
    horizon = cfg.poly_iters or cfg.iters  # as train.run
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, train.poly_schedule(horizon, cfg.poly_power)) for o in (opt, opt_d)]
    seen = {}
    for k in range(cfg.iters + 1):
        seen[k] = ([g["lr"] for g in opt.param_groups], opt_d.param_groups[0]["lr"])
        if k < cfg.iters:
            opt.step()
            opt_d.step()
            for s in scheds:
                s.step()
    for k in (0, 2, 4):
        f = (1 - k / 10) ** 0.9
        assert seen[k][0] == pytest.approx([0.01 * f, 0.1 * f], rel=1e-12)
        assert seen[k][1] == pytest.approx(1e-3 * f, rel=1e-12)
    assert seen[0][0] == pytest.approx([0.01, 0.1])
    assert seen[4][0][0] == pytest.approx(0.01 * 0.6 ** 0.9) and seen[4][0][0] > 0


def test_poly_iters_validated():
    paper = preset("paper")
    assert paper.overrides(["iters=1000"]).poly_iters == 250_000
    assert paper.overrides(["poly_iters=0"]).poly_iters == 0
    with pytest.raises(PhfaError, match="poly_iters 100000 is shorter than iters 120000"):
        paper.overrides(["poly_iters=100000"])
    with pytest.raises(PhfaError, match="poly_iters"):
        paper.overrides(["iters=300000"])
    with pytest.raises(PhfaError, match="memory_size"):
        paper.overrides(["memory_size=0"])


# ----------------------------------------------------------------------------- memories in the loop


class _Tiny(Dataset):
    def __init__(self, n=2, labels=True):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 32, 64, generator=g)
        self.y = torch.randint(0, 19, (n, 32, 64), generator=g) if labels else torch.full((n, 32, 64), 255)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, key):
        i = key[0]
        return self.x[i], self.y[i], f"img{i}"


def test_run_builds_one_memory_per_level_and_saves_both(tmp_path):
    """train.run keeps a thing memory of memory_size_object (0: SIM's 10 w) and a stuff memory of w;
    last.pt holds both under "memory", history records the filled counts per class."""
    cfg = dataclasses.replace(preset("toy"), iters=2, batch_size=2, memory_size=3, memory_size_object=0,
                              ckpt_every=1000, log_every=1)
    model = build_deeplab("resnet18", 19, "none", bn="trainable")
    phases = [train.Phase("p", "s", 2, adversarial=False, align=("object", "background"))]
    data = train.Data(sources={"s": _Tiny()}, target=_Tiny(labels=False))
    state = train.run(cfg, model, phases, data, tmp_path, Silent(), device=torch.device("cpu"))
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    mem = ck["memory"]
    assert mem["objects.bank"].shape == (19, 30, 512) and mem["background.bank"].shape == (19, 3, 512)
    counts = state.history[0]["memory_counts"]
    assert len(counts) == 19 and counts == (mem["objects.count"] + mem["background.count"]).tolist()
    restored = memories.HierarchyMemory(19, 512, object_size=30, background_size=3)
    restored.load_state_dict(mem)  # what a --resume does
    # memory_size_object overrides the 10 w rule; a single level builds only its memory
    cfg2 = dataclasses.replace(cfg, memory_size_object=7)
    model = build_deeplab("resnet18", 19, "none", bn="trainable")
    (tmp_path / "b").mkdir()
    train.run(cfg2, model, [train.Phase("p", "s", 1, adversarial=False, align=("object",))], data, tmp_path / "b",
              Silent(), device=torch.device("cpu"))
    mem2 = torch.load(tmp_path / "b/last.pt", weights_only=True)["memory"]
    assert set(mem2) == {"objects.bank", "objects.count", "objects.ptr", "objects.joined"} and mem2["objects.bank"].shape[1] == 7


def test_train_step_classifier_check_switch(monkeypatch):
    """train_step hands the model's classifier to the memory updates unless the check is off."""
    seen = []
    real = al.update_memory_objects

    def spy(*a, **k):
        seen.append(k.get("classifier"))
        return real(*a, **k)
    monkeypatch.setattr(al, "update_memory_objects", spy)
    model = build_deeplab("resnet18", 19, "none", bn="trainable")
    ph = train.Phase("p", "s", 1, adversarial=False, align=("object",))
    for check in (True, False):
        cfg = dataclasses.replace(preset("toy"), memory_classifier_check=check)
        opt = torch.optim.SGD(model.param_groups(0.0), lr=0.0)
        mem = memories.HierarchyMemory(19, model.feature_dim, object_size=4, background_size=0)
        src, tgt = _Tiny(), _Tiny(labels=False)
        stream = iter([(src.x, src.y, ["a", "b"])] * 2)
        tstream = iter([(tgt.x, tgt.y, ["a", "b"])] * 2)
        out = train.train_step(cfg, model, None, opt, None, mem, ph, stream, tstream, torch.device("cpu"), False)
        assert "obj" in out and out["obj"].item() == 0.0  # 4 slots not full yet (or no sample passed the check)
    assert seen[0] is model.classifier and seen[1] is None


# ----------------------------------------------------------------------------- documented loss scales


def test_max_square_is_c_over_2_times_iw_maxsquare():
    """Eq. 3 as written (/2, no 1/C) against the reference IW-MaxSquare (1/(B C), no /2)."""
    torch.manual_seed(0)
    prob = torch.softmax(torch.randn(2, 19, 6, 5) * 2, dim=1)
    b, c, h, w = prob.shape
    pred = prob.argmax(1)
    ref = 0.0
    for i in range(b):
        hist = torch.bincount(pred[i].flatten(), minlength=c).float()
        weight = 1 / torch.clamp(hist ** 0.2 * hist.sum() ** 0.8, min=1.0)
        ref = ref - (prob[i] ** 2 * weight[pred[i]][None]).sum()
    ref = ref / (b * c)
    ours = class_balanced_max_square(prob, alpha=0.2)
    assert ours.item() == pytest.approx(ref.item() * c / 2, rel=1e-5)


class _Seg(torch.nn.Module):
    """logits = 2 * red channel + 1, one class."""

    def forward(self, x):
        return x, 2 * x[:, :1] + 1


def test_perceptual_raw_logits_option():
    real = torch.zeros(1, 3, 1, 2)
    real[0, 0] = torch.tensor([[-1.0, 1.0]])   # red 0 and 1 -> logits 1 and 3
    fake = torch.zeros(1, 3, 1, 2)             # red 0.5 everywhere -> logits 2
    raw = SegPerceptualLoss(_Seg(), mean=(0, 0, 0), std=(1, 1, 1), lambda_ppl=1.0, lambda_recon=0.0,
                            normalize="none")
    assert raw(real, fake, real).item() == pytest.approx(1.0)  # |1 - 2|, |3 - 2| -> mean 1
    inst = SegPerceptualLoss(_Seg(), mean=(0, 0, 0), std=(1, 1, 1), lambda_ppl=1.0, lambda_recon=0.0)
    # instance norm: real -> (-1, 1) / sqrt(1 + eps); the constant fake -> (0, 0)
    assert inst(real, fake, real).item() == pytest.approx(1 / (1 + 1e-5) ** 0.5, rel=1e-6)
    with pytest.raises(ValueError):
        SegPerceptualLoss(_Seg(), normalize="batch")


def test_config_documents_and_defaults_sim_options():
    cfg = TrainConfig()
    sim = hierarchy_memory(cfg.overrides(["memory_size_object=0"]), ("object", "background"), 8, torch.device("cpu"))
    assert (sim.objects.size, sim.background.size) == (500, 50)                        # SIM's 10 w, an option
    ours = hierarchy_memory(cfg, ("object", "background"), 8, torch.device("cpu"))
    assert (ours.objects.size, ours.background.size) == (50, 50)
