"""Segmentation perceptual loss of the image-level alignment, Eq. (7) of the paper.

    L_ppl = lambda_ppl       * E ||I(x) - I(G(x))||_1
          + lambda_ppl,recon * E ||I(F(G(x))) - I(x)||_1

and, "due to the symmetry", the same for target images y with F(y) and G(F(y)). The paper gives
no weights; the defaults are BDL's: 0.1 on the translation and lambda_A * lambda_semantic = 10 on
the reconstruction.
I is a frozen segmentation network. Gradients flow *through* it into the translated images,
so the generators learn to keep what the segmentor sees, while the segmentor itself is never
updated (eval mode, no parameter gradients).

Scale (docs/method.md, "Eq. 7"): the distance is the L1 of Eq. (7), averaged over pixels and
channels. By default (``normalize="instance"``) the logits are first instance-normalised per
image and class channel, as BDL does before its MSE. That puts all 19 channels on unit
variance, so the channels of classes absent from a crop, whose logits barely vary, are
amplified until they weigh as much as the present classes, and the loss no longer scales with
the logits' magnitude. ``normalize="none"`` compares the raw logits, Eq. (7) read literally;
its values are in logit units, so a lambda_ppl tuned for one form does not carry over.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import PhfaError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SegPerceptualLoss"]

from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # re-exported


class SegPerceptualLoss(nn.Module):
    """Eq. (7) with a frozen segmentor whose ``forward(x)`` returns ``(features, logits)``.

    Inputs are GAN-range images in [-1, 1]; they are mapped to [0, 1] and normalised with
    ``mean``/``std`` so the segmentor sees images the way it was trained (a "caffe" variant
    DeepLab converts that tensor itself). The returned value is already weighted
    (lambda_ppl, lambda_recon), ready to add to the generator loss. ``normalize``:
    "instance" (default, BDL's per-channel instance norm of the logits) or "none" (raw logits).
    """

    def __init__(
        self,
        segmentor: nn.Module,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        lambda_ppl: float = 0.1,
        lambda_recon: float = 10.0,
        num_classes: int | None = None,
        normalize: str = "instance",
    ):
        super().__init__()
        if normalize not in ("instance", "none"):
            raise ValueError(f"normalize must be 'instance' or 'none', not {normalize!r}")
        self.normalize = normalize
        segmentor.eval()
        for p in segmentor.parameters():
            p.requires_grad_(False)
        self.segmentor = segmentor
        # Non-persistent: the normalisation is configuration, not learnt state.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.lambda_ppl = float(lambda_ppl)
        self.lambda_recon = float(lambda_recon)
        self.num_classes = num_classes

    def train(self, mode: bool = True) -> "SegPerceptualLoss":
        # A frozen segmentor must stay in eval mode (BatchNorm statistics, dropout) whatever
        # the caller does with the modules around it.
        super().train(mode)
        self.segmentor.eval()
        return self

    def normalized_logits(self, x: torch.Tensor) -> torch.Tensor:
        """I(x): segmentor logits of GAN-range images, instance-normalised per image and channel
        (``normalize="instance"``) or raw (``"none"``)."""
        x01 = (x + 1.0) * 0.5
        _, logits = self.segmentor((x01 - self.mean) / self.std)
        if self.num_classes is not None and logits.shape[1] != self.num_classes:
            raise PhfaError(
                f"the segmentation checkpoint predicts {logits.shape[1]} classes but {self.num_classes} "
                "were expected; pass a --seg-checkpoint trained for the same classes"
            )
        # float32: instance-norm statistics and the L1 lose too much in bf16 under autocast.
        if self.normalize == "none":
            return logits.float()
        return F.instance_norm(logits.float())

    def _many(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        # One segmentor pass for same-sized images (the segmentor is in eval mode, so
        # batching does not change its output); different sizes go one by one.
        if all(x.shape[1:] == xs[0].shape[1:] for x in xs):
            return list(torch.split(self.normalized_logits(torch.cat(xs)), [len(x) for x in xs]))
        return [self.normalized_logits(x) for x in xs]

    def _direction(self, real: torch.Tensor, fake: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.normalized_logits(real)  # a constant of the loss
        i_fake, i_rec = self._many([fake, rec])
        return self.lambda_ppl * F.l1_loss(i_fake, target) + self.lambda_recon * F.l1_loss(i_rec, target)

    def forward(
        self,
        real_a: torch.Tensor,
        fake_b: torch.Tensor,
        rec_a: torch.Tensor,
        real_b: torch.Tensor | None = None,
        fake_a: torch.Tensor | None = None,
        rec_b: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """lambda_ppl*L1(I(real_a), I(fake_b)) + lambda_recon*L1(I(real_a), I(rec_a)) [+ B direction]."""
        loss = self._direction(real_a, fake_b, rec_a)
        given = [t is not None for t in (real_b, fake_a, rec_b)]
        if any(given):
            if not all(given):
                raise ValueError("the target direction needs real_b, fake_a and rec_b together")
            loss = loss + self._direction(real_b, fake_a, rec_b)
        return loss
