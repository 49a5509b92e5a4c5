"""What a new user meets first: commands after a run's first stage find the run's data config."""
from __future__ import annotations

import os

from typer.testing import CliRunner

from phfa_cli.app import app
from tests.conftest import write_tiny_domains
from tests.test_adapt import TINY

runner = CliRunner()


def test_commands_on_a_run_read_its_recorded_data_config(tmp_path, monkeypatch):
    cfg = write_tiny_domains(tmp_path / "data")
    run = tmp_path / "runs/demo"
    r = runner.invoke(app, ["adapt", "--config", str(cfg), "--run", str(run), "--sources", "gta5",
                            "--no-adversarial", "--no-hierarchy", "--iters", "2", *TINY])
    assert r.exit_code == 0, r.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no ./phfa-data.toml here
    r = runner.invoke(app, ["eval", "--run", str(run)])
    assert r.exit_code == 0, r.output
    assert f"data config {cfg} (recorded in {run}" in r.output and "mIoU" in r.output
    r = runner.invoke(app, ["adapt", "--run", str(run), "--sources", "gta5", "--iters", "2", *TINY])
    assert r.exit_code == 0 and "recorded in" in r.output, r.output
    # --config still wins: a config that does not exist is refused, not replaced by the recorded one
    r = runner.invoke(app, ["eval", "--run", str(run), "--config", "nope.toml"])
    assert r.exit_code == 2 and "nope.toml does not exist" in r.output
    # a fresh run with no config anywhere: one sentence saying what to pass
    r = runner.invoke(app, ["adapt", "--run", str(tmp_path / "runs/new"), "--sources", "gta5", *TINY])
    assert r.exit_code == 2 and "--config" in r.output and "Traceback" not in r.output
    assert not os.path.exists(tmp_path / "runs/new")


def test_segmenter_predicts_paths_pil_and_arrays_at_their_own_size(tmp_path):
    import numpy as np
    from PIL import Image

    from pipeline import Segmenter
    from pipeline.errors import PhfaError

    cfg = write_tiny_domains(tmp_path / "data")
    run = tmp_path / "runs/demo"
    r = runner.invoke(app, ["adapt", "--config", str(cfg), "--run", str(run), "--sources", "gta5",
                            "--no-adversarial", "--no-hierarchy", "--iters", "2", *TINY])
    assert r.exit_code == 0, r.output
    seg = Segmenter.from_run(run)
    assert seg.stage == "adapt-noadv-nohier" and seg.size == (64, 32) and len(seg.classes) == 19
    rgb = (np.random.default_rng(0).random((37, 91, 3)) * 255).astype(np.uint8)
    mask = seg.predict(rgb)
    assert mask.shape == (37, 91) and mask.dtype == np.uint8 and mask.max() < 19
    Image.fromarray(rgb).save(tmp_path / "x.png")
    assert np.array_equal(seg.predict(tmp_path / "x.png"), mask)           # a path
    assert np.array_equal(seg.predict(Image.fromarray(rgb)), mask)         # a PIL image
    m2, prob = seg.predict(rgb, probabilities=True)
    assert prob.shape == (19, 37, 91) and np.allclose(prob.sum(0), 1, atol=1e-4)
    assert (m2 == prob.argmax(0)).mean() > 0.99 and (m2 == mask).mean() > 0.99  # banded vs whole argmax
    # the same model through `phfa predict` gives the same labels
    out = tmp_path / "pred"
    assert runner.invoke(app, ["predict", str(tmp_path / "x.png"), "--run", str(run), "--out", str(out)]).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(out / "x.png")), mask)
    for bad, msg in [(rgb.astype(np.float32), "uint8"), (rgb[..., 0], "H x W x 3"), ("nope.png", "does not exist"),
                     ([1, 2, 3], "cannot read an image")]:
        try:
            seg.predict(bad)
        except PhfaError as e:
            assert msg in str(e)
        else:
            raise AssertionError(f"{type(bad)} was accepted")


def test_version_short_help_and_config_show():
    import pipeline
    from pipeline.config import TrainConfig, TranslateConfig, field_docs

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith(f"phfa {pipeline.__version__}")
    for cmd in (["adapt"], ["predict"], ["eval"], ["data", "synth"], ["config", "show"]):
        r = runner.invoke(app, [*cmd, "-h"])
        assert r.exit_code == 0 and "Example" in r.output and "Usage" in r.output, cmd
    # every field of both configs has its comment, and config show prints each with both presets' values
    for cls in (TrainConfig, TranslateConfig):
        docs = field_docs(cls)
        assert set(docs) == set(cls.__dataclass_fields__) and all(docs.values())
    r = runner.invoke(app, ["config", "show"], env={"COLUMNS": "250"})
    assert r.exit_code == 0
    line = next(ln for ln in r.output.splitlines() if " lambda_adv " in ln)
    assert "0.01" in line and "0.001" in line and "adversarial" in line
    assert "lambda_ppl_recon" in r.output and "memory_size_object" in r.output
    r = runner.invoke(app, ["config", "show", "--preset", "nope"])
    assert r.exit_code == 2 and "unknown preset" in r.output


def test_progress_lines_count_images_and_print_clock_times(capsys):
    from pipeline.runtime.progress import Reporter, clock

    assert clock(5) == "0:05" and clock(3725) == "1:02:05" and clock(float("nan")) == "?"
    rep = Reporter()
    rep.phase("eval cityscapes/val", 0, 3, unit="images")
    for i in (1, 2, 3):
        rep.step(i)
    rep.phase("2-gta5", 0, 10)
    rep.log(5, {"seg": 0.5})
    text = capsys.readouterr().err
    assert "images 0..3" in text and "3 images in 0:00" in text and "images/s" in text
    assert "it 5/10" in text and "eta 0:0" in text and "iterations" not in text.split("\n")[0]


def test_short_trunk_loads_imagenet_weights_without_a_warning():
    import warnings

    from pipeline.models.deeplab import build_deeplab

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build_deeplab("effnet-lite0-s5", 19, "imagenet", "trainable")
    assert model.load_report["unexpected"] == [] and model.load_report["omitted"] == 90


# What the README's pipeline block needs to run in seconds: small sets and tiny sizes, appended
# to the commands as written (the block itself is run verbatim otherwise).
TINY_FOR = {
    ("data", "synth"): ["--count", "gta5=12", "--count", "unity=6", "--count", "cityscapes_train=12",
                        "--count", "cityscapes_val=4"],
    ("adapt",): ["--iters", "2", "--set", "source_size=64,32", "--set", "target_size=64,32",
                 "--set", "batch_size=2", "--set", "log_every=1"],
    ("translate",): ["--iters", "2", "--set", "crop=48,28", "--set", "source_size=64,32",
                     "--set", "target_size=64,32", "--set", "log_every=1", "--set", "preview_every=2"],
    ("retrain",): ["--iters", "2"],
}


def readme_pipeline_block() -> list[list[str]]:
    """The commands of the README's pipeline block, split like a shell would (comments dropped)."""
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## The pipeline"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_readme_pipeline_block_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    commands = readme_pipeline_block()
    assert len(commands) >= 10 and all(c[0] == "phfa" for c in commands)
    for argv in commands:
        args = argv[1:]
        extra = TINY_FOR.get(tuple(args[:2]), TINY_FOR.get(tuple(args[:1]), []))
        r = runner.invoke(app, [*args, *extra])
        assert r.exit_code == 0, f"{' '.join(argv)}\n{r.output}"
        assert "Traceback" not in r.output and "does not exist" not in r.output, r.output
    assert (tmp_path / "runs/demo/report/index.html").is_file()
    assert (tmp_path / "pred").is_dir() and (tmp_path / "demo.onnx").is_file()
