"""`phfa export` (CliRunner, CPU): a tiny trained stage as ONNX and TorchScript, checked against
`inference.predict_logits` on real target images; the metadata read back; bad inputs (exit 2,
one sentence); a failed check leaves no file."""
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from phfa_cli.app import app
from pipeline import classes as C
from pipeline import inference
from pipeline.data import datasets
from pipeline.data.dataconfig import load_data_config
from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from pipeline.models.segmentor import load_segmentor
from pipeline.stages import export as E

assert "export" in [c.name for c in app.registered_commands]  # phfa_cli/app.py registers it

runner = CliRunner()
SIZE = (64, 32)   # (W, H): the stage's target_size
STAGE = "adapt-noadv-nohier"
# the toy preset at tiny sizes, cold (as tests/test_adapt.py runs it; ImageNet weights), source-only, two iterations
TINY = ["--preset", "toy", "--set", "source_size=64,32", "--set", "target_size=64,32", "--set", "batch_size=2",
        "--set", "init_stage="]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, data config) of a source-only stage trained on the tiny domains of conftest."""
    from tests.conftest import write_tiny_domains
    root = tmp_path_factory.mktemp("export")
    cfg = write_tiny_domains(root)
    run = root / "runs" / "r"
    r = runner.invoke(app, ["adapt", "--config", str(cfg), "--run", str(run), *TINY, "--sources", "gta5",
                            "--no-adversarial", "--no-hierarchy", "--iters", "2"])
    assert r.exit_code == 0, r.output
    assert (run / STAGE / "final.pt").is_file()
    return run, cfg


def _export(*args):
    return runner.invoke(app, ["export", *map(str, args)])


def _target_batch(cfg, size):
    """The cityscapes val images of the tiny data, resized and normalised as predict does."""
    spec = load_data_config(cfg).domain("cityscapes")
    items = datasets.samples(spec, "val")
    assert len(items) >= 2
    from pipeline.data.transforms import to_tensor
    return torch.stack([to_tensor(datasets.load_pair(spec, s, size, with_label=False)[0]) for s in items])


def _reference(run, x):
    model, _ = load_segmentor(run / STAGE / "final.pt")
    model.eval()
    return inference.predict_logits(model, x, x.shape[-2:]).numpy()


def _agreement(want, got):
    assert got.shape == want.shape
    diff = float(np.abs(got - want).max())
    agree = 100.0 * float((got.argmax(1) == want.argmax(1)).mean())
    return diff, agree


def _check_meta(meta, run):
    assert meta["format"] == "phfa-export" and meta["version"] == 1
    assert meta["classes"]["names"] == list(C.CLASS_NAMES) and meta["classes"]["train_ids"] == list(range(19))
    assert meta["classes"]["colors"] == C.PALETTE.tolist()
    inp = meta["input"]
    assert inp["size"] == list(SIZE) and inp["channel_order"] == "RGB" and inp["layout"] == "NCHW"
    assert inp["mean"] == pytest.approx(IMAGENET_MEAN) and inp["std"] == pytest.approx(IMAGENET_STD)
    assert inp["value_range"] == [0, 255] and inp["scale"] == pytest.approx(1 / 255)
    assert meta["output"]["classes"] == 19 and "align_corners=True" in meta["output"]["upsampling"]
    assert meta["source"]["run"] == str(run) and meta["source"]["stage"] == STAGE
    assert meta["source"]["target"] == "cityscapes" and len(meta["source"]["checkpoint_sha256"]) == 64
    assert meta["model"]["backbone"] == "effnet-lite0-s5"


def test_onnx_matches_torch_on_target_images(trained, tmp_path):
    run, cfg = trained
    out = tmp_path / "seg.onnx"
    r = _export("--run", run, "--format", "onnx", "--out", out)
    assert r.exit_code == 0, r.output
    assert f"using stage '{STAGE}'" in r.output               # the run's final model, as predict picks it
    assert "3 image(s) of cityscapes/val" in r.output and "argmax agreement 100.000 %" in r.output
    assert "warning" not in r.output.lower()                   # the exporters' deprecation notices are silenced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.onnx"]   # nothing else beside it

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "image" and outp.name == "logits"
    assert inp.shape[1] == 3 and all(isinstance(d, str) for d in (inp.shape[0], *inp.shape[2:]))  # dynamic axes
    for size in (SIZE, (40, 24)):  # the training size, and another one through the free axes
        x = _target_batch(cfg, size)
        want = _reference(run, x)
        got = sess.run(["logits"], {"image": x.numpy()})[0]
        assert got.shape == (len(x), 19, size[1], size[0])
        diff, agree = _agreement(want, got)
        assert diff <= E.ATOL + E.RTOL * np.abs(want).max() and agree >= E.MIN_AGREEMENT, (size, diff, agree)
        assert len(np.unique(want.argmax(1))) > 1  # a constant map would make the comparison weak

    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    meta = json.loads(props["phfa"])
    _check_meta(meta, run)
    assert meta["input"]["dynamic"] == ["batch", "height", "width"]
    assert json.loads(sess.get_modelmeta().custom_metadata_map["phfa"]) == meta
    assert E.read_metadata(out) == meta


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_round_trip(trained, tmp_path):
    run, cfg = trained
    out = tmp_path / "seg.ts"
    r = _export("--run", run, "--stage", STAGE, "--format", "torchscript", "--out", out)
    assert r.exit_code == 0, r.output
    assert "using stage" not in r.output and "warning" not in r.output.lower()
    extra = {"phfa.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    _check_meta(json.loads(extra["phfa.json"]), run)
    for size in (SIZE, (48, 40)):
        x = _target_batch(cfg, size)
        want = _reference(run, x)
        with torch.no_grad():
            got = loaded(x).numpy()
        diff, agree = _agreement(want, got)
        assert diff <= 1e-5 and agree == 100.0, (size, diff, agree)


def test_fixed_size_and_a_bare_checkpoint(trained, tmp_path):
    """--size fixes height and width; a checkpoint without a manifest beside it is checked on a
    deterministic random image and records no run."""
    run, _ = trained
    ck = tmp_path / "ck" / "model.pt"
    ck.parent.mkdir()
    shutil.copy(run / STAGE / "final.pt", ck)
    out = tmp_path / "fixed.onnx"
    r = _export("--checkpoint", ck, "--format", "onnx", "--out", out, "--size", "48,32")
    assert r.exit_code == 0, r.output
    assert "1 random image" in r.output and "at 48x32:" in r.output
    inp = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_inputs()[0]
    assert inp.shape[1:] == [3, 32, 48] and isinstance(inp.shape[0], str)
    meta = E.read_metadata(out)
    assert meta["input"]["dynamic"] == ["batch"] and meta["input"]["size"] == list(SIZE)  # size: what it was trained at
    assert meta["source"]["run"] is None and meta["source"]["checkpoint"] == str(ck)


def _one_sentence(r, *words):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [l for l in r.output.strip().splitlines() if not l.startswith("using stage")]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    for w in words:
        assert w in r.output, (w, r.output)


def test_bad_inputs_are_one_sentence(trained, tmp_path):
    run, _ = trained
    out = tmp_path / "m.onnx"
    _one_sentence(_export("--run", run, "--format", "tflite", "--out", out), "--format", "tflite")
    _one_sentence(_export("--run", run, "--format", "onnx", "--out", tmp_path / "m.ts"), "--out", "m.ts", ".onnx")
    _one_sentence(_export("--run", run, "--format", "torchscript", "--out", out), "--out", ".ts")
    _one_sentence(_export("--run", run, "--format", "onnx", "--out", tmp_path / "nowhere" / "m.onnx"),
                  "--out", "nowhere")
    (tmp_path / "d.onnx").mkdir()
    _one_sentence(_export("--run", run, "--format", "onnx", "--out", tmp_path / "d.onnx"), "--out", "folder")
    _one_sentence(_export("--run", run, "--stage", "retrain", "--format", "onnx", "--out", out), "--stage", "retrain")
    _one_sentence(_export("--run", tmp_path / "norun", "--format", "onnx", "--out", out), "--run", "norun")
    _one_sentence(_export("--run", run, "--format", "onnx", "--out", out, "--size", "8,32"), "--size")
    # an unfinished stage
    (run / "adapt").mkdir(exist_ok=True)
    (run / "adapt" / "manifest.json").write_text(json.dumps({"status": "running"}))
    try:
        _one_sentence(_export("--run", run, "--stage", "adapt", "--format", "onnx", "--out", out), "--stage", "adapt")
    finally:
        shutil.rmtree(run / "adapt")
    # an existing file is kept without --overwrite, replaced with it
    out.write_bytes(b"mine")
    _one_sentence(_export("--run", run, "--format", "onnx", "--out", out), "--out", "--overwrite")
    assert out.read_bytes() == b"mine"
    r = _export("--run", run, "--format", "onnx", "--out", out, "--overwrite")
    assert r.exit_code == 0, r.output
    assert E.read_metadata(out)["source"]["stage"] == STAGE
    # the checkpoint itself is never the output
    _one_sentence(_export("--checkpoint", run / STAGE / "final.pt", "--format", "torchscript",
                          "--out", run / STAGE / "final.pt", "--overwrite"), "--out", "checkpoint")
    assert load_segmentor(run / STAGE / "final.pt")[0] is not None


@pytest.mark.parametrize("fmt,name", [("onnx", "m.onnx"), ("torchscript", "m.pt")])
def test_a_failed_check_leaves_no_file(trained, tmp_path, monkeypatch, fmt, name):
    """An export whose logits drift by 0.01 is refused: no file, no temp file, an earlier file kept
    (the same exports pass in the tests above, where the runtime is faithful)."""
    run, _ = trained
    runner_of = {"onnx": "_run_onnx", "torchscript": "_run_torchscript"}[fmt]
    real = getattr(E, runner_of)
    monkeypatch.setattr(E, runner_of, lambda path: (lambda x, f=real(path): f(x) + 0.01))
    out = tmp_path / name
    r = _export("--run", run, "--format", fmt, "--out", out)
    _one_sentence(r, "does not reproduce", "nothing was written", name)
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"earlier")
    _one_sentence(_export("--run", run, "--format", fmt, "--out", out, "--overwrite"), "does not reproduce")
    assert out.read_bytes() == b"earlier" and sorted(p.name for p in tmp_path.iterdir()) == [name]
