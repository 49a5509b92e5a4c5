"""Category-level alignment and balancing: image-wise class-balanced max-squares, Eq. (2)-(3).

Eq. (2): per target image, each pixel's class is its argmax; N_c counts the pixels of class c.
Eq. (3): L_class(x_t) = - sum_{h,w} sum_c p_c^2 / (2 N_c^alpha (W H)^(1-alpha)). As printed, the
denominator's N^c is indexed by the channel c of the sum; this code (as the reference IW-MaxSquare)
uses the count of the pixel's *argmax* class for every channel of that pixel: one weight per pixel.

Implementation choices (docs/method.md, "Eq. 2-3"):
- p is the softmax probability (max-squares), the weight of a pixel is that of its argmax class,
  w = 1 / max(N_c^alpha * N^(1-alpha), 1), and the weight is detached (no gradient through
  the counts), as in the reference image-wise max-squares.
- Scale: Eq. (3) as written, with the /2 and without 1/C. The reference IW-MaxSquare
  (Chen et al.) divides by B*C and has no /2: per image it is (2/C) times this loss, so at
  equal lambda_class this loss is C/2 = 9.5 times stronger (C = 19). To port a lambda from the
  reference code, multiply it by 2/C; ``class_balanced_max_square(...) * 2 / C`` is the
  reference's value.
- ``ignore`` pixels count neither in N_c nor in N, and contribute no loss.
- Counts are per image, so a batch of B images equals the mean of B single-image calls.
"""
from __future__ import annotations

import torch


def class_balanced_max_square(
    prob: torch.Tensor, alpha: float = 0.2, ignore: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. (3) averaged over the batch. prob: [B, C, H, W] softmax; ignore: [B, H, W] bool or None."""
    if prob.dim() != 4:
        raise ValueError(f"prob must be [B, C, H, W], got shape {tuple(prob.shape)}")
    b, c, h, w = prob.shape
    with torch.no_grad():
        pred = prob.argmax(dim=1).reshape(b, h * w)  # Eq. (2): argmax class per pixel
        # float32 even under autocast, so pixel counts stay exact integers.
        if ignore is None:
            valid32 = torch.ones(b, h * w, dtype=torch.float32, device=prob.device)
        else:
            if tuple(ignore.shape) != (b, h, w):
                raise ValueError(f"ignore must be [B, H, W] = {(b, h, w)}, got {tuple(ignore.shape)}")
            valid32 = (~ignore.bool()).reshape(b, h * w).float()
        # Per-image class counts N_c and valid-pixel counts N.
        counts = torch.zeros(b, c, dtype=torch.float32, device=prob.device).scatter_add_(1, pred, valid32)
        total = valid32.sum(dim=1, keepdim=True)  # [B, 1]
        denom = counts.pow(alpha) * total.pow(1.0 - alpha)
        class_weight = 1.0 / denom.clamp(min=1.0)  # [B, C]
        pixel_weight = class_weight.gather(1, pred) * valid32  # [B, H*W]
    sq = prob.float().pow(2).sum(dim=1).reshape(b, h * w)  # sum over classes of p^2
    per_image = -(sq * pixel_weight).sum(dim=1) / 2
    return per_image.mean()
