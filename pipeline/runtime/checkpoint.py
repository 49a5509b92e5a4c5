"""Checkpoints: a dict of state dicts and plain metadata, written atomically and read with
`torch.load(..., weights_only=True)` only (a checkpoint file can then never run code).

What a checkpoint holds is the caller's business; rebuilding a segmentor from one is
`pipeline.models.segmentor.load_segmentor`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from pipeline.errors import PhfaError
from pipeline.runtime.atomic import atomic_path

FORMAT = "phfa-checkpoint"


def save(path: Path, payload: dict) -> None:
    """Write atomically; a full disk ends in one sentence naming the file and the space needed
    (torch reports it as a RuntimeError, not an OSError), and leaves the previous file intact."""
    payload = {"format": FORMAT, "version": 1, **payload}
    try:
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(payload, tmp)
    except RuntimeError as e:
        free = shutil.disk_usage(Path(path).parent).free
        need = _nbytes(payload)
        if free < need + (1 << 20) or "unexpected pos" in str(e) or "No space" in str(e):
            raise PhfaError(f"disk full while writing {path}: it needs about {need / 2**20:.0f} MiB and "
                            f"{free / 2**20:.0f} MiB are free; free some space and run again with --resume "
                            "(the previous version, if any, is untouched)") from e
        raise


def _nbytes(obj) -> int:
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 64


def load(path: Path | str, option: str = "checkpoint") -> dict:
    path = Path(path)
    if not path.is_file():
        raise PhfaError(f"{option}: {path} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, refused globals
        raise PhfaError(f"{option}: {path} is not a phfa checkpoint ({type(e).__name__})") from e
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise PhfaError(f"{option}: {path} is not a phfa checkpoint (no '{FORMAT}' marker)")
    return ck
