"""Checkpoints: a dict of state dicts and plain metadata, written atomically and read with
`torch.load(..., weights_only=True)` only (a checkpoint file can then never run code).

A segmentor checkpoint rebuilds its model on its own: it carries the architecture
(backbone, class count) next to the weights.
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


def load_segmentor(path: Path | str, option: str = "--checkpoint", expect_classes: int | None = None,
                   expect_backbone: str | None = None):
    """Rebuild a DeepLabV2 from a checkpoint; refuse another backbone or class count."""
    from pipeline.models.deeplab import build_deeplab

    ck = load(path, option)
    arch = ck.get("arch") or {}
    if "model" not in ck or "backbone" not in arch:
        raise PhfaError(f"{option}: {path} holds no segmentation model")
    if expect_classes is not None and arch.get("num_classes") != expect_classes:
        raise PhfaError(f"{option}: {path} predicts {arch.get('num_classes')} classes, expected {expect_classes}")
    if expect_backbone is not None and arch["backbone"] != expect_backbone:
        raise PhfaError(f"{option}: {path} is a {arch['backbone']} model, this run uses {expect_backbone}")
    model = build_deeplab(arch["backbone"], arch.get("num_classes", 19), pretrained="none",
                          freeze_bn=arch.get("freeze_bn", False))
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise PhfaError(f"{option}: {path} does not match a {arch['backbone']} DeepLab-v2 ({str(e).splitlines()[0]})") from e
    return model, ck
