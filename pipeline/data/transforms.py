"""The segmentor's input convention: RGB in [0, 1], normalised with ImageNet mean/std.

Every model input passes through `normalize`: in the loader (`to_tensor`), or, for training
batches, on the device after a uint8 transfer (`to_uint8_tensor` in the loader, a quarter of the
bytes); both run the same operations, so they give the same numbers. `denormalize` undoes it (the CycleGAN and the
previews need [0, 1] images). The DeepLab backbones and the frozen segmentor of the
perceptual loss (Eq. 7) expect exactly this, so the constants live here, with the data.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
PHOTOMETRIC_RANGE = 0.3   # default spread r of `photometric` (TrainConfig.photometric_range)


def to_uint8_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> uint8 CxHxW (a copy: flipped views and cached arrays stay untouched)."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1)


@functools.lru_cache(maxsize=8)
def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # built once per device: a blocking copy to the GPU in every step would wait for it
    return (torch.tensor(IMAGENET_MEAN).view(3, 1, 1).to(device), torch.tensor(IMAGENET_STD).view(3, 1, 1).to(device))


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] (0-255) -> float32 normalised with ImageNet mean/std, on x's device."""
    mean, std = _mean_std(x.device)
    return (x.float().div_(255.0) - mean) / std


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float CxHxW normalised with ImageNet mean/std."""
    return normalize(to_uint8_tensor(img))


def photometric(img: np.ndarray, seed: int, spread: float = PHOTOMETRIC_RANGE) -> np.ndarray:
    """A random photometric change of a uint8 HxWx3 image, a function of ``seed`` alone.

    Brightness, contrast (about the image's mean grey) and saturation (about each pixel's grey)
    are each scaled by U(1 - spread, 1 + spread) (0.7-1.3 by default); then, each with probability
    1/2, a Gaussian blur with sigma U(0.3, 1.2) pixels and Gaussian noise with std U(0, 8) grey
    levels. Labels are untouched.
    Used on every training image of every domain alike when ``photometric`` is set.
    """
    import cv2

    rng = np.random.default_rng(seed)
    b, c, s = rng.uniform(1.0 - spread, 1.0 + spread, 3)
    blur, noise = rng.random(2) < 0.5
    sigma, std = rng.uniform(0.3, 1.2), rng.uniform(0.0, 8.0)
    luma = np.array([0.299, 0.587, 0.114], np.float32)   # ITU-R BT.601 grey
    x = img.astype(np.float32) * b
    mean_grey = float((x @ luma).mean())
    x = (x - mean_grey) * c + mean_grey
    grey = (x @ luma)[..., None]
    x = grey + (x - grey) * s
    if blur:
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    if noise:
        x = x + rng.normal(0.0, std, x.shape).astype(np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def denormalize(t: torch.Tensor) -> torch.Tensor:
    """Inverse of to_tensor (any leading dims), result in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=t.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=t.device).view(3, 1, 1)
    return (t * std + mean).clamp(0, 1)
