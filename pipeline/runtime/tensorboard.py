"""TensorBoard event files of a training stage (adapt, retrain, translate): `tensorboard --logdir RUN`
shows every stage of a run side by side, each named after its folder.

Rank 0 alone writes, into the stage folder itself (`layout.EVENTS`). What is logged:

    train/<key>     at every log interval, the averaged values of the metrics.jsonl line (the
                    losses and lr), at the stage step
    val/mIoU        with periodic validation (`val_every`, pipeline/validation.py), and one
    val/<image>     image | prediction | ground truth panel for each of a few target-val images

The x axis is the stage step: the iterations done in the stage, counted across its phases
(phase k's iteration i is step i plus the iterations of the phases before k), so the curves of
a progressive stage run on one monotone axis, and the phase boundaries sit at the phases'
lengths. The CycleGAN of `phfa translate` has one phase: its step is its iteration.

Resume: the stage's loop flushes the board before every last.pt snapshot, so every event up to
a snapshot is on disk when it is. A `--resume` opens a new event file with SummaryWriter's
`purge_step` at the step after the one it resumes from: TensorBoard drops the events the
interrupted attempt wrote past its last snapshot, and the curves continue with every step once.
A `--force` run starts clean (the old stage, event files included, is moved aside and dropped).
Event files are appended record by record, not written atomically; a record cut by `kill -9` is
skipped by TensorBoard's reader.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import PhfaError


class Board:
    """One stage's SummaryWriter. `resumed_at`: the stage step a --resume continues from (events past
    it are purged), None for a fresh attempt. Close it before the stage folder is finished,
    interrupted or put back (it appends to its file by name)."""

    def __init__(self, folder: Path, resumed_at: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # a declared dependency; a broken environment is still a sentence
            raise PhfaError(f"training curves need the tensorboard package ({e}); "
                            "install it with pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=None if resumed_at is None else resumed_at + 1)

    def scalars(self, step: int, values: dict[str, float], prefix: str = "train/") -> None:
        for k, v in values.items():
            self.writer.add_scalar(prefix + k, float(v), step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An H x W x 3 uint8 image."""
        self.writer.add_image(tag, image, step, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
