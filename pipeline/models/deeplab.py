"""DeepLab-v2 segmentor G (paper section IV-B; the network behind every equation's F(x) and G(x)).

A torchvision ResNet trunk whose layer3 and layer4 are dilated (2 and 4) instead of strided,
so features keep output stride 8, followed by the DeepLab-v2 ASPP classifier: four 3x3
convolutions at dilation 6/12/18/24 whose outputs are summed (all four; several reference
ports return after the second branch by mistake).

``forward`` returns both the layer4 features F(x) used by the object- and background-level
alignment (Eq. 1, 5, 6) and the logits G(x) used by the segmentation (Eq. 9), category-level
(Eq. 2-3) and adversarial (Eq. 10) losses.

Input convention: every caller feeds RGB in [0, 1] normalised with ImageNet mean/std
(``pipeline.data.transforms.to_tensor``). Two variants (``DeepLabV2.variant``) take it:

- ``"torchvision"`` (default): torchvision's ResNet (stride on the 3x3 conv of a bottleneck,
  max-pool rounding down), fed the normalised tensor as it is.
- ``"caffe"``: the layout of ``DeepLab_resnet_pretrained_init-f81d91e8.pth`` (ImageNet +
  MS-COCO, the init of AdaptSegNet, ADVENT, BDL, SIM, IW-MaxSquare): the stride of layer2's
  first bottleneck on its first 1x1 conv, max-pool with ``ceil_mode=True``, and inputs as Caffe
  saw them: 0-255 BGR minus the mean (104.008, 116.669, 122.679), no std division. The model
  converts the normalised RGB tensor itself inside ``forward``, so eval, predict, pseudolabel
  and the perceptual loss feed it correctly without knowing. The variant is stored in the
  state dict (``variant_id``) and in final.pt's ``arch``; a state dict without it is
  "torchvision".

Choices where the paper is silent:
- Every 3x3 conv of layer3 has dilation 2 and every 3x3 conv of layer4 dilation 4, the first
  block included (the original DeepLab-v2 layout; torchvision's ``replace_stride_with_dilation``
  keeps the previous dilation in each stage's first block). One helper does this for all three
  backbones, so resnet18 (BasicBlock, which torchvision refuses to dilate) gets the same layout.
- Output size: ceil(H/8) x ceil(W/8) for "torchvision" (each stride-2 op with padding rounds
  up for odd sizes). "caffe" rounds its max-pool up as the reference network does, which can
  add a row or column (720 rows: 91 instead of 90). Logits are upsampled to the label size and
  label maps downsampled to the feature size, so both sizes work everywhere.
- Pretrained ImageNet weights are torchvision's IMAGENET1K_V1 (V2 is a different training
  recipe). The reference init is loaded with ``--pretrained PATH`` (``weights.load_weights``).
"""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from pipeline.config import BN_MODES
from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from pipeline.errors import PhfaError
from pipeline.models import effnet
from pipeline.models.weights import fetch_imagenet, load_weights, read_state_dict

BACKBONES: tuple[str, ...] = ("resnet18", "resnet18-l3", "resnet50", "resnet101", *effnet.TRUNKS)
# Trunks that stop after layer3, with the torchvision network they are cut from. Not DeepLab-v2:
# a from-scratch calibration aid for the toy setting (docs/notes/toytown-calibration.md), where
# layer4 at output stride 8 is 69 % of the multiply-adds and did not help the oracle.
SHORT_TRUNKS: dict[str, str] = {"resnet18-l3": "resnet18"}
FEATURE_DIM: dict[str, int] = {"resnet18": 512, "resnet18-l3": 256, **effnet.FEATURE_DIM}   # others: 2048
ASPP_RATES: tuple[int, ...] = (6, 12, 18, 24)

VARIANTS: tuple[str, ...] = ("torchvision", "caffe")
# Caffe's per-channel mean in B, G, R order, on 0-255 pixel values (DeepLab-v2, AdaptSegNet, SIM...).
CAFFE_MEAN_BGR: tuple[float, float, float] = (104.00698793, 116.66876762, 122.67891434)


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

    def pointwise(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier on pooled features [n, D] (a 1x1 map): logits [n, num_classes].

        Exact, not an approximation: on a 1x1 input a 3x3 conv with padding = dilation sees the
        input only at its centre tap (every other tap lands on zero padding), so each branch is
        the linear layer ``W[:, :, 1, 1] x + b`` and the classifier their sum.
        """
        out = 0
        for conv in self.branches:
            kh, kw = conv.kernel_size
            out = out + F.linear(x, conv.weight[:, :, kh // 2, kw // 2], conv.bias)
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


def _place_stride(layer: nn.Module, variant: str) -> None:
    """Put a strided stage's stride where the variant has it: torchvision on the 3x3 conv of
    the first bottleneck, Caffe on its first 1x1 conv. BasicBlocks (resnet18) have the stride
    on their first conv in both layouts; the downsample branch is the same in both."""
    block = layer[0]
    if not hasattr(block, "conv3"):
        return
    stride = max(block.conv1.stride[0], block.conv2.stride[0])
    if variant == "caffe":
        block.conv1.stride, block.conv2.stride = (stride, stride), (1, 1)
    else:
        block.conv1.stride, block.conv2.stride = (1, 1), (stride, stride)


class DeepLabV2(nn.Module):
    """DeepLab-v2 with output stride 8. ``forward(x) -> (features, logits)``.

    features: layer4 output [B, feature_dim, ceil(H/8), ceil(W/8)] (feature_dim 512 for
    resnet18, 2048 for resnet50/101; layer3's 256 for the short trunk resnet18-l3);
    logits: [B, num_classes, ceil(H/8), ceil(W/8)].

    ``bn`` (config.BN_MODES) says how BatchNorm trains:

    - ``"reference"`` (paper preset): as AdaptSegNet, ADVENT, BDL and SIM run it: the affine
      parameters are frozen, but in training the layers normalise with the batch's statistics
      and update their running statistics (momentum 0.1), on source and target batches alike;
      inference uses the running statistics.
    - ``"frozen"``: always eval mode, the loaded running statistics and affine parameters fixed
      (a pretrained model's statistics kept as they are; with random init there is then no
      normalisation at all).
    - ``"trainable"`` (toy preset, batch >= 4): ordinary trainable BatchNorm.

    ``variant``: "torchvision" or "caffe" (module docstring). Both take the ImageNet-normalised
    RGB tensor; "caffe" converts it to mean-subtracted 0-255 BGR inside ``forward``. The
    persistent buffer ``variant_id`` (0 / 1) carries the variant through ``state_dict``:
    loading a state dict that has it switches the model to that variant.
    """

    def __init__(self, backbone: str = "resnet101", num_classes: int = 19, bn: str = "trainable",
                 variant: str = "torchvision"):
        super().__init__()
        if backbone not in BACKBONES:
            raise PhfaError(f"unknown backbone '{backbone}': choose one of {', '.join(BACKBONES)}")
        if num_classes < 1:
            raise PhfaError(f"the number of classes must be at least 1, got {num_classes}")
        if variant not in VARIANTS:
            raise PhfaError(f"unknown DeepLab-v2 variant '{variant}': choose one of {', '.join(VARIANTS)}")
        if bn not in BN_MODES:
            raise PhfaError(f"unknown BatchNorm mode '{bn}': choose one of {', '.join(BN_MODES)}")
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.feature_dim = FEATURE_DIM.get(backbone, 2048)
        if backbone in effnet.TRUNKS:
            # Not a ResNet: EfficientNet-Lite0's trunk, whose ImageNet weights come from a package.
            self.backbone = effnet.EfficientNetLite0Trunk(effnet.TRUNKS[backbone])
        else:
            resnet = getattr(torchvision.models, SHORT_TRUNKS.get(backbone, backbone))(weights=None)
            _dilate(resnet.layer3, 2)
            _dilate(resnet.layer4, 4)
            if backbone in SHORT_TRUNKS:
                resnet.layer4 = nn.Identity()   # features come from layer3 (still output stride 8)
            self.backbone = ResNetTrunk(resnet)
            # a short trunk leaves out by design what a full ImageNet file holds beyond it
            self.backbone.omitted = ("layer4.",) if backbone in SHORT_TRUNKS else ()
        self.classifier = ASPPClassifier(self.feature_dim, num_classes)
        self.bn = bn
        self.load_report: dict | None = None
        # Input conversion of the caffe variant: x_caffe = x[:, perm] * scale + shift, i.e. undo the
        # ImageNet normalisation (x * std + mean), to 0-255, RGB -> BGR, minus the Caffe mean.
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)
        perm = [2, 1, 0]
        self.register_buffer("caffe_scale", (255.0 * std[perm]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("caffe_shift", (255.0 * mean[perm] - torch.tensor(CAFFE_MEAN_BGR)).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("variant_id", torch.tensor(0, dtype=torch.long))
        self.variant = "torchvision"
        self.set_variant(variant)
        if bn != "trainable":
            for m in self.modules():
                if _is_bn(m):
                    for p in m.parameters():
                        p.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> "DeepLabV2":
        super().train(mode)
        if self.bn == "frozen":
            for m in self.modules():
                if _is_bn(m):
                    m.eval()
        return self

    def set_variant(self, variant: str) -> None:
        """Switch between the torchvision and Caffe layouts (same tensors, other strides/rounding)."""
        if variant not in VARIANTS:
            raise PhfaError(f"unknown DeepLab-v2 variant '{variant}': choose one of {', '.join(VARIANTS)}")
        if not isinstance(self.backbone, ResNetTrunk):
            if variant != "torchvision":
                raise PhfaError(f"the {variant} layout is a ResNet's: backbone {self.backbone_name} cannot take it")
            return
        self.variant = variant
        self.variant_id.fill_(VARIANTS.index(variant))
        _place_stride(self.backbone.layer2, variant)
        self.backbone.maxpool.ceil_mode = variant == "caffe"

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "variant_id"
        present = key in state_dict
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if present:
            vid = int(self.variant_id)
            if not 0 <= vid < len(VARIANTS):
                error_msgs.append(f"{key}: unknown DeepLab-v2 variant id {vid}")
                return
            self.set_variant(VARIANTS[vid])
        elif key in missing_keys:  # written before variants existed: keep the model's own
            missing_keys.remove(key)

    def caffe_input(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised RGB -> 0-255 BGR minus the Caffe mean (no std division)."""
        return x[:, [2, 1, 0]] * self.caffe_scale.to(x.dtype) + self.caffe_shift.to(x.dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.variant == "caffe":
            x = self.caffe_input(x)
        features = self.backbone(x)
        return features, self.classifier(features)

    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser groups: backbone at ``lr``, classifier at 10x ``lr`` (Table I, DeepLab-v2).

        A LambdaLR poly schedule scales each group's own starting lr, so the ratio holds throughout.
        Parameters that do not require grad (frozen BN) are left out.
        """
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        classifier = [p for p in self.classifier.parameters() if p.requires_grad]
        return [
            {"params": backbone, "lr": lr},
            {"params": classifier, "lr": 10.0 * lr},
        ]


def build_deeplab(
    backbone: str = "resnet101",
    num_classes: int = 19,
    pretrained: str = "none",
    bn: str = "trainable",
    variant: str = "torchvision",
) -> DeepLabV2:
    """Build DeepLab-v2 and optionally load weights.

    ``pretrained``: ``"none"`` (random init); ``"imagenet"`` (torchvision's ImageNet weights for
    the backbone: from the torch hub cache, else downloaded; offline without a cached copy this
    raises PhfaError); anything else is a path to a local state dict (see ``load_weights``; the
    reference Caffe-layout init makes a "caffe" variant model, whatever ``variant`` says).
    After loading, ``model.load_report`` holds ``{"matched", "missing", "unexpected", ...,
    "layout", "variant"}``; it is None for ``"none"``.
    """
    model = DeepLabV2(backbone, num_classes, bn=bn, variant=variant)
    if pretrained == "none":
        return model
    if pretrained == "imagenet" and backbone in effnet.TRUNKS:
        path = effnet.imagenet_weights_path()
        model.load_report = load_weights(model, read_state_dict(path), f"ImageNet weights for {backbone} ({path})")
        return model
    if pretrained == "imagenet":
        state = fetch_imagenet(SHORT_TRUNKS.get(backbone, backbone))   # a short trunk loads its first three stages
        model.load_report = load_weights(model, state, f"torchvision ImageNet weights for {backbone}")
        return model
    state = read_state_dict(pretrained)
    model.load_report = load_weights(model, state, str(pretrained))
    return model
