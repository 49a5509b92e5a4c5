"""`phfa adapt` end to end on tiny data through CliRunner; resume; bad inputs."""
import json

import pytest
import torch
from typer.testing import CliRunner

from phfa_cli.app import app
from pipeline.models.segmentor import load_segmentor
from pipeline.runtime import checkpoint

runner = CliRunner()
# the toy preset at tiny sizes, as it is (warm-started from the run's source-only stage) and cold
TINY_WARM = ["--preset", "toy", "--set", "source_size=64,32", "--set", "target_size=64,32", "--set", "batch_size=2",
             "--set", "log_every=1"]
TINY = [*TINY_WARM, "--set", "init_stage="]


@pytest.fixture
def tiny(tmp_path):
    from tests.conftest import write_tiny_domains
    cfg = write_tiny_domains(tmp_path)
    return tmp_path, cfg


def adapt(cfg, run, *extra):
    return runner.invoke(app, ["adapt", "--config", str(cfg), "--run", str(run), *TINY, *extra])


def test_progressive_adapt_writes_stage(tiny):
    root, cfg = tiny
    r = adapt(cfg, root / "runs/a", "--sources", "unity,gta5", "--iters", "2")
    assert r.exit_code == 0, r.output
    man = json.loads((root / "runs/a/adapt/manifest.json").read_text())
    assert man["status"] == "finished"
    assert [p["name"] for p in man["phases"]] == ["1-unity", "2-gta5"]
    assert man["phases"][0]["align"] == [] and man["phases"][1]["align"] == ["object", "category", "background"]
    # the toy preset's aux_share 0.5: the unity phase runs half the iterations, gta5 all of them
    assert [p["iters"] for p in man["phases_done"]] == [1, 2]
    assert "target_val_miou" in man["metrics"]
    ck = torch.load(root / "runs/a/adapt/final.pt", weights_only=True)
    assert ck["arch"]["backbone"] == "effnet-lite0-s5"  # the toy preset's
    lines = (root / "runs/a/adapt/metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "obj" in json.loads(lines[-1])
    assert len((root / "runs/a/fewshot-cityscapes.txt").read_text().split("\n")) >= 4
    # eval --run on that stage
    r = runner.invoke(app, ["eval", "--config", str(cfg), "--run", str(root / "runs/a"), "--stage", "adapt",
                            "--out", str(root / "ev")])
    assert r.exit_code == 0, r.output
    assert json.loads((root / "ev/metrics.json").read_text())["miou"] == pytest.approx(man["metrics"]["target_val_miou"])
    # re-run refused, nothing changed
    before = (root / "runs/a/adapt/final.pt").read_bytes()
    r = adapt(cfg, root / "runs/a", "--sources", "unity,gta5", "--iters", "2")
    assert r.exit_code == 2 and "--force" in r.output
    assert (root / "runs/a/adapt/final.pt").read_bytes() == before


def test_ablations_live_side_by_side(tiny):
    root, cfg = tiny
    assert adapt(cfg, root / "r", "--sources", "gta5", "--no-adversarial", "--no-hierarchy", "--iters", "1").exit_code == 0
    assert adapt(cfg, root / "r", "--sources", "gta5", "--no-hierarchy", "--iters", "1").exit_code == 0
    assert adapt(cfg, root / "r", "--sources", "gta5", "--align", "category", "--iters", "1").exit_code == 0
    assert {p.name for p in (root / "r").iterdir() if p.is_dir()} == {"adapt-noadv-nohier", "adapt-nohier",
                                                                      "adapt-align-category"}
    man = json.loads((root / "r/adapt-noadv-nohier/manifest.json").read_text())
    assert man["inputs"]["target_images"] == 0  # source-only never reads the target


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_resume_after_ctrl_c_mid_step_equals_straight_run(tiny, monkeypatch):
    """Ctrl-C arrives inside an iteration, after the memory update and the BN statistics moved:
    the iteration completes, last.pt holds the state after it, and --resume equals never stopping."""
    import os
    import signal
    root, cfg = tiny
    args = ["--sources", "unity,gta5", "--iters", "3"]
    assert adapt(cfg, root / "straight", *args).exit_code == 0
    from pipeline.losses import alignment as al
    real, calls = al.update_memory_objects, {"n": 0}

    def sigint_inside(*a, **k):
        out = real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 2:  # phase 2, iteration 2, in the middle of the step
            os.kill(os.getpid(), signal.SIGINT)
        return out
    monkeypatch.setattr(al, "update_memory_objects", sigint_inside)
    r = adapt(cfg, root / "resumed", *args)
    assert r.exit_code == 130 and "--resume" in r.output, r.output
    man = json.loads((root / "resumed/adapt/manifest.json").read_text())
    assert man["status"] == "interrupted" and man["interrupted_at"] == {"phase": "2-gta5", "iter": 2}
    monkeypatch.setattr(al, "update_memory_objects", real)
    r = adapt(cfg, root / "resumed", *args, "--resume")
    assert r.exit_code == 0, r.output
    a, b = _weights(root / "straight/adapt/final.pt"), _weights(root / "resumed/adapt/final.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la = torch.load(root / "straight/adapt/last.pt", weights_only=True)
    lb = torch.load(root / "resumed/adapt/last.pt", weights_only=True)
    def timeless(history):  # each phase's record but its wall time
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]
    assert timeless(la["history"]) == timeless(lb["history"])
    assert len(lb["history"]) == 2
    rows_a = [json.loads(x) for x in (root / "straight/adapt/metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (root / "resumed/adapt/metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["iter"]) for r in rows_a] == [(r["phase"], r["iter"]) for r in rows_b]
    assert json.loads((root / "resumed/adapt/manifest.json").read_text())["status"] == "finished"


def _record_steps(monkeypatch, on_step=None):
    """Wrap the training step: the model's state after every iteration (and an optional action)."""
    from pipeline import train
    real, states = train.train_step, []

    def recorded(cfg, net, *a, **k):
        out = real(cfg, net, *a, **k)
        states.append({n: v.detach().clone() for n, v in net.state_dict().items()})
        if on_step is not None:
            on_step(len(states))
        return out
    monkeypatch.setattr(train, "train_step", recorded)
    return states


def test_weight_average_is_the_mean_of_the_last_iterations(tiny, monkeypatch):
    root, cfg = tiny
    states = _record_steps(monkeypatch)
    args = ["--sources", "gta5", "--no-adversarial", "--no-hierarchy", "--iters", "4"]
    assert adapt(cfg, root / "avg", *args, "--set", "weight_average=0.5").exit_code == 0
    assert len(states) == 4
    final = _weights(root / "avg/adapt-noadv-nohier/final.pt")
    moved = 0
    for k, v in final.items():
        if v.is_floating_point():  # the equal average of the weights after iterations 3 and 4
            assert torch.allclose(v, (states[2][k] + states[3][k]) / 2, atol=1e-6), k
            moved += not torch.allclose(v, states[3][k], atol=1e-6)
        else:  # BN batch counters stay the model's own
            assert torch.equal(v, states[3][k]), k
    assert moved  # the average is not the last weights
    states.clear()
    assert adapt(cfg, root / "last", *args).exit_code == 0  # off (the default): the last weights
    for k, v in _weights(root / "last/adapt-noadv-nohier/final.pt").items():
        assert torch.equal(v, states[3][k]), k


def test_resume_inside_the_averaged_iterations_equals_straight_run(tiny, monkeypatch):
    import os
    import signal
    root, cfg = tiny
    args = ["--sources", "gta5", "--no-adversarial", "--no-hierarchy", "--iters", "5", "--set", "weight_average=0.6"]
    assert adapt(cfg, root / "straight", *args).exit_code == 0
    _record_steps(monkeypatch, on_step=lambda n: n == 4 and os.kill(os.getpid(), signal.SIGINT))
    r = adapt(cfg, root / "resumed", *args)  # stops after iteration 4: two of the three averaged
    assert r.exit_code == 130, r.output
    assert torch.load(root / "resumed/adapt-noadv-nohier/last.pt", weights_only=True)["average"] is not None
    monkeypatch.undo()
    assert adapt(cfg, root / "resumed", *args, "--resume").exit_code == 0
    a = _weights(root / "straight/adapt-noadv-nohier/final.pt")
    b = _weights(root / "resumed/adapt-noadv-nohier/final.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    r = adapt(cfg, root / "bad", *args[:-1], "weight_average=1")
    assert r.exit_code == 2 and "weight_average" in r.output and "Traceback" not in r.output


def test_bad_inputs(tiny):
    root, cfg = tiny
    r = adapt(cfg, root / "b", "--sources", "nosuch,gta5")
    assert r.exit_code == 2 and "nosuch" in r.output and "Traceback" not in r.output
    (root / "empty/leftImg8bit/train").mkdir(parents=True)
    bad = root / "bad.toml"
    bad.write_text(cfg.read_text().replace('root = "cityscapes"', 'root = "empty"'))
    r = adapt(bad, root / "b2", "--sources", "gta5", "--iters", "1")
    assert r.exit_code == 2 and "no images" in r.output
    r = adapt(cfg, root / "b3", "--sources", "gta5", "--set", "nosuch=1")
    assert r.exit_code == 2 and "nosuch" in r.output
    r = adapt(cfg, root / "b3", "--sources", "gta5", "--resume")
    assert r.exit_code == 2 and "nothing to resume" in r.output


def test_checkpoint_errors(tmp_path):
    from pipeline.errors import PhfaError
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PhfaError, match="not a phfa checkpoint"):
        checkpoint.load(tmp_path / "junk.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(PhfaError, match="not a phfa checkpoint"):
        checkpoint.load(tmp_path / "plain.pt")
    from pipeline.models.deeplab import build_deeplab
    m = build_deeplab("resnet18", 19, "none")
    checkpoint.save(tmp_path / "r18.pt", {"kind": "segmentor", "arch": {"backbone": "resnet18", "num_classes": 19},
                                          "model": m.state_dict()})
    with pytest.raises(PhfaError, match="resnet18 model"):
        load_segmentor(tmp_path / "r18.pt", expect_backbone="resnet50")
    checkpoint.save(tmp_path / "c16.pt", {"kind": "segmentor", "arch": {"backbone": "resnet18", "num_classes": 16},
                                          "model": m.state_dict()})
    with pytest.raises(PhfaError, match="16 classes"):
        load_segmentor(tmp_path / "c16.pt", expect_classes=19)


def test_nan_loss_names_iteration(tiny):
    root, cfg = tiny
    r = adapt(cfg, root / "n", "--sources", "gta5", "--no-adversarial", "--no-hierarchy", "--iters", "3",
              "--set", "lr=1e30")
    assert r.exit_code == 2 and "iteration" in r.output and "last good checkpoint" in r.output, r.output


def test_toy_preset_warm_starts_aligning_stages_from_source_only(tiny):
    """The toy preset's init_stage: an aligning stage (and its retraining) starts from the run's
    source-only final.pt for init_iters; without that stage it is refused before anything is written;
    --pretrained and --iters on the command line win over the preset."""
    from pipeline.models.deeplab import build_deeplab
    from pipeline.stages.runner import state_digest

    root, cfg = tiny
    run = root / "r"
    warm = TINY_WARM  # the toy preset as it is: init_stage=source-only

    def go(*extra):
        return runner.invoke(app, ["adapt", "--config", str(cfg), "--run", str(run), *warm, *extra])

    # 1. no source-only stage yet: one sentence naming the setting and the command, nothing written
    r = go("--sources", "unity,gta5", "--set", "init_iters=2")
    assert r.exit_code == 2 and "init_stage source-only" in r.output and "--no-adversarial" in r.output
    assert "Traceback" not in r.output and not (run / "adapt").exists()
    # 2. the source-only row itself starts from --pretrained (the toy's packaged ImageNet weights) with the
    #    calibrated iters; under a folder name of the user's choosing, found by its role
    assert go("--sources", "gta5", "--no-adversarial", "--no-hierarchy", "--tag", "warm", "--set", "iters=3").exit_code == 0
    so = json.loads((run / "adapt-warm/manifest.json").read_text())
    assert so["inputs"]["pretrained"] == "imagenet" and [p["iters"] for p in so["phases_done"]] == [3]
    # 3. the progressive stage starts from the source-only weights and runs init_iters (aux phase: half)
    r = go("--sources", "unity,gta5", "--set", "iters=3", "--set", "init_iters=2")
    assert r.exit_code == 0, r.output
    man = json.loads((run / "adapt/manifest.json").read_text())
    assert man["inputs"]["pretrained"] == str(run / "adapt-warm/final.pt")
    assert [p["iters"] for p in man["phases_done"]] == [1, 2]
    ck = torch.load(run / "adapt-warm/final.pt", weights_only=True)
    assert ck["arch"]["backbone"] == "effnet-lite0-s5"   # the toy preset's
    model = build_deeplab(ck["arch"]["backbone"], 19)
    model.load_state_dict(ck["model"])
    assert man["inputs"]["init_weights_sha256"] == state_digest(model)
    # 4. its retraining starts from those same weights again (Eq. 11: the adapt stage's initial weights)
    assert runner.invoke(app, ["pseudolabel", "--config", str(cfg), "--run", str(run)]).exit_code == 0
    r = runner.invoke(app, ["retrain", "--config", str(cfg), "--run", str(run)])
    assert r.exit_code == 0, r.output
    re = json.loads((run / "retrain/manifest.json").read_text())
    assert re["inputs"]["init_weights_sha256"] == man["inputs"]["init_weights_sha256"]
    assert [p["iters"] for p in re["phases_done"]] == [1, 2]
    # 5. --pretrained none starts from scratch; --iters is what the stage runs, warm-started or not
    r = go("--sources", "gta5", "--no-hierarchy", "--pretrained", "none", "--iters", "1")
    assert r.exit_code == 0, r.output
    man = json.loads((run / "adapt-nohier/manifest.json").read_text())
    assert man["inputs"]["pretrained"] == "none" and man["config"]["init_stage"] == ""
    r = go("--sources", "gta5", "--align", "category", "--iters", "1")
    assert r.exit_code == 0, r.output
    man = json.loads((run / "adapt-align-category/manifest.json").read_text())
    assert man["inputs"]["pretrained"].endswith("final.pt") and [p["iters"] for p in man["phases_done"]] == [1]


def test_aligning_stage_records_which_classes_took_part(tmp_path, tiny_data):
    """manifest.json says which thing and stuff classes contributed to Eq. 1 / Eq. 6 (the gate opens
    at once here: one-sample memories)."""
    import json

    cfg, _ = tiny_data
    r = runner.invoke(app, ["adapt", "--config", str(cfg), "--run", str(tmp_path / "r"), "--sources", "gta5",
                            "--preset", "toy", "--iters", "3", "--set", "init_stage=", "--set", "pretrained=none",
                            "--set", "backbone=resnet18", "--set", "source_size=64x32", "--set", "target_size=64x32",
                            "--set", "batch_size=2", "--set", "memory_size=1", "--set", "memory_size_object=1",
                            "--set", "memory_classifier_check=false", "--set", "object_top_k=0"])
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "r" / "adapt" / "manifest.json").read_text())
    part = man["participation"]
    assert set(part) == {"object", "background"} and part["object"] and part["background"]
    from pipeline import classes as C
    assert set(part["object"]) <= {C.CLASS_NAMES[c] for c in C.THING_CLASSES}
    assert set(part["background"]) <= {C.CLASS_NAMES[c] for c in C.STUFF_CLASSES}
    assert man["phases_done"][-1]["participation"] == part


def test_paper_preset_from_random_init_trains_bn_as_the_references(tmp_path, tiny_data):
    """--preset paper --pretrained none (bn=reference): no NaN, running statistics move, affine frozen."""
    cfg, _ = tiny_data
    args = ["adapt", "--config", str(cfg), "--sources", "gta5", "--preset", "paper", "--pretrained", "none",
            "--iters", "2", "--no-hierarchy", "--set", "backbone=resnet18", "--set", "source_size=64x32",
            "--set", "target_size=64x32", "--set", "workers=0"]
    r = runner.invoke(app, [*args, "--run", str(tmp_path / "ref")])
    assert r.exit_code == 0, r.output
    model, ck = load_segmentor(tmp_path / "ref" / "adapt-nohier" / "final.pt")
    assert ck["arch"]["bn"] == "reference" and ck["config"]["bn"] == "reference"
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.running_mean.abs().max() > 0 for m in bns)                    # from zeros at init
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in bns)


def test_nonfinite_advice_names_the_likely_cause():
    from pipeline.config import preset
    from pipeline.train import nonfinite_advice

    paper = preset("paper")
    assert "BatchNorm is frozen" in nonfinite_advice(paper.overrides(["bn=frozen", "pretrained=none"]), 0, {"seg": 1})
    assert "initial weights" in nonfinite_advice(paper, 0, {"seg": float("nan")})
    assert "lambda_obj" in nonfinite_advice(paper, 500, {"obj": float("nan")})
    assert "learning rate (now 0.0001)" in nonfinite_advice(paper, 500, {"seg": float("nan")})
