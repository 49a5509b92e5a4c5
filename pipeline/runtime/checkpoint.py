"""Checkpoints: a dict of state dicts and plain metadata, written atomically and read with
`torch.load(..., weights_only=True)` only (a checkpoint file can then never run code).

What a checkpoint holds is the caller's business; rebuilding a segmentor from one is
`pipeline.models.segmentor.load_segmentor`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.errors import PhfaError
from pipeline.runtime.atomic import atomic_path

FORMAT = "phfa-checkpoint"


def save(path: Path, payload: dict) -> None:
    payload = {"format": FORMAT, "version": 1, **payload}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


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
