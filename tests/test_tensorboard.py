"""TensorBoard event files of every training stage, resume-safe; periodic validation (val_every) with
best.pt, which never changes training. Tiny runs through CliRunner, as tests/test_adapt.py."""
import json
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from phfa_cli.app import app
from pipeline import train, validation
from pipeline.models.segmentor import load_segmentor
from pipeline.runtime import layout

runner = CliRunner()
TINY = ["--preset", "toy", "--set", "source_size=64,32", "--set", "target_size=64,32", "--set", "batch_size=2",
        "--set", "log_every=1", "--set", "init_stage="]
# unity (2 iterations: aux_share 0.5) then gta5 (4): stage steps 1..6, phase 2 starts at step 3
ADAPT = ["--sources", "unity,gta5", "--iters", "4", "--set", "ckpt_every=4"]
LOSSES = {"train/seg", "train/adv", "train/d", "train/total", "train/lr"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.conftest import write_tiny_domains
    root = tmp_path_factory.mktemp("tb")
    return root, write_tiny_domains(root)


@pytest.fixture(scope="module")
def plain(tiny):
    """The stage trained straight through, without validation."""
    root, cfg = tiny
    r = adapt(cfg, root / "plain")
    assert r.exit_code == 0, r.output
    return root / "plain/adapt"


def adapt(cfg, run, *extra):
    return runner.invoke(app, ["adapt", "--config", str(cfg), "--run", str(run), *TINY, *ADAPT, *extra])


def board(folder):
    """What TensorBoard shows of a stage folder: {tag: [(step, value), ...]} and {image tag: [steps]}."""
    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    tags = ea.Tags()
    return ({t: [(e.step, e.value) for e in ea.Scalars(t)] for t in tags["scalars"]},
            {t: [e.step for e in ea.Images(t)] for t in tags["images"]})


def rows(folder):
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()]


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def same(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def test_adapt_writes_the_metric_lines_as_scalars_at_the_stage_step(plain):
    stage = plain
    assert len(list(stage.glob(layout.EVENTS))) == 1
    scalars, images = board(stage)
    lines = rows(stage)
    assert set(scalars) == {f"train/{k}" for x in lines for k in x if k not in ("phase", "iter")}
    assert LOSSES | {"train/class", "train/obj", "train/back"} <= set(scalars)
    assert not images  # val_every 0: no validation
    # the stage step: iterations across phases, monotone; each metric line once, its values
    offsets = {"1-unity": 0, "2-gta5": 2}
    assert [offsets[x["phase"]] + x["iter"] for x in lines] == [1, 2, 3, 4, 5, 6]
    for key in ("seg", "total", "lr", "adv"):
        want = [(offsets[x["phase"]] + x["iter"], x[key]) for x in lines]
        got = scalars[f"train/{key}"]
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)
    assert [s for s, _ in scalars["train/obj"]] == [3, 4, 5, 6]  # the hierarchy joins in phase 2


def dies_at(monkeypatch, n):
    """The n-th training step of the next run raises, as if the process were killed there."""
    real, calls = train.train_step, {"n": 0}

    def dies(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise RuntimeError("killed")
        return real(*a, **k)
    monkeypatch.setattr(train, "train_step", dies)
    return real


def test_a_crashed_stage_resumed_shows_every_step_once_and_force_starts_clean(tiny, plain, monkeypatch):
    """The attempt dies after logging steps 3-5 past its last snapshot (step 2, end of phase 1), as
    kill -9 would leave it; --resume purges them, and the curves equal a straight run's."""
    root, cfg = tiny
    real = dies_at(monkeypatch, 6)
    r = adapt(cfg, root / "resumed")
    assert r.exit_code != 0 and isinstance(r.exception, RuntimeError)
    stage = root / "resumed/adapt"
    assert torch.load(stage / "last.pt", weights_only=True)["phase"] == 1  # phase 1 done: step 2
    assert [s for s, _ in board(stage)[0]["train/seg"]] == [1, 2, 3, 4, 5]
    monkeypatch.setattr(train, "train_step", real)
    time.sleep(1.1)  # event files are ordered by their names, whose time has whole seconds
    r = adapt(cfg, root / "resumed", "--resume")
    assert r.exit_code == 0, r.output
    assert len(list(stage.glob(layout.EVENTS))) == 2
    got, want = board(stage)[0], board(plain)[0]
    assert set(got) == set(want)
    for tag in want:
        assert [s for s, _ in got[tag]] == [s for s, _ in want[tag]], tag  # no step twice, none going back
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in want[tag]], rel=1e-6), tag
    same(plain / "final.pt", stage / "final.pt")
    # --force: the finished stage, its event files included, is replaced by a clean one
    r = adapt(cfg, root / "resumed", "--force", "--iters", "2")
    assert r.exit_code == 0, r.output
    assert len(list(stage.glob(layout.EVENTS))) == 1
    assert [s for s, _ in board(stage)[0]["train/seg"]] == [1, 2, 3]


def fixed_scores(monkeypatch, scores):
    """Validation's mIoU by stage step, so that which one is best is known in advance."""
    at = {}
    real = validation.Validator.validate

    def validate(self, step, phase, it):
        at["step"] = step
        return real(self, step, phase, it)

    class Metrics:
        @staticmethod
        def summarize(conf, classes):
            return {"miou": scores[at["step"]]}
    monkeypatch.setattr(validation.Validator, "validate", validate)
    monkeypatch.setattr(validation, "M", Metrics)


def test_periodic_validation_keeps_best_pt_and_never_changes_training(tiny, plain, monkeypatch):
    root, cfg = tiny
    fixed_scores(monkeypatch, {2: 30.0, 4: 20.0, 6: 25.0})
    real, states = train.train_step, []

    def recorded(cfg, net, *a, **k):  # the weights after every step
        out = real(cfg, net, *a, **k)
        states.append({n: v.detach().clone() for n, v in net.state_dict().items()})
        return out
    monkeypatch.setattr(train, "train_step", recorded)
    r = adapt(cfg, root / "val", "--set", "val_every=2")
    assert r.exit_code == 0, r.output
    monkeypatch.setattr(train, "train_step", real)
    stage = root / "val/adapt"
    same(plain / "final.pt", stage / "final.pt")  # validation does not perturb training
    man = json.loads((stage / "manifest.json").read_text())
    assert man["best"] == {"iter": 2, "miou": 30.0, "phase": "1-unity"}
    assert man["outputs"]["best"] == str(stage / "best.pt")
    assert [(x["phase"], x["iter"], x["val"]["step"], x["val"]["miou"]) for x in rows(stage) if "val" in x] == \
        [("1-unity", 2, 2, 30.0), ("2-gta5", 2, 4, 20.0), ("2-gta5", 4, 6, 25.0)]
    scalars, images = board(stage)
    assert scalars["val/mIoU"] == [(2, 30.0), (4, 20.0), (6, 25.0)]
    assert len(images) == validation.SHOWN and all(steps == [2, 4, 6] for steps in images.values())
    # best.pt: final.pt's format holding the weights after step 2, loadable wherever final.pt is
    _, ck = load_segmentor(stage / "best.pt")
    assert ck["kind"] == "segmentor" and ck["best"] == man["best"] and ck["target"] == "cityscapes"
    assert ck["model"].keys() == states[1].keys()
    assert all(torch.equal(ck["model"][k], states[1][k]) for k in states[1])
    assert not all(torch.equal(ck["model"][k], states[-1][k]) for k in states[-1])
    img = root / "cityscapes/leftImg8bit/val/beta/beta_000000_000019_leftImg8bit.png"
    r = runner.invoke(app, ["predict", "--checkpoint", str(stage / "best.pt"), str(img), "--out", str(root / "pred")])
    assert r.exit_code == 0, r.output
    # a crash after step 4's validation, past the last snapshot (step 2): the resumed stage keeps step 2
    # as its best (from last.pt), though it validates only steps 4 and 6 again
    dies_at(monkeypatch, 6)
    assert adapt(cfg, root / "val-resumed", "--set", "val_every=2").exit_code != 0
    assert torch.load(root / "val-resumed/adapt/last.pt", weights_only=True)["best"] == man["best"]
    monkeypatch.setattr(train, "train_step", real)
    time.sleep(1.1)  # event files are ordered by their names, whose time has whole seconds
    r = adapt(cfg, root / "val-resumed", "--resume")
    assert r.exit_code == 0, r.output
    again = json.loads((root / "val-resumed/adapt/manifest.json").read_text())
    assert again["best"] == man["best"]
    same(stage / "best.pt", root / "val-resumed/adapt/best.pt")
    same(plain / "final.pt", root / "val-resumed/adapt/final.pt")
    assert [x for x in rows(root / "val-resumed/adapt") if "val" in x] == [x for x in rows(stage) if "val" in x]
    assert board(root / "val-resumed/adapt")[0]["val/mIoU"] == scalars["val/mIoU"]


def test_translate_writes_event_files(tiny):
    root, cfg = tiny
    r = runner.invoke(app, ["translate", "--config", str(cfg), "--run", str(root / "r"), "--source", "gta5",
                            "--preset", "toy", "--iters", "2", "--set", "crop=32x32", "--set", "source_size=64x32",
                            "--set", "target_size=64x32", "--set", "log_every=1", "--set", "batch_size=2"])
    assert r.exit_code == 0, r.output
    scalars, _ = board(root / "r/translate-gta5")
    keys = {k for x in rows(root / "r/translate-gta5") for k in x if k != "iter"}
    assert keys and {f"train/{k}" for k in keys} == set(scalars)
    assert all([s for s, _ in v] == [1, 2] for v in scalars.values())
