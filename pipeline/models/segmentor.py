"""A segmentor checkpoint that rebuilds its own model (nanoGPT-style).

`final.pt` carries the architecture (backbone, class count, BN mode, variant: "torchvision" or
"caffe" for the reference Caffe-layout init, see models/deeplab.py) next to the weights, so
`eval`, `predict`, `pseudolabel` and the perceptual loss (Eq. 7) rebuild the network from
the file alone; a file of another backbone or class count is refused with a sentence.
"""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline import classes as C
from pipeline.config import TrainConfig, bn_mode
from pipeline.errors import PhfaError
from pipeline.models.deeplab import DeepLabV2, build_deeplab
from pipeline.runtime import checkpoint


def arch_of(cfg: TrainConfig, model: torch.nn.Module | None = None) -> dict:
    """The architecture a checkpoint records. The variant is the model's (the init file decides
    it, not the config), so it is recorded only when the model is given; the model's state dict
    carries it as well (`variant_id`), so a checkpoint without it still loads as what it is."""
    arch = {"backbone": cfg.backbone, "num_classes": C.NUM_CLASSES, "bn": cfg.bn}
    if model is not None:
        arch["variant"] = getattr(model, "variant", "torchvision")
    return arch


def payload(model: torch.nn.Module, cfg: TrainConfig, extra: dict) -> dict:
    """What final.pt holds: kind, arch, the resolved config, the weights and `extra` metadata."""
    return {"kind": "segmentor", "arch": arch_of(cfg, model), "config": cfg.to_dict(), "model": model.state_dict(),
            **extra}


def load_segmentor(path: Path | str, option: str = "--checkpoint", expect_classes: int | None = None,
                   expect_backbone: str | None = None) -> tuple[DeepLabV2, dict]:
    """Rebuild a DeepLabV2 from a checkpoint; refuse another backbone or class count."""
    ck = checkpoint.load(path, option)
    arch = ck.get("arch") or {}
    if "model" not in ck or "backbone" not in arch:
        raise PhfaError(f"{option}: {path} holds no segmentation model")
    if expect_classes is not None and arch.get("num_classes") != expect_classes:
        raise PhfaError(f"{option}: {path} predicts {arch.get('num_classes')} classes, expected {expect_classes}")
    if expect_backbone is not None and arch["backbone"] != expect_backbone:
        raise PhfaError(f"{option}: {path} is a {arch['backbone']} model, this run uses {expect_backbone}")
    model = build_deeplab(arch["backbone"], arch.get("num_classes", 19), pretrained="none",
                          bn=bn_mode(arch), variant=arch.get("variant", "torchvision"))
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise PhfaError(f"{option}: {path} does not match a {arch['backbone']} DeepLab-v2 "
                        f"({str(e).splitlines()[0]})") from e
    return model, ck
