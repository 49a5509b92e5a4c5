"""DeepLab-v2 segmentor and output-space discriminator (pipeline/models)."""
from __future__ import annotations

import copy
import os
import urllib.error

import pytest
import torch
import torch.nn as nn
import torchvision

from pipeline.errors import PhfaError
from pipeline.models import deeplab
from pipeline.models.deeplab import DeepLabV2, build_deeplab
from pipeline.models.discriminator import OutputDiscriminator


@pytest.fixture(scope="module")
def r18() -> DeepLabV2:
    torch.manual_seed(0)
    return build_deeplab("resnet18", num_classes=19).eval()


@pytest.mark.parametrize("backbone,dim", [("resnet18", 512), ("resnet50", 2048), ("resnet101", 2048)])
def test_output_stride_8_and_feature_dim(backbone, dim):
    model = build_deeplab(backbone, num_classes=7).eval()
    assert model.feature_dim == dim
    with torch.no_grad():
        feats, logits = model(torch.randn(1, 3, 64, 64))
    assert feats.shape == (1, dim, 8, 8)
    assert logits.shape == (1, 7, 8, 8)


def test_odd_input_size_rounds_up(r18):
    with torch.no_grad():
        feats, logits = r18(torch.randn(1, 3, 65, 63))
    assert feats.shape[-2:] == (9, 8) and logits.shape[-2:] == (9, 8)


def test_layer3_layer4_are_dilated_not_strided(r18):
    for layer, d in ((r18.backbone.layer3, 2), (r18.backbone.layer4, 4)):
        for m in layer.modules():
            if isinstance(m, nn.Conv2d):
                assert m.stride == (1, 1)
                if m.kernel_size == (3, 3):
                    assert m.dilation == (d, d) and m.padding == (d, d)


def test_aspp_branches_init_and_all_four_summed(r18):
    branches = r18.classifier.branches
    assert [b.dilation[0] for b in branches] == [6, 12, 18, 24]
    assert [b.padding[0] for b in branches] == [6, 12, 18, 24]
    for b in branches:
        assert torch.all(b.bias == 0)
        assert abs(b.weight.std().item() - 0.01) < 0.002
    x = torch.randn(1, 512, 8, 8)
    with torch.no_grad():
        full = r18.classifier(x)
        assert torch.allclose(full, sum(b(x) for b in branches), atol=1e-5)
        for i in range(4):
            clf = copy.deepcopy(r18.classifier)
            clf.branches[i].weight.zero_()
            assert not torch.allclose(clf(x), full), f"branch {i} does not contribute"


def test_freeze_bn_keeps_eval_and_statistics():
    model = build_deeplab("resnet18", num_classes=5, freeze_bn=True)
    model.train()
    assert model.training
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model(torch.randn(2, 3, 32, 32))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_trainable_bn_updates_statistics():
    model = build_deeplab("resnet18", num_classes=5, freeze_bn=False).train()
    bn = model.backbone.bn1
    assert bn.training and bn.weight.requires_grad
    mean = bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert not torch.equal(mean, bn.running_mean)


def test_param_groups_classifier_lr_x10():
    model = build_deeplab("resnet18", num_classes=5, freeze_bn=True)
    groups = model.param_groups(2.5e-4)
    assert groups[0]["lr"] == pytest.approx(2.5e-4) and groups[1]["lr"] == pytest.approx(2.5e-3)
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.classifier.parameters()}
    grouped = {id(p) for g in groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert grouped == trainable
    assert id(model.backbone.bn1.weight) not in grouped  # frozen BN is left out
    torch.optim.SGD(groups, lr=2.5e-4, momentum=0.9)  # the groups are valid optimiser input


def test_unknown_backbone():
    with pytest.raises(PhfaError, match="resnet34"):
        build_deeplab("resnet34")


def test_imagenet_offline_raises_phfa_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(PhfaError, match="could not be downloaded.*--pretrained PATH.*--pretrained none"):
        build_deeplab("resnet18", pretrained="imagenet")


def test_imagenet_from_hub_cache(tmp_path, monkeypatch):
    # A file already in the torch hub cache is used without any download.
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    name = os.path.basename(deeplab._imagenet_url("resnet18"))
    (tmp_path / "checkpoints").mkdir()
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "checkpoints" / name)
    model = build_deeplab("resnet18", pretrained="imagenet")
    assert torch.equal(model.backbone.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    report = model.load_report
    assert report["matched_backbone"] == report["backbone_total"]
    assert report["unexpected"] == [] and sorted(report["ignored"]) == ["fc.bias", "fc.weight"]


def test_pretrained_path_torchvision_keys(tmp_path):
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    model = build_deeplab("resnet18", pretrained=str(path))
    assert torch.equal(model.backbone.conv1.weight, ref.conv1.weight)
    assert torch.equal(model.backbone.layer3[0].bn2.running_var, ref.layer3[0].bn2.running_var)
    report = model.load_report
    assert report["matched"] == report["matched_backbone"] == report["backbone_total"]
    # Only the classifier is missing (a backbone-only file), nothing unexpected.
    assert report["missing"] and all(k.startswith("classifier.") for k in report["missing"])
    assert report["unexpected"] == [] and report["mismatched"] == []


def test_pretrained_path_full_model_and_prefix(tmp_path, r18):
    path = tmp_path / "full.pth"
    torch.save(r18.state_dict(), path)
    model = build_deeplab("resnet18", num_classes=19, pretrained=str(path)).eval()
    assert model.load_report["missing"] == []
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)[1], r18(x)[1])
    # backbone.-prefixed keys with extra tensors: loaded, extras reported with a warning.
    state = {k: v for k, v in r18.state_dict().items() if k.startswith("backbone.")}
    state["backbone.extra.weight"] = torch.zeros(3)
    torch.save(state, path)
    with pytest.warns(UserWarning, match="1 unexpected"):
        model = build_deeplab("resnet18", pretrained=str(path))
    assert model.load_report["unexpected"] == ["backbone.extra.weight"]
    assert torch.equal(model.backbone.layer2[0].conv1.weight, r18.backbone.layer2[0].conv1.weight)


def test_pretrained_path_other_class_count_keeps_backbone(tmp_path, r18):
    path = tmp_path / "full19.pth"
    torch.save(r18.state_dict(), path)
    with pytest.warns(UserWarning):
        model = build_deeplab("resnet18", num_classes=16, pretrained=str(path))
    assert len(model.load_report["mismatched"]) == 8  # 4 branches x (weight, bias)


def test_pretrained_path_unrelated_state_dict(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save({"linear.weight": torch.zeros(2, 2), "conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(PhfaError, match="tiny.pth"):
        build_deeplab("resnet18", pretrained=str(path))


def test_pretrained_path_garbage_and_missing(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"this is not a checkpoint\x00\x01")
    with pytest.raises(PhfaError, match="garbage.pth"):
        build_deeplab("resnet18", pretrained=str(path))
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(PhfaError, match="list.pth"):
        build_deeplab("resnet18", pretrained=str(path))
    with pytest.raises(PhfaError, match="nope.pth"):
        build_deeplab("resnet18", pretrained=str(tmp_path / "nope.pth"))


def test_input_convention_round_trip():
    """to_tensor normalises per channel (white -> (1 - mean) / std) and denormalize undoes it."""
    import numpy as np
    from pipeline.data.transforms import denormalize, to_tensor
    img = np.zeros((2, 3, 3), np.uint8)
    img[0, 0] = 255
    img[1, 2] = (10, 128, 250)
    t = to_tensor(img)
    assert t.shape == (3, 2, 3)
    assert torch.allclose(t[:, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]))
    back = (denormalize(t) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert (back == img).all()


def test_discriminator_shape_and_layers():
    d = OutputDiscriminator(num_classes=19, ndf=8)
    out = d(torch.softmax(torch.randn(2, 19, 64, 128), dim=1))
    assert out.shape == (2, 1, 2, 4)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 1]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    acts = [m for m in d.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 4 and all(a.negative_slope == 0.2 for a in acts)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) for m in d.modules())
    assert isinstance(list(d.net)[-1], nn.Conv2d)  # raw logits out
