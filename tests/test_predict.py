"""`phfa predict` (CliRunner, CPU, a tiny resnet18 DeepLab): outputs at each image's own size,
the palette, the overlay, folders/globs, name clashes, skipped files (exit 2), run/stage choice."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from phfa_cli.app import app
from pipeline import classes as C
from pipeline import inference
from pipeline.config import preset
from pipeline.data import pngio
from pipeline.data.transforms import to_tensor
from pipeline.models.deeplab import build_deeplab
from pipeline.models.segmentor import payload
from pipeline.runtime import checkpoint

assert "predict" in [c.name for c in app.registered_commands]  # phfa_cli/app.py registers it

runner = CliRunner()
SIZE = (64, 32)  # (W, H) the checkpoint's target_size


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = dataclasses.replace(preset("toy"), backbone="resnet18", target_size=SIZE, precision="fp32")
    model = build_deeplab("resnet18", C.NUM_CLASSES, pretrained="none", bn="trainable")
    model.eval()
    path = tmp_path_factory.mktemp("ck") / "final.pt"
    checkpoint.save(path, payload(model, cfg, {}))
    return path


def _img(path, w, h, seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") else pngio.write_png(path, arr)
    return arr


def _predict(*args):
    return runner.invoke(app, ["predict", *map(str, args)])


def _check_outputs(out, stem, w, h, overlay=True):
    with Image.open(out / f"{stem}.png") as im:
        assert im.mode == "L" and im.size == (w, h)
        pred = np.asarray(im)
    assert set(np.unique(pred).tolist()) <= set(range(C.NUM_CLASSES))
    with Image.open(out / f"{stem}_color.png") as im:
        assert im.mode == "RGB" and im.size == (w, h)
        assert np.array_equal(np.asarray(im), C.colorize(pred))
    assert (out / f"{stem}_overlay.png").is_file() == overlay
    return pred


def test_odd_sizes_come_back_at_their_own_size(ckpt, tmp_path):
    a = _img(tmp_path / "in" / "wide.png", 157, 83, seed=1)
    _img(tmp_path / "in" / "tall.png", 33, 97, seed=2)
    out = tmp_path / "out" / "nested"  # created when missing
    r = _predict("--checkpoint", ckpt, tmp_path / "in" / "wide.png", tmp_path / "in" / "tall.png",
                 "--out", out, "--overlay", "--batch-size", "2")
    assert r.exit_code == 0, r.output
    assert "wrote 2 prediction(s)" in r.output
    pred = _check_outputs(out, "wide", 157, 83)
    _check_outputs(out, "tall", 33, 97)
    with Image.open(out / "wide_overlay.png") as im:
        assert im.mode == "RGB" and im.size == (157, 83)
        blend = np.asarray(im).astype(int)
    expect = (a.astype(int) + C.colorize(pred).astype(int) + 1) // 2
    assert np.array_equal(blend, expect)
    assert not list(out.glob(".*.partial-*"))  # no temp files left by the atomic writes


def test_prediction_equals_argmax_of_predict_logits(ckpt, tmp_path):
    """Batched (with another image of another size) = predict_logits on that image alone."""
    from pipeline.models.segmentor import load_segmentor

    img = _img(tmp_path / "in" / "x.png", 157, 83, seed=3)
    _img(tmp_path / "in" / "y.png", 40, 50, seed=4)
    r = _predict("--checkpoint", ckpt, tmp_path / "in", "--out", tmp_path / "out", "--batch-size", "4")
    assert r.exit_code == 0, r.output
    model, _ = load_segmentor(ckpt)
    model.eval()
    x = to_tensor(np.asarray(Image.fromarray(img).resize(SIZE, Image.BICUBIC)))[None]
    logits = inference.predict_logits(model, x, (83, 157))
    want = logits.argmax(1)[0].numpy()
    got = np.asarray(Image.open(tmp_path / "out" / "x.png"))
    top2 = logits[0].topk(2, dim=0).values
    clear = (top2[0] - top2[1]).numpy() > 1e-4  # batch-size rounding may only flip near-ties
    assert np.array_equal(got[clear], want[clear])
    assert (got != want).mean() < 1e-3
    assert len(np.unique(want)) > 1  # a constant map would make the comparison weak


def test_folder_and_glob(ckpt, tmp_path):
    src = tmp_path / "src"
    _img(src / "a.png", 20, 16)
    _img(src / "sub" / "b.jpg", 24, 18)
    _img(src / "sub" / "deeper" / "c.JPEG", 17, 13)
    (src / "notes.txt").write_text("not an image")  # folders only pick image extensions
    r = _predict("--checkpoint", ckpt, src, "--out", tmp_path / "o1")
    assert r.exit_code == 0, r.output
    for stem, (w, h) in {"a": (20, 16), "b": (24, 18), "c": (17, 13)}.items():
        _check_outputs(tmp_path / "o1", stem, w, h, overlay=False)
    r = _predict("--checkpoint", ckpt, f"{src}/**/*.jpg", "--out", tmp_path / "o2")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == [".phfa-out", "b.png", "b_color.png"]


def test_same_stem_kept_apart(ckpt, tmp_path):
    _img(tmp_path / "d" / "city1" / "x.png", 21, 11, seed=1)
    _img(tmp_path / "d" / "city2" / "x.png", 23, 12, seed=2)
    r = _predict("--checkpoint", ckpt, tmp_path / "d", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    _check_outputs(tmp_path / "o" / "city1", "x", 21, 11, overlay=False)
    _check_outputs(tmp_path / "o" / "city2", "x", 23, 12, overlay=False)
    assert "city1/x.png" in r.output and "city2/x.png" in r.output


def test_unreadable_files_skipped_and_named_exit_2(ckpt, tmp_path):
    _img(tmp_path / "good1.png", 30, 20, seed=1)
    _img(tmp_path / "good2.png", 19, 25, seed=2)
    (tmp_path / "readme.txt").write_text("hello")
    _img(tmp_path / "broken.png", 50, 40, seed=3)
    data = (tmp_path / "broken.png").read_bytes()
    (tmp_path / "broken.png").write_bytes(data[: len(data) // 2])
    r = _predict("--checkpoint", ckpt, tmp_path / "good1.png", tmp_path / "readme.txt", tmp_path / "broken.png",
                 tmp_path / "good2.png", "--out", tmp_path / "o", "--batch-size", "2")
    assert r.exit_code == 2, r.output
    assert "readme.txt" in r.output and "broken.png" in r.output and "Traceback" not in r.output
    assert "wrote 2 prediction(s)" in r.output
    _check_outputs(tmp_path / "o", "good1", 30, 20, overlay=False)
    _check_outputs(tmp_path / "o", "good2", 19, 25, overlay=False)
    assert not (tmp_path / "o" / "readme.png").exists() and not (tmp_path / "o" / "broken.png").exists()


def _stage(run, name, ckpt, finished_at, with_model=True):
    (run / name).mkdir(parents=True)
    if with_model:
        shutil.copy(ckpt, run / name / "final.pt")
    (run / name / "manifest.json").write_text(json.dumps({"status": "finished", "finished": finished_at}))


def test_run_picks_final_stage_and_refuses_without_model(ckpt, tmp_path):
    _img(tmp_path / "i.png", 16, 16)
    run = tmp_path / "run"
    _stage(run, "adapt-noadv-nohier", ckpt, "2024-01-01T00:00:00+00:00", with_model=False)
    r = _predict("--run", run, tmp_path / "i.png", "--out", tmp_path / "o")
    assert r.exit_code == 2 and r.output.startswith("error:") and len(r.output.strip().splitlines()) == 1, r.output
    assert "final.pt" in r.output
    _stage(run, "retrain", ckpt, "2024-01-02T00:00:00+00:00")
    _stage(run, "adapt", ckpt, "2024-01-03T00:00:00+00:00")  # newer, but retrain comes first
    r = _predict("--run", run, tmp_path / "i.png", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert "using stage 'retrain'" in r.output
    r = _predict("--run", run, "--stage", "adapt", tmp_path / "i.png", "--out", tmp_path / "o2")
    assert r.exit_code == 0 and "using stage" not in r.output, r.output
    _check_outputs(tmp_path / "o2", "i", 16, 16, overlay=False)
    r = _predict("--run", run, "--stage", "adapt-noadv-nohier", tmp_path / "i.png", "--out", tmp_path / "o3")
    assert r.exit_code == 2 and "final.pt" in r.output and len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.parametrize("opts", [[], ["--checkpoint", "CK", "--run", "RUN"], ["--run", "RUN", "--stage", "../x"],
                                  ["--checkpoint", "CK", "--precision", "fp16"], ["--checkpoint", "CK", "--batch-size", "0"]])
def test_option_errors_are_one_sentence(ckpt, tmp_path, opts):
    _img(tmp_path / "i.png", 16, 16)
    (tmp_path / "run").mkdir()
    opts = [str(ckpt) if o == "CK" else str(tmp_path / "run") if o == "RUN" else o for o in opts]
    r = _predict(*opts, tmp_path / "i.png", "--out", tmp_path / "o")
    assert r.exit_code == 2 and r.output.startswith("error:") and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_large_photo_costs_a_few_bytes_a_pixel():
    """predict upsamples the logits in bands of rows: a 6 Mpx photo stays far below the ~90 bytes a
    pixel that full-frame float32 logits of 19 classes and an int64 argmax take (bench/predict_memory.py)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "predict_memory.py"), "--size", "3000", "2000", "--json"],
                       capture_output=True, text=True, timeout=600, cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout.strip().splitlines()[-1])
    banded, full = d["rows"]
    assert banded["mode"] == "banded" and banded["bytes_per_pixel"] < 40 and full["bytes_per_pixel"] > 60, d
