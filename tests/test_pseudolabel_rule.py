"""Eq. 8 self-guidance pseudo-labels: thresholds equal numpy's median (capped at 0.9), in bounded memory."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from pipeline import pseudolabel as PL

K = 19


def _images(seed=0, n=5, shape=(16, 24), absent=(7,)):
    """Uneven class frequencies, float32 confidences, one absent class, one single-pixel class (18)."""
    rng = np.random.default_rng(seed)
    freq = rng.dirichlet(np.full(K, 0.5))
    freq[list(absent)] = 0
    freq[18] = 0
    freq /= freq.sum()
    out = []
    for i in range(n):
        pred = rng.choice(K, size=shape, p=freq).astype(np.uint8)
        conf = (1 / K + (1 - 1 / K) * rng.random(shape) ** (1 / (1 + pred % 5))).astype(np.float32)
        out.append((conf, pred))
    out[2][1][3, 4] = 18  # a class with a single pixel
    return out


def _numpy_thresholds(pairs, cap=0.9):
    conf = np.concatenate([c.ravel().astype(np.float64) for c, _ in pairs])
    pred = np.concatenate([p.ravel() for _, p in pairs])
    return {c: (min(cap, float(np.median(conf[pred == c]))) if (pred == c).any() else None) for c in range(K)}


def _two_pass(pairs, cap=0.9, bins=PL.DEFAULT_BINS):
    h = PL.ConfidenceHistogram(K, bins)
    for c, p in pairs:
        h.add(c, p)
    r = h.refine()
    for c, p in pairs:
        r.add(c, p)
    return h, r


def _assert_close(got, want, tol):
    assert got.keys() == want.keys()
    for c in want:
        if want[c] is None:
            assert got[c] is None, c
        else:
            assert got[c] is not None and abs(got[c] - want[c]) <= tol, (c, got[c], want[c])


@pytest.mark.parametrize("cap", [0.9, 1.0])
def test_thresholds_match_numpy_median(cap):
    pairs = _images()
    want = _numpy_thresholds(pairs, cap)
    h, r = _two_pass(pairs, cap)
    _assert_close(r.thresholds(cap), want, 1e-6)
    _assert_close(h.thresholds(cap), want, h.max_error + 1e-12)
    assert h.max_error == 2.0 ** -17
    assert want[7] is None and want[18] is not None  # absent class, single-pixel class
    assert r.thresholds(cap)[18] == pytest.approx(float(pairs[2][0][3, 4]), abs=0)
    # the coarse path is really coarse: a small bin count shows its error bound is what it says
    hc, rc = _two_pass(pairs, cap, bins=64)
    _assert_close(hc.thresholds(cap), want, 0.5 / 64 + 1e-12)
    _assert_close(rc.thresholds(cap), want, 1e-6)


def test_cap_applies():
    conf = np.full((4, 4), 0.97, np.float32)
    pred = np.zeros((4, 4), np.int64)
    pred[0] = 1
    conf[0] = 0.3
    t = PL.class_thresholds(lambda: [(conf, pred)])
    assert t[0] == 0.9 and t[1] == pytest.approx(0.3) and t[2] is None and len(t) == K
    assert PL.class_thresholds(lambda: [(conf, pred)], cap=1.0)[0] == pytest.approx(0.97)


def test_absent_class_gets_no_threshold_and_no_pixels():
    pairs = _images(absent=(3, 7))
    t = PL.class_thresholds(lambda: iter(pairs))
    assert t[3] is None and t[7] is None
    for conf, pred in pairs:
        lab = PL.apply_thresholds(conf, pred, t)
        assert not np.isin(lab, [3, 7]).any()
    # a threshold-less class keeps nothing even if it were predicted
    conf, pred = np.ones((2, 2), np.float32), np.full((2, 2), 3)
    assert (PL.apply_thresholds(conf, pred, t) == 255).all()


def test_ties_and_even_counts_across_a_bin_boundary():
    bins = 2 ** 16
    w = 1.0 / bins
    edge = 40000 * w                              # a bin edge, exact in float32
    a = np.float32(edge - w / 4)                  # last value of bin 39999
    b = np.float32(edge)                          # first value of bin 40000
    # class 0: even count, the two middle values straddle the edge, with many ties on each side
    c0 = np.array([0.1] * 3 + [a] * 5 + [b] * 5 + [0.95] * 3, np.float32)
    # class 1: all equal (ties everywhere), even count
    c1 = np.full(10, 0.7, np.float32)
    # class 2: even count, ties inside one bin
    c2 = np.array([0.2, 0.6, 0.6, 0.6, 0.6, 0.8], np.float32)
    conf = np.concatenate([c0, c1, c2])
    pred = np.repeat([0, 1, 2], [c0.size, c1.size, c2.size])
    perm = np.random.default_rng(1).permutation(conf.size)
    pairs = [(conf[perm][:13], pred[perm][:13]), (conf[perm][13:], pred[perm][13:])]  # 1-D "images" work too
    want = _numpy_thresholds(pairs, cap=1.0)
    assert want[0] == pytest.approx((float(a) + float(b)) / 2, abs=0)
    h, r = _two_pass(pairs, cap=1.0, bins=bins)
    got = r.thresholds(cap=1.0)
    _assert_close(got, want, 1e-12)
    _assert_close(h.thresholds(cap=1.0), want, h.max_error)
    assert r.values_held <= 4  # distinct values only: a, b, 0.7, 0.6


def test_torch_and_numpy_agree():
    pairs = _images(seed=3)
    tpairs = [(torch.from_numpy(c), torch.from_numpy(p)) for c, p in pairs]
    bpairs = [(torch.from_numpy(np.stack([c, c])), torch.from_numpy(np.stack([p, p]))) for c, p in pairs]  # BxHxW
    want = PL.class_thresholds(lambda: iter(pairs))
    assert PL.class_thresholds(lambda: iter(tpairs)) == want
    assert PL.class_thresholds(lambda: iter(pairs), exact=False) == PL.class_thresholds(lambda: iter(tpairs), exact=False)
    # duplicating every pixel leaves the median where it was
    _assert_close(PL.class_thresholds(lambda: iter(bpairs)), want, 1e-12)
    # mixed: pass 1 numpy, pass 2 torch
    h = PL.ConfidenceHistogram()
    for c, p in pairs:
        h.add(c, p)
    r = h.refine()
    for c, p in tpairs:
        r.add(c, p)
    assert r.thresholds() == want
    conf, pred = pairs[0]
    lab_np = PL.apply_thresholds(conf, pred, want)
    lab_t = PL.apply_thresholds(torch.from_numpy(conf), torch.from_numpy(pred), want)
    assert lab_t.dtype == torch.uint8 and np.array_equal(lab_t.numpy(), lab_np)


def test_pred_255_is_skipped_and_bad_input_rejected():
    conf = np.array([[0.5, 0.6], [0.7, 0.99]], np.float32)
    pred = np.array([[0, 0], [0, 255]], np.uint8)
    assert PL.class_thresholds(lambda: [(conf, pred)])[0] == pytest.approx(0.6)
    with pytest.raises(ValueError):
        PL.ConfidenceHistogram().add(conf, np.array([[0, 0], [0, 19]]))
    with pytest.raises(ValueError):
        PL.ConfidenceHistogram().add(np.array([[0.5, np.nan]]), np.array([[0, 0]]))
    with pytest.raises(ValueError):
        PL.ConfidenceHistogram().add(np.array([[0.5, 1.5]]), np.array([[0, 0]]))


def test_second_pass_with_other_data_is_refused():
    pairs = _images()
    h = PL.ConfidenceHistogram()
    for c, p in pairs:
        h.add(c, p)
    r = h.refine()
    for c, p in pairs[:1]:  # a different (shorter) second pass
        r.add(c, p)
    with pytest.raises(ValueError, match="second pass"):
        r.thresholds()


def test_apply_thresholds_by_hand():
    # dyadic values: exact in float32 and float64, so the boundary cases are what they look like
    conf = np.array([[0.875, 0.375, 0.5],
                     [0.625, 0.75, 0.75]], np.float32)
    pred = np.array([[0, 0, 1],
                     [0, 0, 2]], np.uint8)
    # class 0: threshold 0.75 -> keeps 0.875 and 0.75 (>=), drops 0.375 and 0.625
    # class 1: threshold 0.5 -> keeps 0.5 (equal: kept); class 2: no threshold -> nothing kept
    t = {0: 0.75, 1: 0.5, 2: None}
    want = np.array([[0, 255, 1],
                     [255, 0, 255]], np.uint8)
    got = PL.apply_thresholds(conf, pred, t)
    assert got.dtype == np.uint8 and np.array_equal(got, want)
    # comparison is in float64: float32(0.9) = 0.89999998 is below a 0.9 threshold
    assert PL.apply_thresholds(np.array([[0.9, 0.95]], np.float32), np.array([[1, 1]]), [None, 0.9]).tolist() == [[255, 1]]
    assert PL.apply_thresholds(np.array([[0.5, 0.4999]]), np.array([[1, 255]]), [None, 0.5]).tolist() == [[1, 255]]
    ks = PL.KeptShare(K).add(pred, got).result()
    assert ks[0] == {"predicted": 4, "kept": 2, "share": 0.5}
    assert ks[1] == {"predicted": 1, "kept": 1, "share": 1.0}
    assert ks[2] == {"predicted": 1, "kept": 0, "share": 0.0}
    assert ks[3] == {"predicted": 0, "kept": 0, "share": None}


def test_diagnostic_by_hand():
    pseudo = np.array([[0, 0, 1],
                       [255, 0, 2]], np.uint8)
    gt = np.array([[0, 1, 1],
                   [0, 255, 1]], np.uint8)
    d = PL.PseudoLabelDiagnostic(K).add(pseudo, gt).result()
    # class 0: labelled 0 at (0,0) gt0, (0,1) gt1, (1,1) gt void (left out) -> precision 1/2;
    #          gt 0 at (0,0), (1,0) -> coverage 1/2
    assert d[0]["precision"] == 0.5 and d[0]["coverage"] == 0.5
    # class 1: labelled at (0,2) gt1 -> precision 1; gt 1 at (0,1), (0,2), (1,2) -> coverage 1/3
    assert d[1]["precision"] == 1.0 and d[1]["coverage"] == pytest.approx(1 / 3)
    # class 2: labelled at (1,2) gt1 -> precision 0; no gt 2 -> coverage undefined
    assert d[2]["precision"] == 0.0 and d[2]["coverage"] is None
    assert d[5] == {"precision": None, "coverage": None, "labelled": 0, "truth": 0, "correct": 0}
    acc = PL.PseudoLabelDiagnostic().add(pseudo, gt).add(pseudo, gt).result()
    assert acc[1]["truth"] == 6 and acc[1]["coverage"] == pytest.approx(1 / 3)


def _lazy(n, shape=(64, 64)):
    def factory():
        for i in range(n):
            rng = np.random.default_rng(i)
            pred = rng.integers(0, K, shape, dtype=np.uint8)
            conf = rng.random(shape, dtype=np.float32)
            yield conf, pred
    return factory


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_threshold_memory_does_not_grow_with_images():
    small = _peak(lambda: PL.class_thresholds(_lazy(30)))
    large = _peak(lambda: PL.class_thresholds(_lazy(3000)))
    assert large <= 1.5 * small, (small, large)

    # control: the same measurement catches an implementation that keeps the values
    def keep_all(factory):
        vals = [[] for _ in range(K)]
        for conf, pred in factory():
            for c in range(K):
                vals[c].append(conf[pred == c])
        return [np.median(np.concatenate(v)) for v in vals]

    leaky_small, leaky_large = _peak(lambda: keep_all(_lazy(30))), _peak(lambda: keep_all(_lazy(3000)))
    assert leaky_large > 1.5 * leaky_small and leaky_large > 1.5 * small
