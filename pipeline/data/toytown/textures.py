"""Colour helpers and procedural textures: tileable noise bank, bilinear texture lookup, cell hash."""
from __future__ import annotations

import functools

import numpy as np


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB float32 in [0, 1] of a hue (wrapping), saturation and value."""
    h = (h % 1.0) * 6.0
    i, f = int(h) % 6, h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


def grey(v: float, tint=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Grey level v plus a small per-channel tint, clipped to [0, 1]."""
    return np.clip(np.array([v + tint[0], v + tint[1], v + tint[2]], np.float32), 0, 1)


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
    out = []
    for beta in (3.0, 2.0, 1.2, 0.0):
        w = rng.standard_normal((n, n))
        spec = np.fft.fft2(w) / r ** (beta / 2)  # power spectrum ~ 1/f^beta
        spec[0, 0] = 0
        t = np.real(np.fft.ifft2(spec))
        out.append(((t - t.mean()) / (t.std() + 1e-9)).astype(np.float32))
    return np.stack(out)


def tex(bank: np.ndarray, k: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bilinear sample of texture k at texel coordinates (a, b), wrapping."""
    a0 = np.floor(a)
    b0 = np.floor(b)
    fa = (a - a0).astype(np.float32)
    fb = (b - b0).astype(np.float32)
    a0 = a0.astype(np.int64) & 127
    b0 = b0.astype(np.int64) & 127
    a1 = (a0 + 1) & 127
    b1 = (b0 + 1) & 127
    t = bank[k]
    return ((t[a0, b0] * (1 - fb) + t[a0, b1] * fb) * (1 - fa)
            + (t[a1, b0] * (1 - fb) + t[a1, b1] * fb) * fa)


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
    return ((x & 0xFFFF).astype(np.float32)) / 65536.0
