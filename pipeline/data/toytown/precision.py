"""The generator's number type, and the one step that turns colour into grey levels.

toytown is meant to give the same dataset on any x86-64 machine for a seed. numpy and OpenCV
choose their SIMD code by CPU (AVX2, AVX-512): numpy's vectorised exp, power, sin, cos and
arctan2, and the order of OpenCV's filter sums, may differ by an ulp or two from one CPU to
another. Two rules keep that from showing in the output:

- Labels (class codes, instance ids, and the depths and polygons that decide them) come from
  operations that IEEE 754 rounds the same way on every CPU (+, -, *, /, sqrt), from floor,
  remainder, comparisons, integer hashing and integer polygon filling, in float64. Where
  geometry needs a transcendental (the corners of a disc, the noise bank's spectrum, which
  shapes hedge tops) it calls Python's scalar `math`: the C library, whose code is the same on
  AVX2 and AVX-512 CPUs and which numpy's random generator uses too; never numpy's vectorised
  functions, nor BLAS (whose dot products sum in a CPU-dependent order). So labels are
  byte-identical for the same seed and package versions.
- Images are computed in float64 (`F`) from the first colour to the last sensor effect and
  quantised once, at the end, by `to_uint8`. A float64 ulp is about 1e-16 of the value, so a
  grey level that flips between CPUs is vanishingly rare (in float32 a few pixels of an image
  did). The golden test (tests/test_toytown.py) allows 1 grey level on at most 0.1 % of an
  image's pixels, and nothing more.
"""
from __future__ import annotations

import numpy as np

F = np.float64  # every float array of the generator: geometry, depth, colour


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Colour in [0, 1] -> uint8 grey levels, floor(clip(x, 0, 1) * 255 + 0.5) in float64.

    Half-way values round up (np.round would round them to even): one explicit rule, computed
    with exact operations, is the only place where colour becomes bytes.
    """
    return np.floor(np.clip(np.asarray(x, F), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
