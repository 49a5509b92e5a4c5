"""The training loop's parts: schedules, paired flips, components in a batch, loss switches."""
import dataclasses

import numpy as np
import pytest
import torch

from pipeline import train
from pipeline.config import preset
from pipeline.data import pngio
from pipeline.data.dataconfig import DomainSpec
from pipeline.data.datasets import SegDataset
from pipeline.losses import alignment as al
from pipeline.losses import memory as memories
from pipeline.losses import regions
from pipeline.models.deeplab import build_deeplab


def test_poly_lr_of_each_param_group_after_k_steps():
    """lr of group g after k steps = base * mult_g * (1 - k / horizon) ** power, with the horizon
    `poly_iters` (when set) independent of where the run stops."""
    model = build_deeplab("resnet18", 19, "none")
    base, power = 0.01, 0.9
    for horizon in (10, 40):
        opt = torch.optim.SGD(model.param_groups(base), lr=base, momentum=0.9)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, train.poly_schedule(horizon, power))
        for k in range(7):
            want = [base * (1 - k / horizon) ** power, 10 * base * (1 - k / horizon) ** power]
            assert [g["lr"] for g in opt.param_groups] == pytest.approx(want, rel=1e-12), (horizon, k)
            opt.step()
            sched.step()
    assert train.poly_schedule(10, 0.9)(10) == 0.0 and train.poly_schedule(10, 0.9)(12) == 0.0


def test_optimizer_choice_keeps_the_classifier_at_ten_times_the_lr():
    """sgd (default) and adamw both take the model's two groups at lr and 10 lr; adamw's beta1 is
    `momentum`; anything else, or a momentum adamw cannot use, is one sentence."""
    model = build_deeplab("resnet18", 19, "none")
    cfg = dataclasses.replace(preset("toy"), optimizer="sgd", lr=0.002, momentum=0.8, weight_decay=1e-4)
    sgd = train.make_optimizer(cfg, model)
    adamw = train.make_optimizer(dataclasses.replace(cfg, optimizer="adamw"), model)
    assert type(sgd) is torch.optim.SGD and type(adamw) is torch.optim.AdamW
    for opt in (sgd, adamw):
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.002, 0.02])
        assert all(g["weight_decay"] == 1e-4 for g in opt.param_groups)
    assert adamw.param_groups[0]["betas"] == (0.8, 0.999)
    from pipeline.config import validate
    from pipeline.errors import PhfaError
    for bad, word in (({"optimizer": "adam"}, "optimizer=adam"), ({"optimizer": "adamw", "momentum": 1.0}, "momentum")):
        with pytest.raises(PhfaError, match=word):
            validate(dataclasses.replace(cfg, **bad))


def test_flips_keep_image_and_label_paired(tmp_path):
    """A flipped sample flips image and label together (a class at the left edge stays under its pixels)."""
    h, w = 4, 6
    img = np.zeros((h, w, 3), np.uint8)
    img[:, 0] = 200                      # a bright left column ...
    lab = np.full((h, w), 0, np.uint8)
    lab[:, 0] = 10                       # ... labelled sky
    pngio.write_png(tmp_path / "images" / "a.png", img)
    pngio.write_png(tmp_path / "labels" / "a.png", lab)
    ds = SegDataset(DomainSpec("f", "folder", tmp_path), "all", None, labels=True, hflip=True)
    x0, y0, _ = ds[(0, False)]
    x1, y1, _ = ds[(0, True)]
    assert (y0[:, 0] == 10).all() and (y1[:, -1] == 10).all() and (y1[:, 0] == 0).all()
    bright0 = x0.mean(0) > x0.mean()
    bright1 = x1.mean(0) > x1.mean()
    assert torch.equal(bright0, y0 == 10) and torch.equal(bright1, y1 == 10)
    # the sampler decides the flips, so the stream is a function of (seed, iteration)
    s = train.StreamSampler(n=5, batch=2, seed=3)
    it = iter(s)
    first = [next(it) for _ in range(10)]
    assert first == [x for _, x in zip(range(10), iter(train.StreamSampler(5, 2, 3)))]
    assert {f for _, f, _ in first} == {True, False}
    assert len({a for _, _, a in first}) == 10          # one augmentation seed per stream position
    again = iter(train.StreamSampler(5, 2, 3, start_batch=2))   # resuming at batch 2: same elements
    assert [next(again) for _ in range(6)] == first[4:10]


def test_photometric_by_hand():
    """A uniform grey image keeps its contrast and saturation: only brightness (and noise) change it."""
    from pipeline.data.transforms import photometric

    img = np.full((6, 8, 3), 100, np.uint8)
    seen = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        b = rng.uniform(0.7, 1.3, 3)[0]
        _, noise = rng.random(2) < 0.5
        if noise:
            continue
        seen += 1
        assert (photometric(img, seed) == np.uint8(round(100 * b))).all()
    assert seen >= 3
    for seed in range(20):                             # a wider spread draws U(0.5, 1.5) from the same stream
        rng = np.random.default_rng(seed)
        b = rng.uniform(0.5, 1.5, 3)[0]
        if not (rng.random(2) < 0.5)[1]:
            assert (photometric(img, seed, 0.5) == np.uint8(min(255, round(100 * b)))).all()
    col = np.zeros((6, 8, 3), np.uint8)
    col[..., 0] = 200                                  # pure red: saturation moves it towards grey or away
    outs = {photometric(col, s).tobytes() for s in range(5)}
    assert len(outs) == 5 and photometric(col, 7).tobytes() == photometric(col, 7).tobytes()


def test_photometric_only_when_set_and_labels_untouched(tmp_path):
    img = (np.random.default_rng(0).random((4, 6, 3)) * 255).astype(np.uint8)
    lab = np.arange(24, dtype=np.uint8).reshape(4, 6) % 19
    pngio.write_png(tmp_path / "images" / "a.png", img)
    pngio.write_png(tmp_path / "labels" / "a.png", lab)
    spec = DomainSpec("f", "folder", tmp_path)
    plain = SegDataset(spec, "all", None, labels=True)
    aug = SegDataset(spec, "all", None, labels=True, photometric=True)
    x0, y0, _ = plain[(0, False, 11)]
    x1, y1, _ = aug[(0, False, 11)]
    x2, _, _ = aug[(0, False)]                         # no seed from the sampler: no change
    assert torch.equal(x0, x2) and not torch.equal(x0, x1) and torch.equal(y0, y1)
    assert torch.equal(x1, aug[(0, False, 11)][0])     # a function of the seed alone
    wide = SegDataset(spec, "all", None, labels=True, photometric=True, photometric_range=0.6)
    assert not torch.equal(wide[(0, False, 11)][0], x1)  # the range reaches the transform


def test_components_are_numbered_per_image_in_a_batch():
    """Two images of a batch with a car each: two components, each averaged over its own image."""
    feats = torch.zeros(2, 1, 4, 4)
    feats[0, 0] = 1.0
    feats[1, 0] = 5.0
    feats[1, 0, 0, 0] = 7.0
    car = 13
    lm = torch.full((2, 4, 4), 255)
    lm[0, 0, 0] = car          # one pixel in image 0
    lm[1, 2:, 2:] = car        # a 2x2 car in image 1 ...
    lm[1, 0, 0] = car          # ... and a separate one-pixel car, not 8-connected to it
    out = [(c, f) for c, _, f in regions.object_regions(feats, lm, [car], 2, 0).found()]
    assert [c for c, _ in out] == [car, car, car]
    assert sorted(float(f[0]) for _, f in out) == [1.0, 5.0, 7.0]
    mem = memories.FeatureMemory(19, size=4, dim=1)
    assert al.update_memory_objects(feats, lm, mem, classes=[car]) == 3
    assert mem.counts()[car] == 3


class _Stream:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __next__(self):
        return self.x, self.y, ["n"]


def _one_step(ph, cfg, seed=0):
    torch.manual_seed(seed)
    model = build_deeplab("resnet18", 19, "none", bn="trainable")
    torch.manual_seed(1)
    xs, ys = torch.randn(2, 3, 32, 64), torch.randint(0, 19, (2, 32, 64))
    xt = torch.randn(2, 3, 32, 64)
    D = train.OutputDiscriminator(19) if ph.adversarial else None
    opt = torch.optim.SGD(model.param_groups(cfg.lr), lr=cfg.lr, momentum=0.9)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-4) if D is not None else None
    mem = memories.FeatureMemory(19, 4, model.feature_dim) if ph.align else None
    tgt = _Stream(xt, torch.full((2, 32, 64), 255)) if ph.needs_target else None
    out = train.train_step(cfg, model, D, opt, opt_d, mem, ph, _Stream(xs, ys), tgt, torch.device("cpu"), False)
    return model.state_dict(), out


def test_zero_loss_weights_reduce_the_step_to_source_only():
    cfg = dataclasses.replace(preset("toy"), lr=0.01)
    zero = dataclasses.replace(cfg, lambda_adv=0.0, lambda_obj=0.0, lambda_class=0.0, lambda_back=0.0)
    so, _ = _one_step(train.Phase("p", "s", 1, adversarial=False), cfg)
    full_zero, out = _one_step(train.Phase("p", "s", 1, adversarial=True, align=("object", "category", "background")),
                               zero)
    full, _ = _one_step(train.Phase("p", "s", 1, adversarial=True, align=("object", "category", "background")), cfg)
    assert {"adv", "class", "d"} <= set(out)  # the terms ran ...
    # ... but with zero weight the segmentor's update is the source-only one (BN statistics aside:
    # the target forward also moves the running means, so compare the parameters)
    params = {n for n, _ in build_deeplab("resnet18", 19, "none").named_parameters()}
    for k in params:
        assert torch.allclose(so[k], full_zero[k], atol=1e-7), k
    assert any(not torch.allclose(so[k], full[k], atol=1e-7) for k in params)  # non-zero weights do change it


def test_channels_last_on_cpu_is_the_same_step_in_another_layout():
    """`auto` trains in channels-last on the CPU (faster, bench/cpu_memory_format.py), `fp32` in the
    contiguous layout; both are one update of the same maths: parameters agree to float rounding."""
    from pipeline.inference import describe_precision, use_channels_last
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_channels_last("auto", cpu) and not use_channels_last("fp32", cpu)
    assert not use_channels_last("bf16", cpu)  # bf16 is a CUDA mode; on the CPU it stays contiguous fp32
    assert use_channels_last("bf16", cuda) and not use_channels_last("fp32", cuda)
    assert [describe_precision(p, cpu) for p in ("auto", "fp32")] == ["fp32+channels_last", "fp32"]
    assert describe_precision("auto", cuda) == "bf16+channels_last"
    ph = train.Phase("p", "s", 1, adversarial=True, align=("object", "category", "background"))
    states = {}
    for prec in ("auto", "fp32"):
        cfg = dataclasses.replace(preset("toy"), lr=0.01, precision=prec)
        torch.manual_seed(0)
        model = build_deeplab("resnet18", 19, "none", bn="trainable")
        if use_channels_last(prec, cpu):
            model.to(memory_format=torch.channels_last)
        torch.manual_seed(1)
        xs, ys = torch.randn(2, 3, 32, 64), torch.randint(0, 19, (2, 32, 64))
        xt = torch.randn(2, 3, 32, 64)
        D = train.OutputDiscriminator(19)
        opt = torch.optim.SGD(model.param_groups(cfg.lr), lr=cfg.lr, momentum=0.9)
        opt_d = torch.optim.Adam(D.parameters(), lr=1e-4)
        mem = memories.FeatureMemory(19, 4, model.feature_dim)
        out = train.train_step(cfg, model, D, opt, opt_d, mem, ph, _Stream(xs, ys),
                               _Stream(xt, torch.full((2, 32, 64), 255)), cpu, False)
        conv = next(p for n, p in model.named_parameters() if p.dim() == 4)
        assert conv.is_contiguous(memory_format=torch.channels_last) == (prec == "auto")
        states[prec] = ({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                        float(out["seg"]))
    (a, seg_a), (b, seg_b) = states["auto"], states["fp32"]
    assert seg_a == pytest.approx(seg_b, rel=1e-5)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5), k


def test_uint8_batches_are_normalised_on_the_device_as_the_loader_would():
    """The training loaders send uint8 images (a quarter of the bytes) and the step normalises them
    on its device: the same numbers as the float loader, so the same update."""
    from pipeline.data import transforms
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (2, 32, 64, 3), dtype=np.uint8)
    u = torch.stack([transforms.to_uint8_tensor(i) for i in imgs])
    f = torch.stack([transforms.to_tensor(i) for i in imgs])
    assert u.dtype == torch.uint8 and torch.equal(transforms.normalize(u), f)
    cfg = dataclasses.replace(preset("toy"), lr=0.01)
    ph = train.Phase("p", "s", 1, adversarial=True, align=("object", "category", "background"))
    ys = torch.randint(0, 19, (2, 32, 64), generator=torch.Generator().manual_seed(1))
    states = []
    for x in (u, f):
        torch.manual_seed(0)
        model = build_deeplab("resnet18", 19, "none", bn="trainable")
        D = train.OutputDiscriminator(19)
        opt, opt_d = train.make_optimizer(cfg, model), train.make_d_optimizer(cfg, D)
        mem = memories.FeatureMemory(19, 4, model.feature_dim)
        train.train_step(cfg, model, D, opt, opt_d, mem, ph, _Stream(x, ys), _Stream(x, torch.full_like(ys, 255)),
                         torch.device("cpu"), False)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
