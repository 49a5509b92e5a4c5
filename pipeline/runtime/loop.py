"""The loop machinery every training stage shares — the segmentation loop of `pipeline.train`
(source-only, adapt, retrain) and the CycleGAN of `phfa translate`: iterations of one phase with
the schedule step, the non-finite check, metric lines (and their TensorBoard scalars), snapshots,
and Ctrl-C honoured between iterations (never inside one), so `last.pt` always holds the state
after a complete iteration.
"""
from __future__ import annotations

import json
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

from pipeline.errors import PhfaError
from pipeline.runtime.atomic import write_text
from pipeline.runtime.progress import Reporter
from pipeline.runtime.tensorboard import Board


class Interrupted(Exception):
    """Ctrl-C during training: last.pt was saved after the last complete iteration."""

    def __init__(self, path: Path, it: int, phase: str):
        super().__init__(f"interrupted after iteration {it} of phase {phase}; saved {path}")
        self.path, self.it, self.phase = path, it, phase
        self.restored = False  # set when the attempt was a --force one and the stage it replaced is back


class StopRequest:
    """Ctrl-C as a request: the loop finishes the running iteration, saves and stops.

    A second Ctrl-C aborts at once (KeyboardInterrupt). Outside the main thread (or when
    SIGINT is ignored) nothing is installed and KeyboardInterrupt behaves as usual."""

    def __init__(self):
        self.requested = False

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


@contextmanager
def stop_on_sigint() -> Iterator[StopRequest]:
    req = StopRequest()
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
        yield req
        return
    old = signal.signal(signal.SIGINT, req._handler)
    try:
        yield req
    finally:
        signal.signal(signal.SIGINT, old)


def append_jsonl(path: Path, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def truncate_jsonl(path: Path, keep: Callable[[dict], bool]) -> None:
    """Rewrite a metrics file keeping only the records `keep` accepts (rows past a resume point
    would otherwise appear twice)."""
    if not path.is_file():
        return
    rows = [line for line in path.read_bytes().splitlines() if line.strip()]
    kept = []
    for line in rows:
        try:
            if keep(json.loads(line)):
                kept.append(line.decode())
        except (ValueError, TypeError, KeyError, AttributeError):
            continue  # a line cut by kill -9, or damaged: not a record
    write_text(path, "".join(line + "\n" for line in kept))


def loop(name: str, start: int, total: int, step: Callable[[int], dict[str, torch.Tensor]], *,
         schedulers: list, reporter: Reporter, log_every: int, ckpt_every: int,
         snapshot: Callable[[int], Path], metrics_path: Path | None, record: dict,
         check_every_step: bool, last_good: Path | None,
         advice: Callable[[int, dict], str] | None = None, board: Board | None = None, step0: int = 0,
         after_step: Callable[[int], None] | None = None) -> None:
    """Iterations start..total of one phase: step, schedule, NaN check, metric lines, snapshots,
    Ctrl-C. `step(it)` returns detached 0-d loss tensors; nothing here syncs with the device
    except the NaN check (every step on CPU, at log intervals on CUDA) and the log lines.
    `advice(it, bad_losses)` says what to do about a non-finite loss (default: lower the lr).
    `board` gets each metric line's values at stage step `step0 + it` and is flushed before every
    snapshot; `after_step(it)` (periodic validation) runs after iteration `it`'s line, before
    Ctrl-C is honoured and before a snapshot, so a snapshot always follows what it did."""
    def save(it: int) -> Path:
        if board is not None:
            board.flush()
        return snapshot(it)

    reporter.phase(name, start, total)
    sums: dict[str, torch.Tensor] = {}
    n_acc = 0
    with stop_on_sigint() as stop:
        for it in range(start, total):
            lr = schedulers[0].get_last_lr()[0] if schedulers else None
            losses = step(it)
            for s in schedulers:
                s.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v
            n_acc += 1
            at_log = (it + 1) % log_every == 0 or it + 1 == total
            if (check_every_step or at_log) and not bool(torch.stack([v.float() for v in losses.values()])
                                                         .isfinite().all()):
                bad = {k: float(v) for k, v in losses.items() if not torch.isfinite(v)}
                hint = advice(it, bad) if advice is not None else "lower the learning rate with --set lr=..."
                raise PhfaError(f"loss became non-finite ({', '.join(f'{k}={v}' for k, v in bad.items())}) at "
                                f"iteration {it + 1} of phase '{name}'; last good checkpoint: {last_good or 'none'} "
                                f"({hint})")
            reporter.step(it + 1)
            if at_log:
                vals = {k: float(v) / n_acc for k, v in sums.items()}  # the only host sync
                if lr is not None:
                    vals["lr"] = lr
                reporter.log(it + 1, vals)
                if metrics_path is not None:
                    append_jsonl(metrics_path, {**record, "iter": it + 1, **vals})
                if board is not None:
                    board.scalars(step0 + it + 1, vals)
                sums, n_acc = {}, 0
            if after_step is not None:
                after_step(it + 1)
            if stop.requested:
                raise Interrupted(save(it + 1), it + 1, name)
            if (it + 1) % ckpt_every == 0 and it + 1 < total:
                last_good = save(it + 1)
    if board is not None:
        board.flush()  # before the caller's end-of-phase snapshot
