"""Training-free image-level alignment: Fourier Domain Adaptation (Yang & Soatto, CVPR 2020).

Beyond the paper (which uses CycleGAN, Eq. 7): the low-frequency amplitude spectrum of a
source image (global colour, illumination, low-frequency texture: "style") is replaced by
that of a target image while the source phase (edges, layout: the content the labels
describe) is kept. ``translate --method fda`` uses it as a seconds-long alternative to
CycleGAN and as the baseline CycleGAN must beat.

Band: with b = floor(min(H, W) * beta), the centred (2b+1) x (2b+1) square of the
fftshifted spectrum, i.e. vertical and horizontal frequencies in [-b, b] (b = 0 is the DC
term alone, the mean colour), as in the FDA paper's implementation. ``beta == 0`` turns
the transfer off and returns the source unchanged.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from pipeline.errors import PhfaError

__all__ = ["band_half_width", "fda_transfer_float", "fda_transfer", "FDATranslator"]


def band_half_width(h: int, w: int, beta: float) -> int | None:
    """b = floor(min(h, w) * beta), or None when beta == 0 (no transfer)."""
    if not 0.0 <= beta <= 0.5:
        raise PhfaError(f"the FDA band beta must lie in [0, 0.5] (got {beta}); typical values are 0.01-0.09")
    if beta == 0:
        return None
    return int(np.floor(min(h, w) * beta))


def _check_rgb(img: np.ndarray, what: str) -> None:
    if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8):
        shape = getattr(img, "shape", None)
        dtype = getattr(img, "dtype", None)
        raise ValueError(f"FDA {what} must be an H x W x 3 uint8 array (got shape {shape}, dtype {dtype})")


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BICUBIC))


def _band_amplitude(img: np.ndarray, b: int) -> np.ndarray:
    """|FFT| of `img` (H x W x C, same size as the source) on the centred (2b+1)^2 band."""
    spec = np.fft.fftshift(np.fft.fft2(img.astype(np.float64), axes=(0, 1)), axes=(0, 1))
    return np.abs(spec[_band_slices(img.shape[0], img.shape[1], b)])


def _band_slices(h: int, w: int, b: int) -> tuple[slice, slice]:
    # After fftshift the zero frequency sits at (h // 2, w // 2); the square is clipped to the
    # spectrum, which still keeps it symmetric about DC (so the result stays real) since the
    # only frequency without a mirror partner is the even-size Nyquist one, its own conjugate.
    ch, cw = h // 2, w // 2
    return slice(max(ch - b, 0), min(ch + b + 1, h)), slice(max(cw - b, 0), min(cw + b + 1, w))


def _swap_band(src: np.ndarray, band_amp: np.ndarray, b: int) -> np.ndarray:
    """Source with its centred band amplitude set to `band_amp`, phase kept; float64 H x W x C."""
    h, w = src.shape[:2]
    spec = np.fft.fftshift(np.fft.fft2(src.astype(np.float64), axes=(0, 1)), axes=(0, 1))
    sl = _band_slices(h, w, b)
    # exp(i*angle) keeps the phase; a zero source coefficient has angle 0, so it takes the
    # target amplitude with zero phase (still real-symmetric).
    spec[sl] = band_amp * np.exp(1j * np.angle(spec[sl]))
    out = np.fft.ifft2(np.fft.ifftshift(spec, axes=(0, 1)), axes=(0, 1))
    return out.real  # imaginary part is rounding noise: the spectrum stays Hermitian


def fda_transfer_float(src: np.ndarray, trg: np.ndarray, beta: float = 0.01) -> np.ndarray:
    """FDA without the final rounding: float64 H x W x 3 (may leave [0, 255])."""
    _check_rgb(src, "source")
    _check_rgb(trg, "target")
    h, w = src.shape[:2]
    b = band_half_width(h, w, beta)
    if b is None:
        return src.astype(np.float64)
    return _swap_band(src, _band_amplitude(_resize(trg, h, w), b), b)


def fda_transfer(src: np.ndarray, trg: np.ndarray, beta: float = 0.01) -> np.ndarray:
    """Source image (H x W x 3 uint8) restyled with the low-frequency amplitude of `trg`.

    `trg` (any size) is resized to the source size with bicubic interpolation first.
    Returns H x W x 3 uint8 (rounded, clipped to [0, 255]).
    """
    out = fda_transfer_float(src, trg, beta)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class FDATranslator:
    """Applies FDA with a target image chosen per source image, deterministically.

    The target for source ``index`` is drawn from ``numpy.random.default_rng((seed, index))``,
    so the result depends only on (seed, index) — not on call order, worker count or
    resumption. Target band amplitudes are cached per (target, source size): with few-shot
    targets and a few source sizes this halves the FFT work and skips repeated resizes.
    """

    def __init__(self, target_images: Sequence[np.ndarray], beta: float = 0.01, seed: int = 0):
        if len(target_images) == 0:
            raise PhfaError("FDA needs at least one target image; check the target domain's few-shot list")
        for t in target_images:
            _check_rgb(t, "target")
        band_half_width(1, 1, beta)  # validate beta early, before any image is processed
        self.targets = list(target_images)
        self.beta = float(beta)
        self.seed = int(seed)
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}

    def target_index(self, index: int) -> int:
        """Which target image source number `index` is restyled with."""
        rng = np.random.default_rng((self.seed, int(index)))
        return int(rng.integers(len(self.targets)))

    def __call__(self, src: np.ndarray, index: int) -> np.ndarray:
        _check_rgb(src, "source")
        h, w = src.shape[:2]
        b = band_half_width(h, w, self.beta)
        if b is None:
            return src.copy()
        j = self.target_index(index)
        key = (j, h, w)
        amp = self._cache.get(key)
        if amp is None:
            amp = _band_amplitude(_resize(self.targets[j], h, w), b)
            self._cache[key] = amp
        return np.clip(np.rint(_swap_band(src, amp, b)), 0, 255).astype(np.uint8)
