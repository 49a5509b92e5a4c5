"""CLI (CliRunner): data synth, data check, eval on toytown; exit codes and one-sentence errors."""
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from phfa_cli.app import app
from pipeline import classes as C
from pipeline.data import pngio

runner = CliRunner()
COUNTS = ["--count", "unity=4", "--count", "gta5=4", "--count", "cityscapes_train=6", "--count", "cityscapes_val=3"]


@pytest.fixture(scope="module")
def town(tmp_path_factory):
    out = tmp_path_factory.mktemp("town") / "t"
    r = runner.invoke(app, ["data", "synth", "--out", str(out), "--seed", "3", *COUNTS])
    assert r.exit_code == 0, r.output
    return out


def test_synth_and_check(town):
    assert (town / "phfa-data.toml").is_file()
    r = runner.invoke(app, ["data", "check", "--config", str(town / "phfa-data.toml"), "unity", "gta5", "cityscapes"])
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1] == "usable" and "not usable" not in r.output
    assert "road" in r.output and "bicycle" in r.output


def test_check_names_unreadable_file_and_exits_2(town, tmp_path):
    import shutil
    t = tmp_path / "t"
    shutil.copytree(town, t)
    victim = sorted((t / "gta5" / "images").glob("*.png"))[1]
    victim.write_bytes(victim.read_bytes()[:100])
    r = runner.invoke(app, ["data", "check", "--config", str(t / "phfa-data.toml"), "gta5"])
    assert r.exit_code == 2 and victim.name in r.output and "Traceback" not in r.output


def test_check_unknown_domain(town):
    r = runner.invoke(app, ["data", "check", "--config", str(town / "phfa-data.toml"), "kitti"])
    assert r.exit_code == 2 and "kitti" in r.output and "Traceback" not in r.output


def test_check_missing_root(tmp_path):
    (tmp_path / "c.toml").write_text('[domains.g]\nformat = "gta5"\nroot = "nowhere"\n')
    r = runner.invoke(app, ["data", "check", "--config", str(tmp_path / "c.toml"), "g"])
    assert r.exit_code == 2 and "nowhere" in r.output


def test_eval_ground_truth_gives_100_and_writes_metrics(town, tmp_path):
    lut = C.lookup_table(C.CITYSCAPES_ID_TO_TRAIN_ID)
    for p in (town / "cityscapes" / "gtFine" / "val").rglob("*_labelIds.png"):
        name = p.name.replace("_gtFine_labelIds.png", "_leftImg8bit.png")
        pngio.write_png(tmp_path / "pred" / name, lut[np.asarray(Image.open(p))])
    r = runner.invoke(app, ["eval", "--config", str(town / "phfa-data.toml"), "--pred-dir", str(tmp_path / "pred"),
                            "--out", str(tmp_path / "o"), "--save-color"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["miou"] == pytest.approx(100.0) and m["classes"] == 19 and set(m) >= {"miou", "iou", "pixel_acc"}
    assert "100.00" in r.output
    assert len(list((tmp_path / "o" / "color").glob("*.png"))) == 3
    r = runner.invoke(app, ["eval", "--config", str(town / "phfa-data.toml"), "--pred-dir", str(tmp_path / "pred"),
                            "--classes", "13", "--out", str(tmp_path / "o13")])
    assert r.exit_code == 0 and json.loads((tmp_path / "o13" / "metrics.json").read_text())["classes"] == 13


def test_eval_errors(town, tmp_path):
    r = runner.invoke(app, ["eval", "--config", str(town / "phfa-data.toml"), "--pred-dir", str(tmp_path / "none")])
    assert r.exit_code == 2 and "--pred-dir" in r.output
    r = runner.invoke(app, ["eval", "--config", str(tmp_path / "missing.toml"), "--pred-dir", str(tmp_path)])
    assert r.exit_code == 2 and "missing.toml" in r.output
    r = runner.invoke(app, ["eval", "--config", str(town / "phfa-data.toml"), "--run", str(tmp_path / "r"),
                            "--stage", "adapt"])
    assert r.exit_code == 2 and "adapt" in r.output


def test_debug_shows_traceback(tmp_path):
    r = runner.invoke(app, ["--debug", "data", "check", "--config", str(tmp_path / "x.toml"), "g"])
    assert r.exit_code == 2 and "Traceback" in r.output
