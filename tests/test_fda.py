"""Fourier Domain Adaptation (pipeline/data/fda.py)."""
import numpy as np
import pytest

from pipeline.data.fda import FDATranslator, fda_transfer, fda_transfer_float
from pipeline.errors import PhfaError


def _img(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_beta_zero_returns_source():
    rng = np.random.default_rng(0)
    src, trg = _img(rng, 12, 17), _img(rng, 9, 8)
    out = fda_transfer(src, trg, beta=0.0)
    assert out.dtype == np.uint8 and np.array_equal(out, src)


@pytest.mark.parametrize("h,w", [(16, 16), (15, 21)])
def test_low_band_amplitude_from_target_phase_from_source(h, w):
    rng = np.random.default_rng(1)
    src, trg = _img(rng, h, w), _img(rng, h, w)  # same size: no resize involved
    beta = 0.2
    b = int(np.floor(min(h, w) * beta))
    out = fda_transfer_float(src, trg, beta)
    shift = lambda a: np.fft.fftshift(np.fft.fft2(a.astype(np.float64), axes=(0, 1)), axes=(0, 1))  # noqa: E731
    s_out, s_src, s_trg = shift(out), shift(src), shift(trg)
    band = np.zeros((h, w), bool)
    band[h // 2 - b : h // 2 + b + 1, w // 2 - b : w // 2 + b + 1] = True
    # low band: target amplitude, source phase
    np.testing.assert_allclose(np.abs(s_out[band]), np.abs(s_trg[band]), rtol=1e-9, atol=1e-6)
    phase_diff = np.angle(s_out[band] * np.conj(s_src[band]))
    np.testing.assert_allclose(phase_diff, 0.0, atol=1e-9)
    # outside the band the spectrum is the source's
    np.testing.assert_allclose(s_out[~band], s_src[~band], atol=1e-6)
    # the DC term carries the mean colour: it must now be the target's mean
    np.testing.assert_allclose(out.mean(axis=(0, 1)), trg.astype(float).mean(axis=(0, 1)), atol=1e-9)


def test_output_uint8_and_source_size_with_other_target_size():
    rng = np.random.default_rng(2)
    src, trg = _img(rng, 23, 31), _img(rng, 40, 12)
    out = fda_transfer(src, trg, beta=0.05)
    assert out.dtype == np.uint8 and out.shape == src.shape
    assert not np.array_equal(out, src)


def test_bad_beta_and_input():
    rng = np.random.default_rng(3)
    src = _img(rng, 8, 8)
    with pytest.raises(PhfaError):
        fda_transfer(src, src, beta=0.7)
    with pytest.raises(ValueError):
        fda_transfer(src.astype(np.float32), src)
    with pytest.raises(PhfaError):
        FDATranslator([], 0.01, 0)


def test_translator_deterministic():
    rng = np.random.default_rng(4)
    targets = [_img(rng, 10, 14) for _ in range(5)]
    srcs = [_img(rng, 20, 18) for _ in range(6)]
    t1 = FDATranslator(targets, beta=0.1, seed=7)
    t2 = FDATranslator(targets, beta=0.1, seed=7)
    # order of calls must not matter: the choice depends on (seed, index) only
    a = [t1(s, i) for i, s in enumerate(srcs)]
    b = [t2(s, i) for i, s in reversed(list(enumerate(srcs)))][::-1]
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    # and equals the plain function with the chosen target (the cache changes nothing)
    for i, s in enumerate(srcs):
        assert np.array_equal(a[i], fda_transfer(s, targets[t1.target_index(i)], 0.1))
    picks = {t1.target_index(i) for i in range(50)}
    assert len(picks) > 1  # not stuck on one target
    assert [FDATranslator(targets, 0.1, 8).target_index(i) for i in range(20)] != [
        t1.target_index(i) for i in range(20)
    ]
