"""The fault matrix: kill -9 and Ctrl-C at any point, then --resume, equals never stopping;
--force and stage names never lose or touch anything they should not; a full disk is a sentence.

Interruptions use real processes (`python -m phfa_cli`) and real signals; the runs are tiny."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from phfa_cli.app import app

pytestmark = pytest.mark.slow
runner = CliRunner()
TINY = ["--preset", "toy", "--set", "source_size=64,32", "--set", "target_size=64,32", "--set", "batch_size=2",
        "--set", "log_every=1", "--set", "ckpt_every=2", "--set", "init_stage="]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.conftest import write_tiny_domains
    root = tmp_path_factory.mktemp("faults")
    cfg = write_tiny_domains(root)
    return root, cfg


# aux_share=1: both progressive phases run all 5 iterations, so a signal can land at any of them
ADAPT = ["adapt", "--sources", "unity,gta5", "--iters", "5", "--set", "aux_share=1", *TINY]
TRANSLATE = ["translate", "--source", "gta5", "--preset", "toy", "--iters", "6", "--set", "crop=32x32",
             "--set", "source_size=64x32", "--set", "target_size=64x32", "--set", "log_every=1",
             "--set", "ckpt_every=2", "--set", "batch_size=2"]


def cli(*args):
    return [sys.executable, "-m", "phfa_cli", *map(str, args)]


def env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))


def straight(tiny, name, args):
    root, cfg = tiny
    run = root / name
    r = subprocess.run(cli(*args, "--config", cfg, "--run", run), env=env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return run


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def interrupt_at(tiny, name, args, metrics, when, sig):
    """Start the command, send `sig` once `when(rows of metrics.jsonl)` holds; return the run folder."""
    root, cfg = tiny
    run = root / name
    p = subprocess.Popen(cli(*args, "--config", cfg, "--run", run), env=env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    path = run / metrics
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 300:
        if path.is_file():
            try:
                if when(rows(path)):
                    p.send_signal(sig)
                    break
            except json.JSONDecodeError:
                pass
        time.sleep(0.02)
    out, _ = p.communicate(timeout=300)
    return run, p.returncode, out


def same_weights(a: Path, b: Path, key="model"):
    wa, wb = torch.load(a, weights_only=True)[key], torch.load(b, weights_only=True)[key]
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def resume(tiny, run, args):
    _, cfg = tiny
    r = subprocess.run(cli(*args, "--config", cfg, "--run", run, "--resume"), env=env(), capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def adapt_straight(tiny):
    return straight(tiny, "straight", ADAPT)


@pytest.mark.parametrize("phase,it,sig", [("1-unity", 3, signal.SIGKILL), ("2-gta5", 1, signal.SIGKILL),
                                          ("2-gta5", 4, signal.SIGKILL), ("1-unity", 2, signal.SIGINT),
                                          ("2-gta5", 3, signal.SIGINT)])
def test_adapt_interrupted_then_resumed_equals_straight(tiny, adapt_straight, phase, it, sig):
    name = f"adapt-{phase}-{it}-{int(sig)}"
    run, rc, out = interrupt_at(tiny, name, ADAPT, "adapt/metrics.jsonl",
                                lambda rs: any(r["phase"] == phase and r["iter"] >= it for r in rs), sig)
    if sig == signal.SIGINT:
        assert rc == 130 and "--resume" in out, out[-2000:]
        assert json.loads((run / "adapt/manifest.json").read_text())["status"] == "interrupted"
    else:
        assert rc == -signal.SIGKILL
    resume(tiny, run, ADAPT)
    same_weights(adapt_straight / "adapt/final.pt", run / "adapt/final.pt")
    man = json.loads((run / "adapt/manifest.json").read_text())
    assert man["status"] == "finished" and [p["name"] for p in man["phases_done"]] == ["1-unity", "2-gta5"]
    got = [(r["phase"], r["iter"]) for r in rows(run / "adapt/metrics.jsonl")]
    assert got == [(r["phase"], r["iter"]) for r in rows(adapt_straight / "adapt/metrics.jsonl")]


def test_ctrl_c_during_evaluation_then_resume(tiny, monkeypatch):
    root, cfg = tiny
    ref = root / "eval-ref"  # in-process like the run below (thread counts change float sums)
    assert runner.invoke(app, [*ADAPT, "--config", str(cfg), "--run", str(ref)]).exit_code == 0
    from pipeline import inference
    real = inference.evaluate

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(inference, "evaluate", interrupted)
    run = root / "eval-int"
    r = runner.invoke(app, [*ADAPT, "--config", str(cfg), "--run", str(run)])
    assert r.exit_code == 130 and "--resume" in r.output, r.output
    man = json.loads((run / "adapt/manifest.json").read_text())
    assert man["status"] == "interrupted" and man["interrupted_at"]["phase"] == "evaluation"
    monkeypatch.setattr(inference, "evaluate", real)
    r = runner.invoke(app, [*ADAPT, "--config", str(cfg), "--run", str(run), "--resume"])
    assert r.exit_code == 0, r.output
    man = json.loads((run / "adapt/manifest.json").read_text())
    assert man["status"] == "finished" and len(man["phases_done"]) == 2 and "target_val_miou" in man["metrics"]
    same_weights(ref / "adapt/final.pt", run / "adapt/final.pt")


@pytest.fixture(scope="module")
def translate_straight(tiny):
    return straight(tiny, "tr-straight", TRANSLATE)


@pytest.mark.parametrize("it,sig", [(3, signal.SIGKILL), (4, signal.SIGINT)])
def test_translate_interrupted_then_resumed_equals_straight(tiny, translate_straight, it, sig):
    ref = translate_straight
    run, rc, out = interrupt_at(tiny, f"tr-{it}-{int(sig)}", TRANSLATE, "translate-gta5/metrics.jsonl",
                                lambda rs: any(r["iter"] >= it for r in rs), sig)
    assert rc in (130, -signal.SIGKILL), out[-2000:]
    resume(tiny, run, TRANSLATE)
    same_weights(ref / "translate-gta5/cyclegan.pt", run / "translate-gta5/cyclegan.pt")
    imgs = sorted(p.name for p in (run / "translate-gta5/domain/images").iterdir())
    assert imgs == sorted(p.name for p in (ref / "translate-gta5/domain/images").iterdir())
    for name in imgs:
        assert (run / "translate-gta5/domain/images" / name).read_bytes() == \
            (ref / "translate-gta5/domain/images" / name).read_bytes()


def test_resume_with_other_settings_says_what_it_keeps(tiny, monkeypatch):
    root, cfg = tiny
    run = root / "keep"
    from pipeline.losses import alignment as al
    real, calls = al.update_memory_objects, {"n": 0}

    def sigint(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)
    monkeypatch.setattr(al, "update_memory_objects", sigint)
    r = runner.invoke(app, [*ADAPT, "--config", str(cfg), "--run", str(run)])
    assert r.exit_code == 130
    monkeypatch.setattr(al, "update_memory_objects", real)
    r = runner.invoke(app, [*ADAPT, "--config", str(cfg), "--run", str(run), "--resume", "--iters", "7", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert "keeps the interrupted run's settings" in r.output and "iters=5" in r.output and "seed=0" in r.output


def snapshot_tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_force_with_bad_input_keeps_the_finished_stage(tiny, adapt_straight):
    root, cfg = tiny
    before = snapshot_tree(adapt_straight / "adapt")
    bad = root / "bad.toml"
    bad.write_text(cfg.read_text().replace('root = "gta5"', 'root = "nowhere"'))
    r = runner.invoke(app, [*ADAPT, "--config", str(bad), "--run", str(adapt_straight), "--force"])
    assert r.exit_code == 2 and "nowhere" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert snapshot_tree(adapt_straight / "adapt") == before


def test_force_whose_new_attempt_fails_restores_the_old_stage(tiny, adapt_straight, tmp_path):
    import shutil
    root, cfg = tiny
    run = tmp_path / "r"
    shutil.copytree(adapt_straight, run)
    before = snapshot_tree(run / "adapt")
    r = runner.invoke(app, [*ADAPT, "--config", str(cfg), "--run", str(run), "--force", "--set", "lr=1e30"])
    assert r.exit_code == 2 and "non-finite" in r.output, r.output
    assert snapshot_tree(run / "adapt") == before
    assert not (run / ".adapt.replaced").exists()


def test_stage_names_cannot_escape_the_run(tiny, tmp_path):
    root, cfg = tiny
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    run = tmp_path / "a" / "b" / "run"
    for args in (["--tag", "../../../victim"], ["--tag", "x/y"], ["--tag", ".."]):
        r = runner.invoke(app, [*ADAPT, "--config", str(cfg), "--run", str(run), "--force", *args])
        assert r.exit_code == 2 and "plain name" in r.output, r.output
    assert (victim / "precious.txt").read_text() == "keep me" and not run.exists()


def test_error_text_is_not_read_as_markup(tiny, tmp_path):
    _, cfg = tiny
    weird = tmp_path / "[old]" / "x[/y]"
    r = runner.invoke(app, ["data", "check", "--config", str(weird / "d.toml"), "gta5"])
    assert r.exit_code == 2 and "[old]" in r.output and "x[/y]" in r.output and "Traceback" not in r.output


def test_disk_full_while_saving_a_checkpoint_is_a_sentence(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if ok.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({ok.stderr.decode().strip()[:80]})")
    try:
        from pipeline.errors import PhfaError
        from pipeline.runtime import checkpoint
        (mnt / "last.pt").write_bytes(b"previous")
        with pytest.raises(PhfaError, match=r"disk full while writing .*last.pt: it needs about \d+ MiB"):
            checkpoint.save(mnt / "last.pt", {"w": torch.zeros(2_000_000)})
        assert (mnt / "last.pt").read_bytes() == b"previous"
        assert [p.name for p in mnt.iterdir()] == ["last.pt"]  # no temp file left
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
