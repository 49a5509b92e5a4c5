"""Evaluation: 100 on ground truth, hand-computed IoUs, equality with cityscapesScripts."""
import json

import numpy as np
import pytest

from pipeline import classes as C
from pipeline import metrics
from pipeline.data import pngio
from pipeline.data.dataconfig import load_data_config
from pipeline.errors import PhfaError
from pipeline.stages.evaluate import evaluate_folder


def test_hand_built_confusion_and_iou():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 255, 0, 5]], np.uint8)
    conf = metrics.confusion(pred, gt)
    # road: tp 1, fp 0 (the road prediction at (1,2) has ignored gt), fn 1 -> 1/2
    # sidewalk: tp 2, fp 1, fn 0 -> 2/3 ; building: tp 1, fn 1 (predicted void) -> 1/2
    iou = metrics.iou_per_class(conf)
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(2 / 3) and iou[2] == pytest.approx(0.5)
    assert np.isnan(iou[5])  # predicted only where gt is ignored: neither present nor a false positive
    m = metrics.summarize(conf, 19)
    assert m["miou"] == pytest.approx(100 * (0.5 + 2 / 3 + 0.5) / 3)
    assert m["pixel_acc"] == pytest.approx(100 * 4 / 6)
    assert m["iou"]["wall"] is None


def test_torch_and_numpy_confusion_agree():
    import torch
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 20, (30, 40)).astype(np.uint8)
    gt[gt == 19] = 255
    pred = rng.integers(0, 21, (30, 40)).astype(np.uint8)
    np.testing.assert_array_equal(metrics.confusion(pred, gt),
                                  metrics.confusion_torch(torch.from_numpy(pred), torch.from_numpy(gt)).numpy())


def test_subset_miou_averages_subset_only():
    conf = np.zeros((19, 20), np.int64)
    conf[np.arange(19), np.arange(19)] = 10
    conf[3, 0] = 10  # wall half wrong
    assert metrics.summarize(conf, 13)["miou"] == pytest.approx(100 * (12 + 10 / 20) / 13)  # road IoU 10/20
    assert len(metrics.summarize(conf, 16)["iou"]) == 16


def _write_preds(root, items, fn, fmt="trainid"):
    for (split, name), gt in items:
        p = fn(gt)
        if fmt == "labelid":
            lut = np.full(256, 0, np.uint8)
            lut[:19] = C.TRAIN_ID_TO_LABEL_ID
            p = lut[p]
        pngio.write_png(root / f"{name}_leftImg8bit.png", p)


def test_ground_truth_as_prediction_is_100(tiny_data, tmp_path):
    cfg, truth = tiny_data
    val = [(k, v) for k, v in truth["cityscapes"].items() if k[0] == "val"]
    _write_preds(tmp_path / "p", val, lambda g: g)
    m = evaluate_folder(load_data_config(cfg), "cityscapes", "val", tmp_path / "p", out=tmp_path / "o")
    assert m["miou"] == pytest.approx(100.0) and m["pixel_acc"] == pytest.approx(100.0)
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["miou"] == pytest.approx(100.0)


def test_small_predictions_upsampled_and_counted(tiny_data, tmp_path):
    cfg, truth = tiny_data
    val = [(k, v) for k, v in truth["cityscapes"].items() if k[0] == "val"]
    _write_preds(tmp_path / "p", val, lambda g: np.zeros((g.shape[0] // 2, g.shape[1] // 2), np.uint8))
    m = evaluate_folder(load_data_config(cfg), "cityscapes", "val", tmp_path / "p")
    assert m["resized_predictions"] == 4 and m["iou"]["road"] is not None


def test_missing_prediction_named(tiny_data, tmp_path):
    cfg, truth = tiny_data
    val = [(k, v) for k, v in truth["cityscapes"].items() if k[0] == "val"][:3]
    _write_preds(tmp_path / "p", val, lambda g: g)
    with pytest.raises(PhfaError, match="no prediction for 1 of 4"):
        evaluate_folder(load_data_config(cfg), "cityscapes", "val", tmp_path / "p")


@pytest.mark.parametrize("fmt", ["trainid", "labelid"])
def test_random_predictions_match_cityscapesscripts(tiny_data, tmp_path, fmt):
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    cfg, truth = tiny_data
    rng = np.random.default_rng(3)
    val = sorted((k, v) for k, v in truth["cityscapes"].items() if k[0] == "val")
    preds = {name: rng.integers(0, 19, gt.shape).astype(np.uint8) for (_, name), gt in val}
    _write_preds(tmp_path / "p", val, lambda g: preds[next(n for (_, n), v in val if v is g)], fmt)
    m = evaluate_folder(load_data_config(cfg), "cityscapes", "val", tmp_path / "p", pred_format=fmt)
    root = cfg.parent / "cityscapes"
    cs_pred, cs_gt = [], []
    for (_, name), _gt in val:
        p = tmp_path / f"cs_{name}.png"
        pngio.write_png(p, C.TRAIN_ID_TO_LABEL_ID[preds[name]])
        cs_pred.append(str(p))
        cs_gt.append(str(root / "gtFine" / "val" / "beta" / f"{name}_gtFine_labelIds.png"))
    ev.args.evalInstLevelScore = False
    ev.args.JSONOutput = False
    ev.args.quiet = True
    cs = 100 * ev.evaluateImgLists(cs_pred, cs_gt, ev.args)["averageScoreClasses"]
    assert abs(m["miou"] - cs) < 1e-6


def test_16_bit_and_colour_predictions_are_refused(tiny_data, tmp_path):
    """16-bit maps would wrap modulo 256 (512 + trainId would score 100); colour images are no label maps."""
    import cv2
    cfg, truth = tiny_data
    val = [(k, v) for k, v in truth["cityscapes"].items() if k[0] == "val"]
    (tmp_path / "p16").mkdir()
    for (split, name), g in val:
        cv2.imwrite(str(tmp_path / "p16" / f"{name}_leftImg8bit.png"), g.astype(np.uint16) + 512)
    with pytest.raises(PhfaError, match="16-bit image, not an 8-bit single-channel label map"):
        evaluate_folder(load_data_config(cfg), "cityscapes", "val", tmp_path / "p16")
    _write_preds(tmp_path / "rgb", val, lambda g: C.colorize(g))
    with pytest.raises(PhfaError, match="RGB .colour. image"):
        evaluate_folder(load_data_config(cfg), "cityscapes", "val", tmp_path / "rgb")


def test_predictions_outside_the_classes_are_measured(tiny_data, tmp_path):
    cfg, truth = tiny_data
    val = [(k, v) for k, v in truth["cityscapes"].items() if k[0] == "val"]
    _write_preds(tmp_path / "p", val, lambda g: np.full_like(g, 200))
    m = evaluate_folder(load_data_config(cfg), "cityscapes", "val", tmp_path / "p")
    assert m["outside_class_share"] == pytest.approx(1.0) and m["miou"] == 0


def test_evaluate_per_image_confusions_sum_to_the_split(tiny_data):
    """inference.evaluate(per_image=...) keeps one confusion matrix per val image, in split order,
    and they add up to the matrix it returns (bench/diagnostics/val_noise.py bootstraps over them)."""
    import numpy as np
    import torch

    from pipeline import inference
    from pipeline.data import datasets
    from pipeline.data.dataconfig import load_data_config

    class Conv(torch.nn.Module):          # a segmentor's (features, logits) interface
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.c = torch.nn.Conv2d(3, 19, 1)

        def forward(self, x):
            return None, self.c(x)

    cfg, _ = tiny_data
    spec = load_data_config(cfg).domain("cityscapes")
    per_image: list = []
    conf = inference.evaluate(Conv(), spec, "val", (32, 16), torch.device("cpu"), per_image=per_image)
    items = datasets.samples(spec, "val")
    assert len(per_image) == len(items) == 4
    assert np.array_equal(np.sum(per_image, axis=0), conf)
    assert all(p.sum() > 0 for p in per_image) and not np.array_equal(per_image[0], per_image[1])
