"""Loading initial weights into DeepLab-v2 (``deeplab.build_deeplab``): torchvision's ImageNet
ResNets, a local state dict (a phfa checkpoint, a torchvision/timm-style file, or the Caffe-layout
reference init of the AdaptSegNet family, which switches the model to its "caffe" variant), with a
report of what matched. A file that matches too little of the backbone is refused by name.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

import torch
import torch.nn as nn
import torchvision

from pipeline.errors import PhfaError
from pipeline.models import effnet

# Fewer matching backbone tensors than this fraction means the file is some other network.
MIN_MATCH_FRACTION = 0.5
CAFFE_PREFIX = "Scale."


def imagenet_url(backbone: str) -> str:
    weights = {
        "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
        "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
        "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
    }[backbone]
    return weights.url


def fetch_imagenet(backbone: str) -> dict:
    """torchvision's ImageNet state dict of a ResNet (resnet18/50/101): from the torch hub cache if
    present, else downloaded."""
    url = imagenet_url(backbone)
    try:
        # Looked up on torch.hub at call time (tests replace it); the cache is checked first.
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except Exception as exc:  # URLError, timeouts, hash mismatch, a corrupt cached file
        raise PhfaError(
            f"the ImageNet weights for {backbone} could not be downloaded from {url} ({exc}); "
            f"pass --pretrained PATH to a local state dict or --pretrained none"
        ) from exc


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise PhfaError(f"pretrained weights file {path} does not exist: pass an existing state dict, "
                        f"--pretrained imagenet or --pretrained none")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PhfaError(f"{path} is not a readable PyTorch state dict ({type(exc).__name__})") from exc
    # Accept a phfa checkpoint (a dict of state dicts) by taking its model entry.
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "state_dict", "seg", "segmentor"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise PhfaError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise PhfaError(f"{path} does not hold a state dict (no tensors in it)")
    return tensors


def is_caffe_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """True for the reference init's layout: its tensor keys start with ``Scale.``."""
    return any((k[len("module."):] if k.startswith("module.") else k).startswith(CAFFE_PREFIX) for k in state)


def _caffe_key(k: str) -> str:
    """``Scale.layer5.conv2d_list.i.*`` -> ``classifier.branches.i.*``; ``Scale.X`` -> ``backbone.X``.

    The reference file names its trunk like torchvision (conv1, bn1, layerN.M.conv1..conv3,
    bn1..bn3, downsample.0 / downsample.1) and its ASPP classifier on layer4 ``layer5``
    (``conv2d_list.0..3``, dilations 6/12/18/24, weight and bias).
    """
    k = k[len(CAFFE_PREFIX):]
    if k.startswith("layer5.conv2d_list."):
        return "classifier.branches." + k[len("layer5.conv2d_list."):]
    return "backbone." + k


def _normalise_keys(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map keys to DeepLabV2 names; returns (mapped, ignored).

    Accepted forms: torchvision ResNet keys (``layer1.0.conv1.weight``), the same with a
    ``backbone.`` prefix, a full DeepLabV2 state dict, or the Caffe layout of the reference
    init (``Scale.``-prefixed, see ``_caffe_key``); a DDP ``module.`` prefix is stripped.
    torchvision's ``fc.*`` and EfficientNet-Lite0's head (``_conv_head``, ``_bn1``, ``_fc``) are ImageNet heads:
    ignored, not reported as unexpected.
    """
    mapped: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in state.items():
        k = key[len("module."):] if key.startswith("module.") else key
        if k.startswith(CAFFE_PREFIX):
            mapped[_caffe_key(k)] = value
            continue
        if (k.startswith("fc.") or k.startswith("backbone.fc.")
                or k.startswith(effnet.HEAD_PREFIXES) or k.startswith(tuple("backbone." + h for h in effnet.HEAD_PREFIXES))):
            ignored.append(key)
            continue
        if not (k.startswith("backbone.") or k.startswith("classifier.") or k == "variant_id"):
            k = "backbone." + k
        mapped[k] = value
    return mapped, ignored


def _not_a_weight(k: str) -> bool:
    # Counters and the variant flag: neither counted as matched nor reported missing.
    return k.endswith("num_batches_tracked") or k == "variant_id"


# Blocks in layer3 per backbone: tells a resnet101 file from a resnet50 one by its keys.
_LAYER3_BLOCKS = {"resnet18": 2, "resnet18-l3": 2, "resnet50": 6, "resnet101": 23}


def _layer3_blocks(keys) -> int:
    blocks = {k.split(".")[2] for k in keys if k.startswith("backbone.layer3.")}
    return len(blocks)


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> dict:
    """Load the tensors of ``state`` that match ``model`` by name and shape; return a report.

    A Caffe-layout file (the reference ``DeepLab_resnet_pretrained_init-f81d91e8.pth``: keys
    ``Scale.*``) switches the model to the "caffe" variant first (stride placement and input
    convention, see the module docstring) and must have the backbone's depth; its classifier
    (``layer5``, trained for another class count) is reported as mismatched and left at its
    initialisation.

    Raises PhfaError naming ``source`` when fewer than half of the backbone tensors match
    (``num_batches_tracked`` counters are not counted: older torchvision files lack them).
    """
    caffe = is_caffe_layout(state)
    mapped, ignored = _normalise_keys(state)
    own = model.state_dict()
    if caffe:
        file_blocks, own_blocks = _layer3_blocks(mapped), _layer3_blocks(own)
        if file_blocks and file_blocks != own_blocks:
            depth = next((b for b, n in _LAYER3_BLOCKS.items() if n == file_blocks), None)
            hint = f"pass --backbone {depth}" if depth else "it fits none of " + ", ".join(_LAYER3_BLOCKS)
            raise PhfaError(
                f"{source} is a Caffe-layout DeepLab-v2 state dict whose layer3 has {file_blocks} blocks, but "
                f"{model.backbone_name} has {own_blocks}: {hint}"
            )
        model.set_variant("caffe")
    usable = {k: v for k, v in mapped.items() if k in own and own[k].shape == v.shape}
    mismatched = sorted(k for k, v in mapped.items() if k in own and own[k].shape != v.shape)
    # a short trunk (effnet-lite0-s5, resnet18-l3) omits the file's later stages on purpose
    omitted_prefixes = tuple("backbone." + o for o in getattr(getattr(model, "backbone", None), "omitted", ()))
    omitted = sorted(k for k in mapped if k not in own and omitted_prefixes and k.startswith(omitted_prefixes))
    unexpected = sorted(k for k in mapped if k not in own and k not in set(omitted))
    missing = sorted(k for k in own if k not in usable and not _not_a_weight(k))

    backbone_keys = [k for k in own if k.startswith("backbone.") and not _not_a_weight(k)]
    matched_backbone = sum(1 for k in backbone_keys if k in usable)
    if matched_backbone < MIN_MATCH_FRACTION * len(backbone_keys):
        if caffe:
            model.set_variant("torchvision")
        layout = "Caffe-layout (Scale.*) " if caffe else ""
        raise PhfaError(
            f"{source} matches only {matched_backbone} of {len(backbone_keys)} {model.backbone_name} backbone "
            f"tensors: it is not a {layout}state dict for this backbone"
        )
    model.load_state_dict(usable, strict=False)
    report = {
        "source": source,
        # Counts leave out the num_batches_tracked counters, as the 50 % rule does.
        "matched": sum(1 for k in usable if not _not_a_weight(k)),
        "matched_backbone": matched_backbone,
        "backbone_total": len(backbone_keys),
        "missing": missing,
        "unexpected": unexpected,
        "omitted": len(omitted),
        "mismatched": mismatched,
        "ignored": ignored,
        "layout": "caffe" if caffe else "torchvision",
        "variant": model.variant,
    }
    # Missing classifier tensors are normal (backbone-only files); anything else deserves a word.
    missing_backbone = [k for k in missing if k.startswith("backbone.")]
    if missing_backbone or unexpected or mismatched:
        names = missing_backbone + unexpected + mismatched
        warnings.warn(WeightsWarning(
            f"{source}: loaded {report['matched']} tensors; {len(missing_backbone)} backbone tensors missing, "
            f"{len(unexpected)} unexpected, {len(mismatched)} of another shape (the stage manifest's "
            f"inputs.pretrained_report lists them; --debug prints them)", names), stacklevel=2)
    return report


class WeightsWarning(UserWarning):
    """Initial weights that do not fit the model exactly; ``names`` are the tensors concerned."""

    def __init__(self, message: str, names: list[str]):
        super().__init__(message)
        self.names = names
