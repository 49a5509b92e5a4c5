"""Progress reporting interface for the training loop and the passes over images. The loop calls
a Reporter; the CLI supplies a rich one on a terminal. The default prints plain periodic lines."""
from __future__ import annotations

import math
import sys
import time


def clock(seconds: float) -> str:
    """h:mm:ss (or m:ss under an hour); '?' before there is a rate."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


class Reporter:
    def phase(self, name: str, start: int, total: int, unit: str = "iterations") -> None:
        """A new pass: `total` steps of `unit` (iterations of training, images of eval or labelling)."""
        self._t0, self._start, self._total, self._name, self._unit = time.time(), start, total, name, unit
        print(f"[{name}] {unit} {start}..{total}", file=sys.stderr, flush=True)

    def _rate(self, done: int) -> float:
        return (done - self._start) / max(time.time() - self._t0, 1e-9)

    def log(self, it: int, values: dict[str, float]) -> None:
        rate = self._rate(it)
        eta = (self._total - it) / rate if rate > 0 else float("nan")
        vals = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        print(f"[{self._name}] it {it}/{self._total} {vals} ({rate:.2f} it/s, eta {clock(eta)})",
              file=sys.stderr, flush=True)

    def step(self, it: int) -> None:
        if self._unit != "iterations" and it == self._total and it > self._start:
            took = time.time() - self._t0
            print(f"[{self._name}] {it - self._start} {self._unit} in {clock(took)} "
                  f"({self._rate(it):.2f} {self._unit}/s)", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class Silent(Reporter):
    def phase(self, name, start, total, unit="iterations"):
        self._t0, self._start, self._total, self._name, self._unit = time.time(), start, total, name, unit

    def log(self, it, values):
        pass

    def step(self, it):
        pass

    def message(self, text):
        pass
