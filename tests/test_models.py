"""DeepLab-v2 segmentor and output-space discriminator (pipeline/models)."""
from __future__ import annotations

import copy
import dataclasses
import os
import warnings
import urllib.error

import pytest
import torch
import torch.nn as nn
import torchvision

from pipeline.errors import PhfaError
from pipeline.models import weights
from pipeline.models.deeplab import DeepLabV2, build_deeplab
from pipeline.models.discriminator import OutputDiscriminator


@pytest.fixture(scope="module")
def r18() -> DeepLabV2:
    torch.manual_seed(0)
    return build_deeplab("resnet18", num_classes=19).eval()


@pytest.mark.parametrize("backbone,dim", [("resnet18", 512), ("resnet18-l3", 256), ("resnet50", 2048),
                                          ("resnet101", 2048)])
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
    model = build_deeplab("resnet18", num_classes=5, bn="frozen")
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
    model = build_deeplab("resnet18", num_classes=5, bn="trainable").train()
    bn = model.backbone.bn1
    assert bn.training and bn.weight.requires_grad
    mean = bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert not torch.equal(mean, bn.running_mean)


def test_reference_bn_trains_on_batch_statistics_with_frozen_affine():
    """bn="reference" (paper preset), as AdaptSegNet/ADVENT/BDL/SIM: model.train() leaves BN in train
    mode, so it normalises with the batch and moves its running statistics; the affine parameters
    get no gradient; eval() uses the running statistics."""
    model = build_deeplab("resnet18", num_classes=5, bn="reference").train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    model(torch.randn(1, 3, 32, 32))                     # batch 1, as the paper trains
    moved = [k for k, v in model.state_dict().items() if "running_mean" in k and not torch.equal(before[k], v)]
    assert len(moved) == len(before)
    model.eval()
    assert all(not m.training for m in bns)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x)[1], model(x)[1])          # eval: running statistics, deterministic


def test_unknown_bn_mode_is_a_sentence():
    with pytest.raises(PhfaError, match="BatchNorm mode 'batch'"):
        build_deeplab("resnet18", num_classes=5, bn="batch")


def test_param_groups_classifier_lr_x10():
    model = build_deeplab("resnet18", num_classes=5, bn="frozen")
    groups = model.param_groups(2.5e-4)
    assert groups[0]["lr"] == pytest.approx(2.5e-4) and groups[1]["lr"] == pytest.approx(2.5e-3)
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
    name = os.path.basename(weights.imagenet_url("resnet18"))
    (tmp_path / "checkpoints").mkdir()
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "checkpoints" / name)
    model = build_deeplab("resnet18", pretrained="imagenet")
    assert torch.equal(model.backbone.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    report = model.load_report
    assert report["matched_backbone"] == report["backbone_total"]
    assert report["unexpected"] == [] and sorted(report["ignored"]) == ["fc.bias", "fc.weight"]


def test_short_trunk_is_resnet18_without_layer4(tmp_path, monkeypatch):
    # resnet18-l3: the same conv1..layer3 (dilated layer3), no layer4 tensors; ImageNet resnet18
    # weights fill its three stages; the file's layer4 tensors are omitted by design (counted, no warning).
    model = build_deeplab("resnet18-l3", num_classes=19)
    names = [k for k in model.state_dict() if k.startswith("backbone.")]
    assert names and not any(k.startswith("backbone.layer4.") for k in names)
    full = build_deeplab("resnet18", num_classes=19).state_dict()
    assert set(names) == {k for k in full if k.startswith("backbone.") and ".layer4." not in k}
    assert model.backbone.layer3[0].conv1.dilation == (2, 2)
    assert model.classifier.branches[0].in_channels == 256
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "checkpoints" / os.path.basename(weights.imagenet_url("resnet18")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build_deeplab("resnet18-l3", pretrained="imagenet")
    assert torch.equal(model.backbone.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    report = model.load_report
    assert report["matched_backbone"] == report["backbone_total"]
    n_layer4 = sum(1 for k in ref.state_dict() if k.startswith("layer4."))
    assert report["unexpected"] == [] and report["omitted"] == n_layer4 > 0
    # a tensor the trunk does not omit by design still warns, with its name behind the warning
    state = {**ref.state_dict(), "layer9.weight": torch.zeros(1)}
    with pytest.warns(UserWarning, match="1 unexpected") as rec:
        weights.load_weights(build_deeplab("resnet18-l3"), state, "a file")
    assert rec[0].message.names == ["backbone.layer9.weight"]


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


# ----------------------------------------------------------------------------- the reference Caffe-layout init

CAFFE_MEAN_BGR = torch.tensor([104.00698793, 116.66876762, 122.67891434])


def _caffe_state(model: DeepLabV2) -> dict:
    """Our weights renamed to the layout of DeepLab_resnet_pretrained_init-f81d91e8.pth:
    ``Scale.`` + torchvision trunk names, the ASPP classifier as ``Scale.layer5.conv2d_list.i``,
    no num_batches_tracked counters (the file predates them)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked") or k == "variant_id":
            continue
        if k.startswith("backbone."):
            out["Scale." + k[len("backbone."):]] = v.clone()
        elif k.startswith("classifier.branches."):
            out["Scale.layer5.conv2d_list." + k[len("classifier.branches."):]] = v.clone()
    return out


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _bn(x, sd, p):
    return nn.functional.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                                    sd[p + ".bias"], training=False, eps=1e-5)


def _caffe_reference_forward(sd: dict, x_bgr: torch.Tensor) -> torch.Tensor:
    """DeepLab-v2 as the reference ports write it, straight from the Caffe-layout tensors: input
    0-255 BGR minus the mean; max-pool ceil_mode; the stride of layer2 on its first 1x1 conv;
    layer3/4 dilated 2/4 (first block included); the four ASPP branches summed."""
    F_ = nn.functional
    x = F_.relu(_bn(F_.conv2d(x_bgr, sd["Scale.conv1.weight"], stride=2, padding=3), sd, "Scale.bn1"))
    x = F_.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    for layer, stride, dil in ((1, 1, 1), (2, 2, 1), (3, 1, 2), (4, 1, 4)):
        n = len({k.split(".")[2] for k in sd if k.startswith(f"Scale.layer{layer}.")})
        for b in range(n):
            p = f"Scale.layer{layer}.{b}"
            s = stride if b == 0 else 1
            out = F_.relu(_bn(F_.conv2d(x, sd[p + ".conv1.weight"], stride=s), sd, p + ".bn1"))
            out = F_.relu(_bn(F_.conv2d(out, sd[p + ".conv2.weight"], padding=dil, dilation=dil), sd, p + ".bn2"))
            out = _bn(F_.conv2d(out, sd[p + ".conv3.weight"]), sd, p + ".bn3")
            res = x
            if p + ".downsample.0.weight" in sd:
                res = _bn(F_.conv2d(x, sd[p + ".downsample.0.weight"], stride=s), sd, p + ".downsample.1")
            x = F_.relu(out + res)
    return sum(F_.conv2d(x, sd[f"Scale.layer5.conv2d_list.{i}.weight"], sd[f"Scale.layer5.conv2d_list.{i}.bias"],
                         padding=r, dilation=r) for i, r in enumerate((6, 12, 18, 24)))


@pytest.fixture(scope="module")
def caffe_r50(tmp_path_factory):
    torch.manual_seed(3)
    src = build_deeplab("resnet50", num_classes=19)
    _randomise_bn(src)
    with torch.no_grad():
        for b in src.classifier.branches:
            b.bias.normal_(0, 0.1)
    state = _caffe_state(src)
    path = tmp_path_factory.mktemp("caffe") / "DeepLab_resnet_pretrained_init-f81d91e8.pth"
    torch.save(state, path)
    return path, state


def test_caffe_init_is_recognised_and_reported(caffe_r50):
    path, state = caffe_r50
    model = build_deeplab("resnet50", num_classes=19, pretrained=str(path), bn="frozen")
    assert model.variant == "caffe"
    r = model.load_report
    assert r["layout"] == "caffe" and r["variant"] == "caffe"
    assert r["matched_backbone"] == r["backbone_total"] and r["matched"] == len(state)
    assert r["missing"] == [] and r["unexpected"] == [] and r["mismatched"] == []
    assert torch.equal(model.classifier.branches[2].weight, state["Scale.layer5.conv2d_list.2.weight"])
    assert torch.equal(model.backbone.layer3[4].bn2.running_var, state["Scale.layer3.4.bn2.running_var"])
    # the Caffe stride placement: layer2's first bottleneck strides on its 1x1 conv1
    blk = model.backbone.layer2[0]
    assert blk.conv1.stride == (2, 2) and blk.conv2.stride == (1, 1) and model.backbone.maxpool.ceil_mode


def test_caffe_init_other_class_count_reports_classifier(tmp_path, caffe_r50):
    # The real file's layer5 predicts another class count: reported as mismatched, left at init.
    _, state = caffe_r50
    state = dict(state)
    for i in range(4):
        state[f"Scale.layer5.conv2d_list.{i}.weight"] = torch.zeros(21, 2048, 3, 3)
        state[f"Scale.layer5.conv2d_list.{i}.bias"] = torch.zeros(21)
    path = tmp_path / "coco21.pth"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="8 of another shape"):
        model = build_deeplab("resnet50", num_classes=19, pretrained=str(path))
    r = model.load_report
    assert model.variant == "caffe" and r["matched_backbone"] == r["backbone_total"]
    assert len(r["mismatched"]) == 8 and all(k.startswith("classifier.branches.") for k in r["mismatched"])
    assert sorted(r["missing"]) == sorted(r["mismatched"])


def test_caffe_variant_logits_equal_reference_forward(caffe_r50):
    """The caffe-variant model fed the usual ImageNet-normalised RGB tensor equals a functional
    re-implementation of the reference network fed 0-255 BGR minus the Caffe mean."""
    import numpy as np
    from pipeline.data.transforms import to_tensor
    path, state = caffe_r50
    model = build_deeplab("resnet50", num_classes=19, pretrained=str(path), bn="frozen").eval()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)  # even conv1 output: ceil_mode adds a row
    x = to_tensor(img)[None]
    bgr = torch.from_numpy(img[..., ::-1].astype(np.float32).copy()).permute(2, 0, 1)[None]
    x_caffe = bgr - CAFFE_MEAN_BGR.view(1, 3, 1, 1)
    with torch.no_grad():
        feats, logits = model(x)
        ref = _caffe_reference_forward(state, x_caffe)
        assert torch.allclose(model.caffe_input(x), x_caffe, atol=1e-3)
    assert logits.shape == ref.shape == (1, 19, 6, 7)  # torchvision rounding would give 5 x 6
    assert torch.allclose(logits, ref, rtol=1e-4, atol=1e-3 * ref.abs().max().item())
    # the torchvision variant with the same weights sees another input and strides
    tv = build_deeplab("resnet50", num_classes=19, bn="frozen").eval()
    tv.load_state_dict({k: v for k, v in model.state_dict().items() if k != "variant_id"})
    assert tv.variant == "torchvision"
    with torch.no_grad():
        assert tv(x)[1].shape[-2:] == (5, 6)


def test_caffe_dict_matching_too_little_is_refused(tmp_path, caffe_r50):
    _, state = caffe_r50
    few = {k: v for k, v in state.items() if k.startswith(("Scale.conv1", "Scale.bn1", "Scale.layer1."))}
    path = tmp_path / "partial.pth"
    torch.save(few, path)
    with pytest.raises(PhfaError, match=r"partial\.pth matches only \d+ of \d+ resnet50 backbone tensors: "
                                        r"it is not a Caffe-layout"):
        build_deeplab("resnet50", pretrained=str(path))
    # a resnet50-deep file for a resnet18: named by its depth
    path = tmp_path / "r50.pth"
    torch.save(state, path)
    with pytest.raises(PhfaError, match=r"layer3 has 6 blocks.*pass --backbone resnet50"):
        build_deeplab("resnet18", pretrained=str(path))


def test_variant_travels_with_checkpoints(tmp_path):
    """final.pt records the variant (arch) and the state dict carries it (variant_id), so
    load_segmentor and a resume (build with 'none', then load_state_dict) rebuild the caffe model;
    checkpoints from before variants load as torchvision."""
    from pipeline.config import preset
    from pipeline.models.segmentor import arch_of, load_segmentor, payload
    from pipeline.runtime import checkpoint
    torch.manual_seed(0)
    model = build_deeplab("resnet18", 19, variant="caffe").eval()
    cfg = dataclasses.replace(preset("toy"), backbone="resnet18")
    ck = payload(model, cfg, {})
    assert ck["arch"]["variant"] == "caffe" and "variant" not in arch_of(cfg)
    checkpoint.save(tmp_path / "final.pt", ck)
    loaded = load_segmentor(tmp_path / "final.pt")[0].eval()
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        assert loaded.variant == "caffe" and torch.equal(loaded(x)[1], model(x)[1])
    fresh = build_deeplab("resnet18", 19, "none")  # the runner's resume path
    fresh.load_state_dict(model.state_dict())
    assert fresh.variant == "caffe" and fresh.backbone.maxpool.ceil_mode
    old = {k: v for k, v in build_deeplab("resnet18", 19).state_dict().items() if k != "variant_id"}
    checkpoint.save(tmp_path / "old.pt", {"kind": "segmentor", "arch": {"backbone": "resnet18", "num_classes": 19},
                                          "model": old})
    assert load_segmentor(tmp_path / "old.pt")[0].variant == "torchvision"
    with pytest.raises(PhfaError, match="variant"):
        build_deeplab("resnet18", 19, variant="onnx")


def test_aspp_pointwise_equals_classifier_on_1x1_maps(r18):
    """The classifier check applies the ASPP classifier to pooled features: on a 1x1 map only
    the centre taps see the input, so `pointwise` (a linear layer) is exact."""
    with torch.no_grad():
        for b in r18.classifier.branches:
            b.bias.normal_(0, 0.1)
        x = torch.randn(5, 512)
        full = r18.classifier(x[:, :, None, None])[:, :, 0, 0]
        assert torch.allclose(r18.classifier.pointwise(x), full, atol=1e-5)
        for b in r18.classifier.branches:
            b.bias.zero_()
