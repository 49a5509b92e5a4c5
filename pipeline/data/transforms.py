"""The segmentor's input convention: RGB in [0, 1], normalised with ImageNet mean/std.

Every model input passes through `to_tensor`; `denormalize` undoes it (the CycleGAN and the
previews need [0, 1] images). The DeepLab backbones and the frozen segmentor of the
perceptual loss (Eq. 7) expect exactly this, so the constants live here, with the data.
"""
from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float CxHxW normalised with ImageNet mean/std."""
    t = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (t - mean) / std


def denormalize(t: torch.Tensor) -> torch.Tensor:
    """Inverse of to_tensor (any leading dims), result in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=t.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=t.device).view(3, 1, 1)
    return (t * std + mean).clamp(0, 1)
