"""Colour helpers and procedural textures: tileable noise bank, bilinear texture lookup, cell hash.

Colours and textures are float64 (`precision.F`). Textures also shape geometry (the ragged tops
of hedges and tree masses), so the noise bank is built with exact or scalar-`math` operations
only, the same on every CPU (see precision.py).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .precision import F


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB in [0, 1] of a hue (wrapping), saturation and value."""
    h = (h % 1.0) * 6.0
    i, f = int(h) % 6, h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], F)


def grey(v: float, tint=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Grey level v plus a small per-channel tint, clipped to [0, 1]."""
    return np.clip(np.array([v + tint[0], v + tint[1], v + tint[2]], F), 0, 1)


TEXTURE_SIZE = 128  # texels per side of a bank's textures; they tile (and may be rolled) with this period


@functools.lru_cache(maxsize=8)
def noise_bank(seed: int, salt: int) -> np.ndarray:
    """Four tileable 128x128 noise textures (std 1): smooth, medium, fine, white."""
    rng = np.random.default_rng([seed, salt, 99])
    n = TEXTURE_SIZE
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    r = np.sqrt(fx * fx + fy * fy)
    r[0, 0] = 1.0
    # r ** (beta / 2) with the C library's scalar pow: numpy's vectorised power differs by an ulp
    # between CPUs (AVX-512 has its own), and these textures decide where hedges end.
    scalar_pow = np.frompyfunc(math.pow, 2, 1)
    out = []
    for beta in (3.0, 2.0, 1.2, 0.0):
        w = rng.standard_normal((n, n))
        spec = np.fft.fft2(w) / scalar_pow(r, beta / 2).astype(F)  # power spectrum ~ 1/f^beta
        spec[0, 0] = 0
        t = np.real(np.fft.ifft2(spec))
        out.append((t - t.mean()) / (t.std() + 1e-9))
    return np.stack(out)


def tex(bank: np.ndarray, k: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bilinear sample of texture k at texel coordinates (a, b), wrapping."""
    a, b = np.asarray(a, F), np.asarray(b, F)
    a0 = np.floor(a)
    b0 = np.floor(b)
    fa = a - a0
    fb = b - b0
    n = TEXTURE_SIZE
    a0 = (a0.astype(np.int64) & (n - 1)) * n    # row offsets into the flattened texture
    b0 = b0.astype(np.int64) & (n - 1)
    a1 = (a0 + n) & (n * n - 1)
    b1 = (b0 + 1) & (n - 1)
    t = np.ascontiguousarray(bank[k]).ravel()
    return ((t.take(a0 + b0) * (1 - fb) + t.take(a0 + b1) * fb) * (1 - fa)
            + (t.take(a1 + b0) * (1 - fb) + t.take(a1 + b1) * fb) * fa)


def grain(bank: np.ndarray, terms, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum over terms (amplitude, texture k, scale) of amplitude * tex(k, a * scale, b * scale)."""
    out = None
    for amp, k, scale in terms:
        t = amp * tex(bank, k, a * scale, b * scale)
        out = t if out is None else out + t
    return out


def hash01(a: np.ndarray, b: np.ndarray, salt: int = 0) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer cell (a, b)."""
    x = (a.astype(np.int64) * 73856093) ^ (b.astype(np.int64) * 19349663) ^ (salt * 83492791)
    x = (x ^ (x >> 13)) * 1274126177
    x = x ^ (x >> 16)
    return (x & 0xFFFF).astype(F) / 65536.0
