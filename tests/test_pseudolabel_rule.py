"""Eq. 8 self-guidance pseudo-labels: thresholds equal numpy's median (capped at 0.9), in fixed memory."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import pseudolabel as PL

K = 19
ROOT = Path(__file__).resolve().parents[1]


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
        conf = (1 / K + (1 - 1 / K) * rng.random(shape) ** (1 / (1 + pred % 8))).astype(np.float32)
        out.append((conf, pred))
    out[2][1][3, 4] = 18  # a class with a single pixel
    return [(torch.from_numpy(c), torch.from_numpy(p)) for c, p in out]


def _numpy_thresholds(pairs, cap=0.9):
    """What the rule says, the slow way: every confidence kept, numpy's median, the cap."""
    conf = np.concatenate([c.numpy().ravel().astype(np.float64) for c, _ in pairs])
    pred = np.concatenate([p.numpy().ravel() for _, p in pairs])
    keep = pred != 255
    conf, pred = conf[keep], pred[keep]
    return {c: (min(cap, float(np.median(conf[pred == c]))) if (pred == c).any() else None) for c in range(K)}


@pytest.mark.parametrize("cap", [0.9, 1.0])
def test_thresholds_equal_numpy_median(cap):
    pairs = _images()
    want = _numpy_thresholds(pairs, cap)
    got = PL.class_thresholds(lambda: iter(pairs), cap=cap)
    assert got == want  # exact: the same float32 values, the same float64 mean
    assert want[7] is None and want[18] == float(pairs[2][0][3, 4])  # absent class, single-pixel class
    if cap == 0.9:
        assert any(t == 0.9 for t in got.values())  # the cap acts on this data


def test_ties_and_even_counts_across_a_bucket_boundary():
    below_half = float(np.nextafter(np.float32(0.5), np.float32(0)))  # exponent 2**-2: another high bucket
    # class 0: even count, the two middle values in different high buckets, ties on each side
    c0 = [0.1] * 3 + [below_half] * 5 + [0.5] * 5 + [0.95] * 3
    c1 = [0.7] * 10                                   # all equal, even count
    c2 = [0.2, 0.6, 0.6, 0.6, 0.6, 0.8]               # ties inside one bucket
    c3 = [0.25, 0.75, 1.0]                            # odd count, 1.0 itself is a value
    conf = torch.tensor(c0 + c1 + c2 + c3, dtype=torch.float32)
    pred = torch.repeat_interleave(torch.arange(4), torch.tensor([len(c0), len(c1), len(c2), len(c3)]))
    perm = torch.randperm(conf.numel(), generator=torch.Generator().manual_seed(1))
    conf, pred = conf[perm], pred[perm]
    pairs = [(conf[:13], pred[:13]), (conf[13:], pred[13:])]  # 1-D "images" work too
    got = PL.class_thresholds(lambda: iter(pairs), cap=1.0)
    assert got[0] == (below_half + 0.5) / 2
    assert got[1] == float(np.float32(0.7)) and got[2] == float(np.float32(0.6)) and got[3] == 0.75
    assert got == _numpy_thresholds(pairs, cap=1.0)


def test_batches_devices_order_and_duplicates():
    pairs = _images(seed=3)
    want = PL.class_thresholds(lambda: iter(pairs))
    # B x H x W batches, pass 2 in another order, every pixel twice: the same medians
    doubled = [(torch.stack([c, c]), torch.stack([p, p])) for c, p in pairs]
    m = PL.ClassMedian()
    for c, p in doubled:
        m.count(c, p)
    for c, p in reversed(doubled):
        m.refine(c, p)
    assert {k: (None if v is None else min(0.9, v)) for k, v in enumerate(m.medians())} == want
    # float16 confidences are widened exactly; int32 / uint8 class ids are fine
    half = [(c.half(), p.int()) for c, p in pairs]
    assert PL.class_thresholds(lambda: iter(half)) == _numpy_thresholds([(c.float(), p) for c, p in half])


def test_pred_255_is_skipped_and_bad_input_rejected():
    conf = torch.tensor([[0.5, 0.6], [0.7, 0.99]])
    pred = torch.tensor([[0, 0], [0, 255]], dtype=torch.uint8)
    assert PL.class_thresholds(lambda: [(conf, pred)])[0] == float(np.float32(0.6))
    bad = [(conf, torch.tensor([[0, 0], [0, 19]]), "class ids"),
           (torch.tensor([[0.5, float("nan")]]), torch.tensor([[0, 0]]), "outside"),
           (torch.tensor([[0.5, 1.5]]), torch.tensor([[0, 0]]), "outside"),
           (torch.tensor([[0.5, -0.25]]), torch.tensor([[0, 0]]), "outside"),
           (torch.tensor([[0.5, 0.5]]), torch.tensor([[0, 0, 0]]), "shape"),
           (torch.tensor([[1, 0]]), torch.tensor([[0, 0]]), "floating")]
    for c, p, msg in bad:
        with pytest.raises(ValueError, match=msg):
            PL.ClassMedian().count(c, p)
    with pytest.raises(TypeError):
        PL.ClassMedian().count(np.ones((2, 2), np.float32), np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="cap"):
        PL.class_thresholds(lambda: [(conf, pred)], cap=0.0)


def test_passes_out_of_order_or_on_other_data_are_refused():
    pairs = _images()
    with pytest.raises(RuntimeError, match="pass 1"):
        PL.ClassMedian().refine(*pairs[0])
    m = PL.ClassMedian()
    for c, p in pairs:
        m.count(c, p)
    with pytest.raises(RuntimeError, match="both passes"):
        m.medians()
    m.refine(*pairs[0])  # a different (shorter) second pass
    with pytest.raises(RuntimeError, match="pass 1 is over"):
        m.count(*pairs[0])
    with pytest.raises(ValueError, match="second pass"):
        m.medians()


def test_apply_thresholds_by_hand():
    # dyadic values: exact in float32 and float64, so the boundary cases are what they look like
    conf = torch.tensor([[0.875, 0.375, 0.5],
                         [0.625, 0.75, 0.75]])
    pred = torch.tensor([[0, 0, 1],
                         [0, 0, 2]], dtype=torch.uint8)
    # class 0: threshold 0.75 -> keeps 0.875 and 0.75 (>=), drops 0.375 and 0.625
    # class 1: threshold 0.5 -> keeps 0.5 (equal: kept); class 2: no threshold -> nothing kept
    got = PL.apply_thresholds(conf, pred, {0: 0.75, 1: 0.5, 2: None})
    assert got.dtype == torch.uint8 and got.tolist() == [[0, 255, 1], [255, 0, 255]]
    # comparison in float64: float32(0.9) = 0.89999998 is below a 0.9 threshold
    assert PL.apply_thresholds(torch.tensor([[0.9, 0.95]]), torch.tensor([[1, 1]]), [None, 0.9]).tolist() == [[255, 1]]
    # a class id outside the classes (here 255) keeps nothing; so does a NaN threshold
    assert PL.apply_thresholds(torch.tensor([[0.5, 0.99]]), torch.tensor([[1, 255]]), [None, 0.5]).tolist() == [[1, 255]]
    assert PL.apply_thresholds(torch.tensor([[0.99]]), torch.tensor([[0]]), [float("nan")]).tolist() == [[255]]


def test_class_counts_by_hand():
    pred = torch.tensor([[0, 0, 1],
                         [0, 0, 2]])
    pseudo = torch.tensor([[0, 255, 1],
                           [255, 0, 255]], dtype=torch.uint8)
    gt = torch.tensor([[0, 1, 1],
                       [0, 255, 1]], dtype=torch.uint8)
    counts = PL.ClassCounts(K).add(pred, pseudo, gt)
    ks = counts.kept_share()
    assert ks[0] == {"predicted": 4, "kept": 2, "share": 0.5}
    assert ks[1] == {"predicted": 1, "kept": 1, "share": 1.0}
    assert ks[2] == {"predicted": 1, "kept": 0, "share": 0.0}
    assert ks[3] == {"predicted": 0, "kept": 0, "share": None}
    d = counts.diagnostic()
    # class 0: labelled 0 at (0,0) gt 0 and (1,1) gt void (left out) -> precision 1/1; gt 0 at (0,0), (1,0) -> 1/2
    assert d[0]["precision"] == 1.0 and d[0]["coverage"] == 0.5
    # class 1: labelled at (0,2), gt 1 -> precision 1; gt 1 at (0,1), (0,2), (1,2) -> coverage 1/3
    assert d[1]["precision"] == 1.0 and d[1]["coverage"] == pytest.approx(1 / 3)
    assert d[2] == {"precision": None, "coverage": None, "labelled": 0, "truth": 0, "correct": 0}
    wrong = PL.ClassCounts(K).add(pred, torch.tensor([[1, 1, 1], [1, 1, 1]]), gt).diagnostic()
    assert wrong[1]["precision"] == pytest.approx(3 / 5) and wrong[1]["coverage"] == 1.0
    assert counts.add(pred, pseudo).kept_share()[0]["predicted"] == 8  # no ground truth: kept shares only
    with pytest.raises(ValueError, match="size"):
        counts.add(pred, pseudo[:1])


# peak resident memory of one child process: torch's allocations are invisible to tracemalloc
_CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    from pipeline import pseudolabel as PL
    n, keep_all = int(sys.argv[1]), sys.argv[2] == "keep"
    def images():
        for i in range(n):
            rng = np.random.default_rng(i)
            yield (torch.from_numpy(rng.random((128, 128), dtype=np.float32)),
                   torch.from_numpy(rng.integers(0, 19, (128, 128), dtype=np.uint8)))
    warm = (torch.full((8, 8), 0.5), torch.zeros(8, 8, dtype=torch.long))
    PL.class_thresholds(lambda: iter([warm]))  # warm up: first-call allocations out of the growth
    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20
    if keep_all:  # the control: every confidence kept, as the reference code does
        kept = [[] for _ in range(19)]
        for conf, pred in images():
            for c in range(19):
                kept[c].append(conf[pred == c])
        [torch.cat(v).median() for v in kept]
    else:
        PL.class_thresholds(images)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10
    print(json.dumps({"growth_mib": peak - before}))
""")


def _growth(n: int, how: str) -> float:
    r = subprocess.run([sys.executable, "-c", _CHILD, str(n), how], capture_output=True, text=True, cwd=ROOT,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["growth_mib"]


def test_threshold_memory_does_not_grow_with_images():
    small, large = _growth(10, "ours"), _growth(1000, "ours")  # 1000 images: 62.5 MiB of confidences
    leaky = _growth(1000, "keep")
    # the control shows the measurement sees a keep-everything implementation ...
    assert leaky > 40, leaky
    # ... and ours stays where 10 images put it
    assert large <= small + 8, (small, large)
