"""DeepLab-v2 segmentor G (paper section IV-B; the network behind every equation's F(x) and G(x)).

A torchvision ResNet trunk whose layer3 and layer4 are dilated (2 and 4) instead of strided,
so features keep output stride 8, followed by the DeepLab-v2 ASPP classifier: four 3x3
convolutions at dilation 6/12/18/24 whose outputs are summed (all four; DESIGN section 3).

``forward`` returns both the layer4 features F(x) used by the object- and background-level
alignment (Eq. 1, 5, 6) and the logits G(x) used by the segmentation (Eq. 9), category-level
(Eq. 2-3) and adversarial (Eq. 10) losses.

Input convention: RGB in [0, 1] normalised with ImageNet mean/std by
``pipeline.data.transforms.to_tensor``; the data pipeline normalises, the model does not.

Choices where the paper is silent:
- Every 3x3 conv of layer3 has dilation 2 and every 3x3 conv of layer4 dilation 4, the first
  block included (the original DeepLab-v2 layout; torchvision's ``replace_stride_with_dilation``
  keeps the previous dilation in each stage's first block). One helper does this for all three
  backbones, so resnet18 (BasicBlock, which torchvision refuses to dilate) gets the same layout.
- Output size: ceil(H/8) x ceil(W/8) (each stride-2 op with padding rounds up for odd sizes).
- Pretrained ImageNet weights are torchvision's IMAGENET1K_V1 (the weights the reference
  DeepLab-v2 ports start from; V2 is a different training recipe).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

import torch
import torch.nn as nn
import torchvision

from pipeline.errors import PhfaError

BACKBONES: tuple[str, ...] = ("resnet18", "resnet50", "resnet101")
ASPP_RATES: tuple[int, ...] = (6, 12, 18, 24)

# Fewer matching backbone tensors than this fraction means the file is some other network.
MIN_MATCH_FRACTION = 0.5


class ASPPClassifier(nn.Module):
    """DeepLab-v2 classifier: parallel dilated 3x3 convs to class scores, summed."""

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...] = ASPP_RATES):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=r, dilation=r, bias=True) for r in rates
        )
        for conv in self.branches:
            # Small init as in DeepLab-v2: the summed branches start near zero logits.
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


class ResNetTrunk(nn.Module):
    """conv1..layer4 of a torchvision ResNet (no avgpool/fc); parameter names match torchvision's."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _dilate(layer: nn.Module, dilation: int) -> None:
    """Turn a strided ResNet stage into a dilated one in place.

    Works for BasicBlock and Bottleneck alike: 3x3 convs get stride 1 and dilation = padding =
    ``dilation`` (same spatial size, same receptive-field growth as the stride they replace);
    the 1x1 downsample convs get stride 1. Weight shapes do not change, so ImageNet weights
    still load.
    """
    for m in layer.modules():
        if isinstance(m, nn.Conv2d):
            if m.kernel_size == (3, 3):
                m.stride = (1, 1)
                m.dilation = (dilation, dilation)
                m.padding = (dilation, dilation)
            elif m.kernel_size == (1, 1):
                m.stride = (1, 1)


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


class DeepLabV2(nn.Module):
    """DeepLab-v2 with output stride 8. ``forward(x) -> (features, logits)``.

    features: layer4 output [B, feature_dim, ceil(H/8), ceil(W/8)] (feature_dim 512 for
    resnet18, 2048 for resnet50/101); logits: [B, num_classes, ceil(H/8), ceil(W/8)].

    ``freeze_bn=True`` (paper preset, batch 1): BatchNorm layers always run in eval mode with
    their running statistics, and their affine parameters are not trained. ``False`` (toy
    preset, trained from scratch with batch >= 4): ordinary trainable BatchNorm.
    """

    def __init__(self, backbone: str = "resnet101", num_classes: int = 19, freeze_bn: bool = False):
        super().__init__()
        if backbone not in BACKBONES:
            raise PhfaError(f"unknown backbone '{backbone}': choose one of {', '.join(BACKBONES)}")
        if num_classes < 1:
            raise PhfaError(f"the number of classes must be at least 1, got {num_classes}")
        resnet = getattr(torchvision.models, backbone)(weights=None)
        _dilate(resnet.layer3, 2)
        _dilate(resnet.layer4, 4)
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.feature_dim = 512 if backbone == "resnet18" else 2048
        self.backbone = ResNetTrunk(resnet)
        self.classifier = ASPPClassifier(self.feature_dim, num_classes)
        self.freeze_bn = freeze_bn
        self.load_report: dict | None = None
        if freeze_bn:
            for m in self.modules():
                if _is_bn(m):
                    for p in m.parameters():
                        p.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> "DeepLabV2":
        super().train(mode)
        if self.freeze_bn:
            # With batch 1 the batch statistics are meaningless; keep the pretrained ones.
            for m in self.modules():
                if _is_bn(m):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        return features, self.classifier(features)

    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser groups: backbone at ``lr``, classifier at 10x ``lr`` (Table I, DeepLab-v2).

        Each group carries ``lr_mult`` so a poly schedule can set ``lr = base * poly * lr_mult``.
        Parameters that do not require grad (frozen BN) are left out.
        """
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        classifier = [p for p in self.classifier.parameters() if p.requires_grad]
        return [
            {"params": backbone, "lr": lr, "lr_mult": 1.0},
            {"params": classifier, "lr": 10.0 * lr, "lr_mult": 10.0},
        ]


# ----------------------------------------------------------------------------- weight loading


def _imagenet_url(backbone: str) -> str:
    weights = {
        "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
        "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
        "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
    }[backbone]
    return weights.url


def _fetch_imagenet(backbone: str) -> dict:
    """torchvision's ImageNet state dict: from the torch hub cache if present, else downloaded."""
    url = _imagenet_url(backbone)
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


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
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


def _normalise_keys(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map keys to DeepLabV2 names; returns (mapped, ignored).

    Accepted forms: torchvision ResNet keys (``layer1.0.conv1.weight``), the same with a
    ``backbone.`` prefix, or a full DeepLabV2 state dict; a DDP ``module.`` prefix is stripped.
    torchvision's ``fc.*`` (ImageNet head) is ignored, not reported as unexpected.
    """
    mapped: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in state.items():
        k = key[len("module."):] if key.startswith("module.") else key
        if k.startswith("fc.") or k.startswith("backbone.fc."):
            ignored.append(key)
            continue
        if not (k.startswith("backbone.") or k.startswith("classifier.")):
            k = "backbone." + k
        mapped[k] = value
    return mapped, ignored


def load_weights(model: DeepLabV2, state: Mapping[str, torch.Tensor], source: str) -> dict:
    """Load the tensors of ``state`` that match ``model`` by name and shape; return a report.

    Raises PhfaError naming ``source`` when fewer than half of the backbone tensors match
    (``num_batches_tracked`` counters are not counted: older torchvision files lack them).
    """
    mapped, ignored = _normalise_keys(state)
    own = model.state_dict()
    usable = {k: v for k, v in mapped.items() if k in own and own[k].shape == v.shape}
    mismatched = sorted(k for k, v in mapped.items() if k in own and own[k].shape != v.shape)
    unexpected = sorted(k for k in mapped if k not in own)
    missing = sorted(k for k in own if k not in usable and not k.endswith("num_batches_tracked"))

    backbone_keys = [k for k in own if k.startswith("backbone.") and not k.endswith("num_batches_tracked")]
    matched_backbone = sum(1 for k in backbone_keys if k in usable)
    if matched_backbone < MIN_MATCH_FRACTION * len(backbone_keys):
        raise PhfaError(
            f"{source} matches only {matched_backbone} of {len(backbone_keys)} {model.backbone_name} backbone "
            f"tensors: it is not a state dict for this backbone"
        )
    model.load_state_dict(usable, strict=False)
    report = {
        "source": source,
        # Counts leave out the num_batches_tracked counters, as the 50 % rule does.
        "matched": sum(1 for k in usable if not k.endswith("num_batches_tracked")),
        "matched_backbone": matched_backbone,
        "backbone_total": len(backbone_keys),
        "missing": missing,
        "unexpected": unexpected,
        "mismatched": mismatched,
        "ignored": ignored,
    }
    # Missing classifier tensors are normal (backbone-only files); anything else deserves a word.
    missing_backbone = [k for k in missing if k.startswith("backbone.")]
    if missing_backbone or unexpected or mismatched:
        warnings.warn(
            f"{source}: loaded {report['matched']} tensors; {len(missing_backbone)} backbone tensors missing, "
            f"{len(unexpected)} unexpected, {len(mismatched)} of another shape "
            f"(see model.load_report)",
            stacklevel=2,
        )
    return report


def build_deeplab(
    backbone: str = "resnet101",
    num_classes: int = 19,
    pretrained: str = "none",
    freeze_bn: bool = False,
) -> DeepLabV2:
    """Build DeepLab-v2 and optionally load weights.

    ``pretrained``: ``"none"`` (random init); ``"imagenet"`` (torchvision's ImageNet weights for
    the backbone: from the torch hub cache, else downloaded; offline without a cached copy this
    raises PhfaError); anything else is a path to a local state dict (see ``load_weights``).
    After loading, ``model.load_report`` holds ``{"matched", "missing", "unexpected", ...}``;
    it is None for ``"none"``.
    """
    model = DeepLabV2(backbone, num_classes, freeze_bn=freeze_bn)
    if pretrained == "none":
        return model
    if pretrained == "imagenet":
        state = _fetch_imagenet(backbone)
        model.load_report = load_weights(model, state, f"torchvision ImageNet weights for {backbone}")
        return model
    state = _read_state_dict(pretrained)
    model.load_report = load_weights(model, state, str(pretrained))
    return model
