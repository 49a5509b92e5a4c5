"""Image-level alignment of the hierarchy (paper III-C-3): CycleGAN style translation.

Implements the translation networks G (source -> target, ``G_AB``) and F (target ->
source, ``G_BA``) of Eq. (7) with the CycleGAN reference recipe: ResNet generators,
70x70 PatchGAN discriminators, weights drawn from N(0, 0.02), least-squares GAN loss,
random horizontal flips of the crops (in the translate stage), cycle loss (lambda 10),
identity loss (lambda_idt 0.5, applied as lambda_idt * lambda_cycle), a history pool of
50 generated images for the discriminators, Adam(2e-4, betas 0.5/0.999) and a
learning rate constant for the first half of training and linearly decayed to zero over
the second half. The perceptual term of Eq. (7) lives in
:mod:`pipeline.losses.perceptual` and is passed to :meth:`CycleGAN.train_step`, so the
frozen segmentor never becomes part of this model's parameters or state dict.

``residual=True`` (the toy preset) makes each generator predict a change to its input:
``tanh(atanh(x) + net(x))`` with a zero-initialised last layer, so training starts at the
identity and a small generator trained for a few hundred steps keeps the layout and edges
of its source instead of re-drawing the scene blurred. The paper's generators are plain
(``residual=False``, the default).

Images handled here are in the GAN range [-1, 1]; :func:`to_gan_range` and
:func:`from_gan_range` convert from/to [0, 1].
"""
from __future__ import annotations

import contextlib
import itertools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import TranslateConfig  # hyper-parameters: ngf, ndf, n_blocks, lr, betas, lambdas, pool
from pipeline.errors import PhfaError

__all__ = [
    "ResnetGenerator",
    "PatchDiscriminator",
    "ImagePool",
    "lsgan_loss",
    "cycle_loss",
    "identity_loss",
    "CycleGAN",
    "to_gan_range",
    "from_gan_range",
]


# ----------------------------------------------------------------------------- ranges


def to_gan_range(img01: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1] (the generators end in tanh)."""
    return img01 * 2.0 - 1.0


def from_gan_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped so that rounding to uint8 never wraps."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- networks


INIT_STD = 0.02   # the CycleGAN reference's init_weights('normal', 0.02)


def init_normal(module: nn.Module, std: float = INIT_STD) -> None:
    """Convolution weights ~ N(0, std), biases 0, as the CycleGAN reference initialises its networks
    (their InstanceNorm layers have no affine part, so nothing else is initialised)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class _ResidualBlock(nn.Module):
    """(reflection pad, 3x3 conv, InstanceNorm, ReLU) x 2 without the last ReLU, plus skip."""

    def __init__(self, ch: int):
        super().__init__()
        # Bias is kept: InstanceNorm here has no affine part, as in the reference recipe.
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3),
            nn.InstanceNorm2d(ch),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3),
            nn.InstanceNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """ResNet translation network (c7s1-ngf, n_down x d, n_blocks x R, n_down x u, c7s1-out, tanh).

    Any input size works: the input is reflection-padded on the bottom/right to a multiple
    of ``2**n_down`` (so the strided convolutions and transposed convolutions line up) and
    the output is cropped back to exactly the input size.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, n_blocks: int = 9, n_down: int = 2,
                 residual: bool = False):
        super().__init__()
        if n_down < 0 or n_blocks < 0 or ngf < 1:
            raise ValueError("ResnetGenerator needs ngf >= 1, n_blocks >= 0, n_down >= 0")
        if residual and in_ch != out_ch:
            raise ValueError("a residual generator maps an image to an image of the same channels")
        self.n_down = n_down
        self.residual = residual
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_ch, ngf, 7),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(inplace=True),
        ]
        ch = ngf
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ch * 2), nn.ReLU(inplace=True)]
            ch *= 2
        layers += [_ResidualBlock(ch) for _ in range(n_blocks)]
        for _ in range(n_down):
            # output_padding=1 makes each upsampling exactly x2 on the padded (even) size.
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1),
                nn.InstanceNorm2d(ch // 2),
                nn.ReLU(inplace=True),
            ]
            ch //= 2
        head = nn.Conv2d(ch, out_ch, 7)
        layers += [nn.ReflectionPad2d(3), head] + ([] if residual else [nn.Tanh()])
        self.net = nn.Sequential(*layers)
        init_normal(self)
        if residual:
            # The change to the input starts at zero: the first translation is the image itself, so
            # layout and edges are there from step 0 and training learns the appearance shift.
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2**self.n_down
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            # Reflection needs the pad to be smaller than the side; tiny inputs fall back to replicate.
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        y = self.net(x)
        if self.residual:  # in tanh's pre-image, so the output stays in (-1, 1) with gradients everywhere
            y = torch.tanh(torch.atanh(x.clamp(-0.999, 0.999)) + y)
        return y[..., :h, :w]


class PatchDiscriminator(nn.Module):
    """PatchGAN: 4x4 convs, stride 2 for the first ``n_layers`` then stride 1, 1-channel map.

    With ``n_layers=3`` each output value sees a 70x70 input patch; a 70x70 input gives a
    6x6 map (70 -> 35 -> 17 -> 8 -> 7 -> 6). No norm on the first layer (the reference recipe).
    """

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        if n_layers < 1:
            raise ValueError("PatchDiscriminator needs n_layers >= 1")
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1),
                nn.InstanceNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1),
            nn.InstanceNorm2d(ndf * mult),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1),
        ]
        self.net = nn.Sequential(*layers)
        init_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ----------------------------------------------------------------------------- image pool


class ImagePool:
    """History of generated images shown to the discriminators (size 50 in the reference recipe).

    Until the pool is full every queried image is stored and returned as is. Afterwards each
    image is, with probability 1/2, swapped with a uniformly chosen stored image (the stored
    one is returned, the new one takes its place), else returned as is. The coin flips and
    choices draw from ``generator`` if given, otherwise from the global torch CPU RNG (which
    checkpoints save and restore, so a resumed run continues the same sequence). Drawing on
    the CPU keeps the step free of GPU synchronisation.

    Returned images are detached: the pool only feeds the discriminator update. All images
    of one pool share one shape (training uses fixed-size crops).
    """

    def __init__(self, size: int = 50, generator: torch.Generator | None = None):
        if size < 0:
            raise ValueError("ImagePool size must be >= 0")
        self.size = int(size)
        self.generator = generator
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.detach()
        if self.size == 0:
            return batch
        if self.images and batch.shape[1:] != self.images[0].shape:
            # Swapped-in history images must stack with the batch: train on fixed-size crops.
            raise ValueError(
                f"ImagePool holds images of shape {tuple(self.images[0].shape)}, got {tuple(batch.shape[1:])}"
            )
        out = []
        for img in batch:
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
                continue
            if torch.rand((), generator=self.generator).item() < 0.5:
                j = int(torch.randint(self.size, (), generator=self.generator).item())
                old = self.images[j].to(device=img.device, dtype=img.dtype)
                self.images[j] = img.clone()
                out.append(old)
            else:
                out.append(img)
        return torch.stack(out)

    def state_dict(self) -> dict:
        """The stored images as one tensor (N x C x H x W; empty 0-size tensor when N = 0)."""
        images = torch.stack([t.cpu() for t in self.images]) if self.images else torch.empty(0)
        return {"size": self.size, "images": images}

    def load_state_dict(self, state: dict) -> None:
        self.size = int(state["size"])
        images = state["images"]
        # Loaded on the CPU; query() moves a swapped-out image to the batch's device.
        self.images = [t.clone() for t in images] if images.numel() else []
        if len(self.images) > self.size:
            raise ValueError(f"ImagePool state holds {len(self.images)} images for a pool of {self.size}")


# ----------------------------------------------------------------------------- losses


def lsgan_loss(pred: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Least-squares GAN loss: mean squared distance of the patch map to 1 (real) or 0 (fake)."""
    pred = pred.float()  # under bf16 autocast the square would lose precision
    target = 1.0 if target_is_real else 0.0
    return ((pred - target) ** 2).mean()


def cycle_loss(rec: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L1 between the reconstruction F(G(x)) and x (unweighted)."""
    return F.l1_loss(rec.float(), real.float())


def identity_loss(idt: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L1 between G(y) and y for y already in G's output domain (unweighted)."""
    return F.l1_loss(idt.float(), real.float())


# ----------------------------------------------------------------------------- model


class CycleGAN(nn.Module):
    """G_AB (source A -> target B; "G" of Eq. 7), G_BA ("F"), D_A (judges domain A), D_B.

    The two image pools are plain attributes (not in ``state_dict``: they are training state,
    saved with :meth:`pools_state_dict` in ``last.pt`` next to the optimisers).
    """

    def __init__(self, config: TranslateConfig | None = None, in_ch: int = 3):
        super().__init__()
        self.config = config or TranslateConfig()
        c = self.config
        self.G_AB = ResnetGenerator(in_ch, in_ch, c.ngf, c.n_blocks, residual=c.residual)
        self.G_BA = ResnetGenerator(in_ch, in_ch, c.ngf, c.n_blocks, residual=c.residual)
        self.D_A = PatchDiscriminator(in_ch, c.ndf)
        self.D_B = PatchDiscriminator(in_ch, c.ndf)
        self.pool_a = ImagePool(c.pool_size)  # fakes of domain A = G_BA(real_b)
        self.pool_b = ImagePool(c.pool_size)  # fakes of domain B = G_AB(real_a)

    # -- optimisation ---------------------------------------------------------------

    def optimizers(self) -> tuple[torch.optim.Adam, torch.optim.Adam]:
        """(opt_G over both generators, opt_D over both discriminators), Adam(lr, (beta1, beta2))."""
        c = self.config
        betas = (c.beta1, c.beta2)
        opt_g = torch.optim.Adam(itertools.chain(self.G_AB.parameters(), self.G_BA.parameters()), lr=c.lr, betas=betas)
        opt_d = torch.optim.Adam(itertools.chain(self.D_A.parameters(), self.D_B.parameters()), lr=c.lr, betas=betas)
        return opt_g, opt_d

    @staticmethod
    def lr_lambda(total_iters: int) -> Callable[[int], float]:
        """LambdaLR factor: 1 for the first half of ``total_iters``, then linear to 0 at ``total_iters``."""
        if total_iters < 1:
            raise PhfaError(f"the CycleGAN needs at least 1 iteration (got {total_iters}); raise --iters")
        n_const = total_iters // 2
        n_decay = total_iters - n_const

        def factor(it: int) -> float:
            if it < n_const:
                return 1.0
            return max(0.0, 1.0 - (it - n_const) / n_decay)

        return factor

    def pools_state_dict(self) -> dict:
        return {"a": self.pool_a.state_dict(), "b": self.pool_b.state_dict()}

    def load_pools_state_dict(self, state: dict) -> None:
        self.pool_a.load_state_dict(state["a"])
        self.pool_b.load_state_dict(state["b"])

    def _set_d_grad(self, flag: bool) -> None:
        # The generator update needs gradients through D, not D's own parameter gradients.
        for p in itertools.chain(self.D_A.parameters(), self.D_B.parameters()):
            p.requires_grad_(flag)

    def train_step(
        self,
        real_a: torch.Tensor,
        real_b: torch.Tensor,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        perceptual: nn.Module | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> dict[str, torch.Tensor]:
        """One CycleGAN iteration: generator update, then discriminator update on pooled fakes.

        ``real_a`` (source) and ``real_b`` (target) are N x C x H x W in [-1, 1]; A and B may
        differ in size. ``perceptual`` is called as
        ``perceptual(real_a, fake_b, rec_a, real_b, fake_a, rec_b)`` and must return the
        already-weighted Eq. (7) term (e.g. :class:`pipeline.losses.perceptual.SegPerceptualLoss`).
        Losses come back as detached 0-d tensors, weighted as they enter the totals, with
        no host synchronisation: keys ``g_adv_ab, g_adv_ba, cycle_a, cycle_b, idt_a, idt_b,
        [ppl,] g_total, d_a, d_b``.
        """
        c = self.config
        self.train()
        if autocast_dtype is not None:
            ctx: Callable[[], contextlib.AbstractContextManager] = lambda: torch.autocast(  # noqa: E731
                real_a.device.type, dtype=autocast_dtype
            )
        else:
            ctx = contextlib.nullcontext

        # ---- generators
        self._set_d_grad(False)
        opt_g.zero_grad(set_to_none=True)
        with ctx():
            fake_b = self.G_AB(real_a)
            rec_a = self.G_BA(fake_b)
            fake_a = self.G_BA(real_b)
            rec_b = self.G_AB(fake_a)
            losses: dict[str, torch.Tensor] = {
                "g_adv_ab": lsgan_loss(self.D_B(fake_b), True),
                "g_adv_ba": lsgan_loss(self.D_A(fake_a), True),
                "cycle_a": cycle_loss(rec_a, real_a) * c.lambda_cycle,
                "cycle_b": cycle_loss(rec_b, real_b) * c.lambda_cycle,
            }
            w_idt = c.lambda_identity * c.lambda_cycle
            if w_idt > 0:
                # G_AB fed a target image should leave it alone (keeps colours), likewise G_BA.
                losses["idt_b"] = identity_loss(self.G_AB(real_b), real_b) * w_idt
                losses["idt_a"] = identity_loss(self.G_BA(real_a), real_a) * w_idt
            else:
                zero = real_a.new_zeros((), dtype=torch.float32)
                losses["idt_a"] = losses["idt_b"] = zero
            if perceptual is not None:
                losses["ppl"] = perceptual(real_a, fake_b, rec_a, real_b, fake_a, rec_b).float()
        g_total = sum(losses.values())
        g_total.backward()
        opt_g.step()

        # ---- discriminators (real + pooled fake) / 2 each
        self._set_d_grad(True)
        opt_d.zero_grad(set_to_none=True)
        pooled_b = self.pool_b.query(fake_b)
        pooled_a = self.pool_a.query(fake_a)
        with ctx():
            d_a = 0.5 * (lsgan_loss(self.D_A(real_a), True) + lsgan_loss(self.D_A(pooled_a), False))
            d_b = 0.5 * (lsgan_loss(self.D_B(real_b), True) + lsgan_loss(self.D_B(pooled_b), False))
        (d_a + d_b).backward()
        opt_d.step()

        out = {k: v.detach() for k, v in losses.items()}
        out["g_total"] = g_total.detach()
        out["d_a"] = d_a.detach()
        out["d_b"] = d_b.detach()
        return out

    # -- inference ------------------------------------------------------------------

    def translate(self, x: torch.Tensor) -> torch.Tensor:
        """G_AB(x) (source -> target style) in eval mode without gradients; x in [-1, 1]."""
        was_training = self.G_AB.training
        self.G_AB.eval()
        try:
            with torch.no_grad():
                return self.G_AB(x)
        finally:
            self.G_AB.train(was_training)
