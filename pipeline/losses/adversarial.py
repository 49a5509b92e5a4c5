"""Output-space adversarial losses of Eq. (10): L_adv (segmentor) and L_D (discriminator).

Binary cross-entropy with logits against a constant label map; source = 0, target = 1
(AdaptSegNet's convention; docs/method.md, "Eq. 10"). Per iteration, in the AdaptSegNet order
the paper follows:

1. source segmentation loss;
2. ``generator_adv_loss``: D's parameters take no gradient, the target prediction is
   labelled *source*, so the segmentor learns to make target outputs look like source ones;
3. ``discriminator_loss``: source and target probabilities detached, each term halved;
4. step both optimisers.

The inputs are softmax probabilities of the logits upsampled to the image size.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

SOURCE_LABEL = 0.0
TARGET_LABEL = 1.0


def bce_to(d_logits: torch.Tensor, label: float) -> torch.Tensor:
    """Mean BCE-with-logits of D's patch logits against the constant ``label``."""
    return F.binary_cross_entropy_with_logits(d_logits, torch.full_like(d_logits, float(label)))


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Parameters of ``module`` do not require grad inside the block (restored afterwards).

    Autograd records requires_grad at forward time, so a forward inside the block keeps the
    module out of the graph even if backward runs after the block has ended.
    """
    params = list(module.parameters())
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)


def generator_adv_loss(discriminator: nn.Module, target_prob: torch.Tensor) -> torch.Tensor:
    """L_adv: target probabilities judged by a frozen D against the *source* label."""
    with frozen(discriminator):
        return bce_to(discriminator(target_prob), SOURCE_LABEL)


def discriminator_loss(discriminator: nn.Module, source_prob: torch.Tensor, target_prob: torch.Tensor) -> torch.Tensor:
    """L_D: D separates detached source (0) from detached target (1) outputs, each term /2."""
    loss_s = bce_to(discriminator(source_prob.detach()), SOURCE_LABEL)
    loss_t = bce_to(discriminator(target_prob.detach()), TARGET_LABEL)
    return (loss_s + loss_t) / 2
