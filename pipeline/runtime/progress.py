"""Progress reporting interface for the training loop. The loop calls a Reporter; the CLI
supplies a rich one on a terminal. The default prints plain periodic lines."""
from __future__ import annotations

import sys
import time


class Reporter:
    def phase(self, name: str, start: int, total: int) -> None:
        self._t0, self._start, self._total, self._name = time.time(), start, total, name
        print(f"[{name}] iterations {start}..{total}", file=sys.stderr, flush=True)

    def log(self, it: int, values: dict[str, float]) -> None:
        done = it - self._start
        rate = done / max(time.time() - self._t0, 1e-9)
        eta = (self._total - it) / rate if rate > 0 else float("nan")
        vals = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        print(f"[{self._name}] it {it}/{self._total} {vals} ({rate:.2f} it/s, eta {eta:.0f}s)",
              file=sys.stderr, flush=True)

    def step(self, it: int) -> None:
        pass

    def message(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class Silent(Reporter):
    def phase(self, name, start, total):
        self._t0, self._start, self._total, self._name = time.time(), start, total, name

    def log(self, it, values):
        pass

    def message(self, text):
        pass
