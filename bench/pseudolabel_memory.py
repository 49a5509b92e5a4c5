"""Peak memory of the Eq. 8 threshold pass: phfa's two-pass radix select vs the reference's keep-everything.

    .venv/bin/python bench/pseudolabel_memory.py [--sizes 30 300 3000] [--hw 512 1024]
                                                 [--reference-max 300] [--smoke]

Synthetic target set of N images (H x W, 19 classes), generated lazily and seeded per image, so
the second pass sees the same data: an argmax map of 32x32-pixel blocks drawn with Cityscapes-like
class frequencies (road ~1/3, ..., train/motorcycle ~0.1-0.3%), and float32 confidences
1/19 + (18/19) * Beta(a_c, 1) with a per-class shape a_c in [1.5, 12] (sampled by inverse CDF).

ours       pipeline.pseudolabel.class_thresholds on torch tensors (fixed counters, exact median).
reference  keeps every image's confidences per class as float64, concatenates, np.median, min(0.9)
           -- the reference code's approach. Run only for N <= --reference-max; for larger N its
           growth is extrapolated linearly from the two largest measured N, marked "(extrapolated)".

Each measurement runs in its own child process: growth = peak resident set size (getrusage) minus
the resident size after imports and a warm-up call, so torch's and numpy's allocations both count.
Prints a table: N, ours growth MiB, reference growth MiB, max |threshold difference|.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline import pseudolabel as PL  # noqa: E402

K = 19
# approximate Cityscapes train pixel shares of the 19 trainIds (road, sidewalk, building, ...)
FREQ = np.array([32.6, 5.4, 20.2, 0.58, 0.78, 1.09, 0.18, 0.49, 14.1, 1.03, 3.56, 1.08, 0.12, 6.19,
                 0.24, 0.21, 0.21, 0.09, 0.37])
FREQ = FREQ / FREQ.sum()
SHAPE = np.linspace(1.5, 12.0, K)[np.random.default_rng(7).permutation(K)]  # Beta(a_c, 1) per class
LOW = 1.0 / K


def image(i: int, h: int, w: int, seed: int = 0):
    """(conf float32 HxW, pred uint8 HxW) of synthetic image i."""
    rng = np.random.default_rng([seed, i])
    block = max(1, min(32, h // 8, w // 8))
    gh, gw = -(-h // block), -(-w // block)
    pred = rng.choice(K, size=(gh, gw), p=FREQ).astype(np.uint8)
    pred = np.repeat(np.repeat(pred, block, 0), block, 1)[:h, :w]
    u = rng.random((h, w), dtype=np.float32)
    conf = LOW + (1 - LOW) * u ** (1.0 / SHAPE.astype(np.float32))[pred]
    return conf.astype(np.float32, copy=False), pred


def factory(n, h, w):
    return lambda: (image(i, h, w) for i in range(n))


def reference(n, h, w, cap=0.9):
    vals = [[] for _ in range(K)]
    for conf, pred in factory(n, h, w)():
        c64 = conf.astype(np.float64)
        for c in range(K):
            vals[c].append(c64[pred == c])
    out = {}
    for c in range(K):
        v = np.concatenate(vals[c])
        vals[c] = None
        out[c] = min(cap, float(np.median(v))) if v.size else None
    return out


def ours(n, h, w):
    def batches():
        for conf, pred in factory(n, h, w)():
            yield torch.from_numpy(conf), torch.from_numpy(pred)
    return PL.class_thresholds(batches)


def child(which: str, n: int, h: int, w: int) -> None:
    """Run one side in this process and print its growth, time and thresholds as JSON."""
    fn = ours if which == "ours" else reference
    fn(1, 8, 8)  # warm up: first-call allocations out of the growth
    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20
    t = time.perf_counter()
    res = fn(n, h, w)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10
    print(json.dumps({"growth_mib": peak - before, "seconds": seconds, "thresholds": [res[c] for c in range(K)]}))


def measure(which: str, n: int, h: int, w: int):
    r = subprocess.run([sys.executable, __file__, "--child", which, str(n), str(h), str(w)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{which} N={n} failed:\n{r.stderr}")
    out = json.loads(r.stdout)
    return out["thresholds"], out["growth_mib"], out["seconds"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[30, 300, 3000])
    ap.add_argument("--hw", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    ap.add_argument("--reference-max", type=int, default=300,
                    help="run the reference only up to this N (float64 of every pixel: ~4 MiB per 512x1024 image)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the code path only")
    ap.add_argument("--child", nargs=4, metavar=("SIDE", "N", "H", "W"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.child[0], *map(int, a.child[1:]))
    if a.smoke:
        a.sizes, a.hw, a.reference_max = [3, 6], [32, 64], 6
    h, w = a.hw
    print(f"Eq. 8 threshold pass, {h}x{w}, 19 classes, float32 confidences; "
          "growth = peak RSS of a child process minus its RSS after imports")
    print(f"{'N':>6} {'ours MiB':>9} {'ours s':>7} {'reference MiB':>26} {'ref s':>7} {'max |dthr|':>11}")
    measured: list[tuple[int, float]] = []
    for n in a.sizes:
        got, ours_mib, ours_s = measure("ours", n, h, w)
        if n <= a.reference_max:
            ref, ref_mib, ref_s = measure("reference", n, h, w)
            measured.append((n, ref_mib))
            assert all((got[c] is None) == (ref[c] is None) for c in range(K))
            diff = max(abs(got[c] - ref[c]) for c in range(K) if got[c] is not None)
            ref_txt, ref_s_txt, diff_txt = f"{ref_mib:.1f}", f"{ref_s:.1f}", f"{diff:.1e}"
        elif len(measured) >= 2:
            (n0, m0), (n1, m1) = measured[-2], measured[-1]
            est = m1 + (m1 - m0) / (n1 - n0) * (n - n1)
            ref_txt, ref_s_txt, diff_txt = f"{est:.1f} (extrapolated)", "-", "n/a"
        else:
            ref_txt, ref_s_txt, diff_txt = "not run", "-", "n/a"
        print(f"{n:>6} {ours_mib:>9.1f} {ours_s:>7.1f} {ref_txt:>26} {ref_s_txt:>7} {diff_txt:>11}", flush=True)


if __name__ == "__main__":
    main()
