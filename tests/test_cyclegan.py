"""CycleGAN (pipeline/models/cyclegan.py) and the Eq. (7) perceptual loss (pipeline/losses/perceptual.py)."""
import io
import math

import pytest
import torch

from pipeline.config import TranslateConfig
from torch import nn

from pipeline.errors import PhfaError
from pipeline.losses.perceptual import SegPerceptualLoss
from pipeline.models.cyclegan import (
    CycleGAN,
    ImagePool,
    PatchDiscriminator,
    ResnetGenerator,
    cycle_loss,
    from_gan_range,
    identity_loss,
    lsgan_loss,
    to_gan_range,
)

TINY = TranslateConfig(ngf=8, ndf=8, n_blocks=1, pool_size=2)


# ----------------------------------------------------------------------------- networks


@pytest.mark.parametrize(
    "ngf,n_blocks,n_down,h,w",
    [(4, 0, 2, 37, 53), (8, 1, 2, 37, 53), (4, 2, 2, 32, 33), (4, 1, 3, 29, 40), (4, 1, 2, 5, 7)],
)
def test_generator_keeps_size(ngf, n_blocks, n_down, h, w):
    torch.manual_seed(0)
    g = ResnetGenerator(3, 3, ngf=ngf, n_blocks=n_blocks, n_down=n_down)
    y = g(torch.rand(2, 3, h, w) * 2 - 1)
    assert y.shape == (2, 3, h, w)
    assert y.abs().max() <= 1.0  # tanh output


def test_residual_generator_starts_at_identity_and_learns_a_change():
    """residual=True: the first translation is the input (layout and edges kept), output in (-1, 1),
    and the gradient reaches the head that was initialised to zero."""
    torch.manual_seed(0)
    g = ResnetGenerator(3, 3, ngf=4, n_blocks=1, residual=True)
    x = torch.rand(2, 3, 37, 53) * 1.6 - 0.8
    y = g(x)
    assert y.shape == x.shape and torch.allclose(y, x, atol=1e-5)
    assert torch.equal(ResnetGenerator(3, 3, ngf=4, n_blocks=1, residual=False)(x).abs() < 1, torch.ones_like(x, dtype=torch.bool))
    (y - 0.5).square().mean().backward()
    head = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert head.weight.grad.abs().sum() > 0 and head.bias.grad.abs().sum() > 0
    with torch.no_grad():
        head.bias.fill_(2.0)                               # a large change saturates inside tanh
    z = g(torch.ones(1, 3, 8, 8))
    assert z.abs().max() < 1 and z.min() > 0.99
    with pytest.raises(ValueError):
        ResnetGenerator(3, 1, residual=True)


def test_generator_block_count():
    g = ResnetGenerator(ngf=8, n_blocks=3)
    n_res = sum(type(m).__name__ == "_ResidualBlock" for m in g.modules())
    assert n_res == 3


def test_patchgan_shapes():
    d = PatchDiscriminator(3, ndf=8, n_layers=3)
    # 4x4 convs, pad 1: stride 2 gives floor((n-2)/2)+1, stride 1 gives n-1.
    # 70 -> 35 -> 17 -> 8 -> 7 -> 6 ; 256 -> 128 -> 64 -> 32 -> 31 -> 30
    assert d(torch.zeros(1, 3, 70, 70)).shape == (1, 1, 6, 6)
    assert d(torch.zeros(2, 3, 256, 256)).shape == (2, 1, 30, 30)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 1]
    assert all(c.kernel_size == (4, 4) for c in convs)
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in d.modules()) == 3  # none on the first layer


# ----------------------------------------------------------------------------- losses


def test_loss_values_by_hand():
    pred = torch.tensor([[0.5, -1.0], [2.0, 1.0]])
    # real: (0.25 + 4 + 1 + 0) / 4 ; fake: (0.25 + 1 + 4 + 1) / 4
    assert lsgan_loss(pred, True).item() == pytest.approx(1.3125)
    assert lsgan_loss(pred, False).item() == pytest.approx(1.5625)
    assert cycle_loss(torch.tensor([1.0, 2.0, 3.0, 0.0]), torch.zeros(4)).item() == pytest.approx(1.5)
    assert identity_loss(torch.tensor([0.5, -0.5]), torch.tensor([0.0, 0.5])).item() == pytest.approx(0.75)


def test_ranges():
    x = torch.tensor([0.0, 0.25, 1.0])
    assert torch.allclose(to_gan_range(x), torch.tensor([-1.0, -0.5, 1.0]))
    assert torch.allclose(from_gan_range(to_gan_range(x)), x)
    assert from_gan_range(torch.tensor([-1.5, 1.5])).tolist() == [0.0, 1.0]


# ----------------------------------------------------------------------------- image pool


def test_image_pool_fill_then_mix_and_state_round_trip():
    torch.manual_seed(0)
    pool = ImagePool(3)
    first = torch.arange(2 * 1 * 2 * 2, dtype=torch.float32).view(2, 1, 2, 2)
    assert torch.equal(pool.query(first), first)  # not full: returned as is
    third = torch.full((1, 1, 2, 2), 100.0)
    assert torch.equal(pool.query(third), third)
    assert len(pool) == 3

    stored_before = {tuple(t.flatten().tolist()) for t in pool.images}
    swapped = kept = 0
    for k in range(40):
        new = torch.full((1, 1, 2, 2), 1000.0 + k)
        out = pool.query(new)
        if torch.equal(out, new):
            kept += 1
        else:
            swapped += 1
            key = tuple(out.flatten().tolist())
            assert key in stored_before  # a previously stored image
        stored_before = {tuple(t.flatten().tolist()) for t in pool.images}
        assert len(pool) == 3
    assert swapped > 5 and kept > 5  # the 50 % coin

    state = pool.state_dict()
    assert isinstance(state["images"], torch.Tensor) and state["images"].shape == (3, 1, 2, 2)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    other = ImagePool(3)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(pool.images, other.images))
    # same RNG state + same pool state -> same outputs (resume continues identically)
    x = torch.randn(4, 1, 2, 2)
    torch.manual_seed(5)
    a = pool.query(x)
    torch.manual_seed(5)
    b = other.query(x)
    assert torch.equal(a, b)


def test_image_pool_empty_state_and_size_zero():
    pool = ImagePool(4)
    p2 = ImagePool(4)
    p2.load_state_dict(pool.state_dict())
    assert len(p2) == 0
    x = torch.randn(3, 3, 4, 4, requires_grad=True)
    out = ImagePool(0).query(x)
    assert torch.equal(out, x) and not out.requires_grad
    pool.query(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError):
        pool.query(torch.zeros(1, 3, 5, 4))


def test_image_pool_generator_is_used():
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    p1, p2 = ImagePool(2, generator=g1), ImagePool(2, generator=g2)
    xs = [torch.randn(2, 1, 3, 3) for _ in range(10)]
    torch.manual_seed(0)
    o1 = [p1.query(x) for x in xs]
    torch.manual_seed(123)  # global RNG must not matter when a generator is given
    o2 = [p2.query(x) for x in xs]
    assert all(torch.equal(a, b) for a, b in zip(o1, o2))


# ----------------------------------------------------------------------------- schedule


def test_lr_schedule():
    f = CycleGAN.lr_lambda(100)
    assert f(0) == 1.0 and f(49) == 1.0 and f(50) == 1.0
    assert f(75) == pytest.approx(0.5)
    assert f(99) == pytest.approx(0.02)
    assert f(100) == 0.0 and f(150) == 0.0
    model = CycleGAN(TINY)
    opt_g, _ = model.optimizers()
    sched = torch.optim.lr_scheduler.LambdaLR(opt_g, CycleGAN.lr_lambda(10))
    lrs = []
    for _ in range(10):
        lrs.append(opt_g.param_groups[0]["lr"])
        opt_g.step()
        sched.step()
    assert lrs[:6] == [2e-4] * 6
    assert lrs[6] == pytest.approx(2e-4 * 0.8) and lrs[9] == pytest.approx(2e-4 * 0.2)
    assert opt_g.param_groups[0]["lr"] == 0.0
    with pytest.raises(PhfaError):
        CycleGAN.lr_lambda(0)


def test_optimizers_cover_all_params():
    model = CycleGAN(TINY)
    opt_g, opt_d = model.optimizers()
    g_ids = {id(p) for grp in opt_g.param_groups for p in grp["params"]}
    d_ids = {id(p) for grp in opt_d.param_groups for p in grp["params"]}
    assert g_ids == {id(p) for p in [*model.G_AB.parameters(), *model.G_BA.parameters()]}
    assert d_ids == {id(p) for p in [*model.D_A.parameters(), *model.D_B.parameters()]}
    assert opt_g.param_groups[0]["betas"] == (0.5, 0.999)


# ----------------------------------------------------------------------------- train step


def _batch(seed=0, n=2, h=32, w=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) * 2 - 1, torch.rand(n, 3, h, w, generator=g) * 2 - 1


@pytest.mark.parametrize("autocast_dtype", [None, torch.bfloat16])
def test_train_step_runs_and_updates(autocast_dtype):
    torch.manual_seed(0)
    model = CycleGAN(TINY)
    opt_g, opt_d = model.optimizers()
    g_before = [p.detach().clone() for p in model.G_AB.parameters()]
    d_before = [p.detach().clone() for p in model.D_B.parameters()]
    real_a, real_b = _batch()
    losses = model.train_step(real_a, real_b, opt_g, opt_d, autocast_dtype=autocast_dtype)
    expected = {"g_adv_ab", "g_adv_ba", "cycle_a", "cycle_b", "idt_a", "idt_b", "g_total", "d_a", "d_b"}
    assert set(losses) == expected
    for k, v in losses.items():
        assert v.dim() == 0 and not v.requires_grad and torch.isfinite(v), k
    parts = sum(v for k, v in losses.items() if k not in ("g_total", "d_a", "d_b"))
    assert torch.allclose(losses["g_total"], parts)
    assert any(not torch.equal(a, b) for a, b in zip(g_before, model.G_AB.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, model.D_B.parameters()))
    assert all(p.requires_grad for p in model.D_A.parameters())  # D unfrozen again
    assert len(model.pool_a) == 2 and len(model.pool_b) == 2


def test_train_step_loss_weights():
    torch.manual_seed(0)
    model = CycleGAN(TranslateConfig(ngf=4, ndf=4, n_blocks=0, lambda_cycle=3.0, lambda_identity=0.5))
    opt_g, opt_d = model.optimizers()
    real_a, real_b = _batch(1, n=1, h=32, w=24)
    with torch.no_grad():
        fake_b = model.G_AB(real_a)
        rec_a = model.G_BA(fake_b)
        idt_b = model.G_AB(real_b)
    losses = model.train_step(real_a, real_b, opt_g, opt_d)
    assert losses["cycle_a"].item() == pytest.approx(3.0 * cycle_loss(rec_a, real_a).item(), rel=1e-5)
    assert losses["idt_b"].item() == pytest.approx(1.5 * identity_loss(idt_b, real_b).item(), rel=1e-5)


def test_translate_and_state_dict_keys():
    model = CycleGAN(TINY)
    x = torch.rand(1, 3, 21, 19) * 2 - 1
    y = model.translate(x)
    assert y.shape == x.shape and not y.requires_grad
    assert model.G_AB.training  # mode restored
    prefixes = {k.split(".")[0] for k in model.state_dict()}
    assert prefixes == {"G_AB", "G_BA", "D_A", "D_B"}


# ----------------------------------------------------------------------------- perceptual (Eq. 7)


class _FakeSeg(nn.Module):
    """A 1x1 conv 'segmentor' returning (features, logits)."""

    def __init__(self, weight, bias, bn=False):
        super().__init__()
        k = weight.shape[0]
        self.conv = nn.Conv2d(weight.shape[1], k, 1)
        with torch.no_grad():
            self.conv.weight.copy_(weight.view(k, -1, 1, 1))
            self.conv.bias.copy_(bias)
        self.bn = nn.BatchNorm2d(k) if bn else nn.Identity()

    def forward(self, x):
        return x, self.bn(self.conv(x))


def test_perceptual_hand_value():
    # One class = the red channel in [0, 1]; with mean 0 / std 1 the logits are (x + 1) / 2.
    seg = _FakeSeg(torch.tensor([[1.0, 0.0, 0.0]]), torch.zeros(1))
    ppl = SegPerceptualLoss(seg, mean=(0, 0, 0), std=(1, 1, 1), lambda_ppl=0.3, lambda_recon=0.7)
    real = torch.zeros(1, 3, 1, 2)
    real[0, 0] = torch.tensor([[-1.0, 1.0]])  # red 0, 1 -> I = (-0.5, 0.5) / sqrt(0.25 + eps)
    fake = real.clone()
    fake[0, 0] = torch.tensor([[1.0, -1.0]])  # order flipped -> I = (0.5, -0.5) / s
    s = math.sqrt(0.25 + 1e-5)
    # |I(real) - I(fake)| = 1 / s per pixel; reconstruction equal to real -> 0
    assert ppl(real, fake, real).item() == pytest.approx(0.3 / s, rel=1e-6)
    assert ppl(real, real, fake).item() == pytest.approx(0.7 / s, rel=1e-6)
    # target direction adds the same kind of terms
    assert ppl(real, fake, real, real, fake, fake).item() == pytest.approx((0.3 + 0.3 + 0.7) / s, rel=1e-6)
    with pytest.raises(ValueError):
        ppl(real, fake, real, real_b=real)


def test_perceptual_matches_formula_with_imagenet_norm():
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(4, 3, generator=g), torch.randn(4, generator=g)
    ppl = SegPerceptualLoss(_FakeSeg(w, b), lambda_ppl=0.1, lambda_recon=0.2, num_classes=4)
    real, fake, rec = (torch.rand(2, 3, 5, 6, generator=g) * 2 - 1 for _ in range(3))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def inorm_logits(x):
        z = ((x + 1) / 2 - mean) / std
        logit = torch.einsum("kc,nchw->nkhw", w, z) + b.view(1, 4, 1, 1)
        mu = logit.mean(dim=(2, 3), keepdim=True)
        var = logit.var(dim=(2, 3), unbiased=False, keepdim=True)
        return (logit - mu) / torch.sqrt(var + 1e-5)

    expected = 0.1 * (inorm_logits(real) - inorm_logits(fake)).abs().mean() + 0.2 * (
        inorm_logits(real) - inorm_logits(rec)
    ).abs().mean()
    assert ppl(real, fake, rec).item() == pytest.approx(expected.item(), rel=1e-5)
    # different sizes for A and B still work (no shared batch)
    real_b, fake_a, rec_b = (torch.rand(1, 3, 7, 4, generator=g) * 2 - 1 for _ in range(3))
    assert torch.isfinite(ppl(real, fake, rec, real_b, fake_a, rec_b))


def test_perceptual_gradients_reach_generator_not_segmentor():
    torch.manual_seed(0)
    seg = _FakeSeg(torch.randn(5, 3), torch.randn(5), bn=True)
    with torch.no_grad():  # non-trivial BN statistics, which must not move
        seg.bn.running_mean.fill_(0.3)
        seg.bn.running_var.fill_(2.0)
    seg_before = {k: v.clone() for k, v in seg.state_dict().items()}
    ppl = SegPerceptualLoss(seg, num_classes=5)
    ppl.train()  # must not unfreeze the segmentor's BN
    assert not seg.training and all(not p.requires_grad for p in seg.parameters())

    gen, back = ResnetGenerator(ngf=4, n_blocks=1), ResnetGenerator(ngf=4, n_blocks=1)
    real = torch.rand(2, 3, 16, 16) * 2 - 1
    loss = ppl(real, gen(real), back(gen(real)))
    loss.backward()
    assert all(p.grad is not None for p in gen.parameters())
    assert any(p.grad.abs().sum() > 0 for p in gen.parameters())
    assert all(p.grad is not None for p in back.parameters())
    assert all(p.grad is None for p in seg.parameters())

    # full CycleGAN step with the perceptual term: the segmentor stays untouched and outside the model
    model = CycleGAN(TINY)
    opt_g, opt_d = model.optimizers()
    real_a, real_b = _batch(2)
    losses = model.train_step(real_a, real_b, opt_g, opt_d, perceptual=ppl)
    assert "ppl" in losses and torch.isfinite(losses["ppl"]) and losses["ppl"] > 0
    assert all(torch.equal(seg_before[k], v) for k, v in seg.state_dict().items())
    assert all(p.grad is None for p in seg.parameters())
    assert not any("seg" in k for k in model.state_dict())
    assert all(id(p) not in {id(q) for q in model.parameters()} for p in seg.parameters())


def test_perceptual_class_count_mismatch():
    seg = _FakeSeg(torch.randn(4, 3), torch.zeros(4))
    ppl = SegPerceptualLoss(seg, num_classes=19)
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    with pytest.raises(PhfaError, match="19"):
        ppl(x, x, x)


def test_reference_recipe_init_flip_and_eq7_weights():
    """Convolutions start from N(0, 0.02) with zero biases (the residual head stays at zero); the
    crops are flipped left-right per image with probability 1/2; Eq. 7's defaults are BDL's."""
    from pipeline.models.cyclegan import INIT_STD, PatchDiscriminator, ResnetGenerator
    from pipeline.stages.translate import _gan_batch

    torch.manual_seed(0)
    for net in (ResnetGenerator(ngf=32, n_blocks=2), PatchDiscriminator(ndf=32)):
        convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        w = torch.cat([m.weight.flatten() for m in convs])
        assert abs(w.std().item() - INIT_STD) < 0.001 and abs(w.mean().item()) < 0.001
        assert all(m.bias is None or not m.bias.any() for m in convs)
    res = ResnetGenerator(ngf=8, n_blocks=1, residual=True)
    assert not res.net[-1].weight.any()                      # still the identity at step 0
    cfg = TranslateConfig()
    assert (cfg.lambda_ppl, cfg.lambda_ppl_recon, cfg.hflip) == (0.1, 10.0, True)
    assert SegPerceptualLoss.__init__.__defaults__[2:4] == (0.1, 10.0)
    x = torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).view(4, 3, 8, 8)
    torch.manual_seed(3)
    plain = _gan_batch(x, (8, 8), hflip=False)
    torch.manual_seed(3)
    flipped = _gan_batch(x, (8, 8), hflip=True)
    same = [torch.equal(flipped[i], plain[i]) for i in range(4)]
    mirrored = [torch.equal(flipped[i], plain[i].flip(-1)) for i in range(4)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)
