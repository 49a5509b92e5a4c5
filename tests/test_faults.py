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


# --------------------------------------------------------------------------- nothing a user types destroys data


def _one_line_error(r):
    """Exit 2 and one sentence (after any note on which stage was picked), no traceback."""
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    lines = r.output.strip().splitlines()
    assert lines[-1].startswith("error:") and sum(x.startswith("error:") for x in lines) == 1, r.output


def test_predict_eval_and_report_never_overwrite_files_phfa_did_not_write(tiny, adapt_straight, tmp_path):
    root, cfg = tiny
    keep = tmp_path / "keep"        # a user's folder holding files of the names predict would write
    keep.mkdir()
    for p in sorted((root / "gta5" / "labels").glob("*.png")):
        (keep / p.name).write_bytes(p.read_bytes())
    before = snapshot_tree(keep)
    r = runner.invoke(app, ["predict", "--run", str(adapt_straight), str(root / "gta5" / "images"), "--out", str(keep)])
    _one_line_error(r)
    assert "phfa did not write" in r.output and "--overwrite" in r.output
    assert snapshot_tree(keep) == before
    # into the dataset itself: refused even with --overwrite
    labels = root / "gta5" / "labels"
    before = snapshot_tree(labels)
    for extra in ([], ["--overwrite"]):
        r = runner.invoke(app, ["predict", "--run", str(adapt_straight), str(root / "gta5" / "images"),
                                "--out", str(labels), *extra])
        _one_line_error(r)
        assert "never writes into a dataset" in r.output
    assert snapshot_tree(labels) == before
    # phfa's own folder: a second prediction replaces its own outputs; a user's file there is kept
    pred = tmp_path / "pred"
    for _ in range(2):
        r = runner.invoke(app, ["predict", "--run", str(adapt_straight), str(root / "gta5" / "images"), "--out", str(pred)])
        assert r.exit_code == 0, r.output
    (pred / "00000_color.png").write_bytes(b"mine")
    (pred / ".phfa-out").write_text((pred / ".phfa-out").read_text().replace("00000_color.png\n", ""))
    r = runner.invoke(app, ["predict", "--run", str(adapt_straight), str(root / "gta5" / "images"), "--out", str(pred)])
    _one_line_error(r)
    assert (pred / "00000_color.png").read_bytes() == b"mine"
    r = runner.invoke(app, ["predict", "--run", str(adapt_straight), str(root / "gta5" / "images"), "--out", str(pred),
                            "--overwrite"])
    assert r.exit_code == 0 and (pred / "00000_color.png").read_bytes() != b"mine", r.output
    # eval --out and report --out follow the same rule; report --out naming a file is a sentence
    note = tmp_path / "notes"
    note.mkdir()
    (note / "metrics.json").write_text("my own numbers")
    r = runner.invoke(app, ["eval", "--config", str(cfg), "--run", str(adapt_straight), "--stage", "adapt",
                            "--out", str(note)])
    _one_line_error(r)
    assert (note / "metrics.json").read_text() == "my own numbers"
    (note / "index.html").write_text("my page")
    r = runner.invoke(app, ["report", "--run", str(adapt_straight), "--config", str(cfg), "--out", str(note)])
    _one_line_error(r)
    assert (note / "index.html").read_text() == "my page"
    r = runner.invoke(app, ["report", "--run", str(adapt_straight), "--config", str(cfg),
                            "--out", str(note / "index.html")])
    _one_line_error(r)
    assert "is a file" in r.output and (note / "index.html").read_text() == "my page"


def _killed_force_attempt(tiny, adapt_straight, name, sig):
    """A copy of a finished run whose `adapt` stage got `--force`, interrupted by `sig` mid-training."""
    import shutil
    run = tiny[0] / name
    shutil.copytree(adapt_straight, run)
    old = snapshot_tree(run / "adapt")
    # the copy's own metrics.jsonl is the old stage's: wait for the new attempt's (the old one aside)
    _, rc, out = interrupt_at(tiny, name, [*ADAPT, "--force", "--seed", "5"], "adapt/metrics.jsonl",
                              lambda rs: (run / ".adapt.replaced").exists() and bool(rs), sig)
    return run, old, rc, out


def test_a_killed_force_attempt_gives_the_old_stage_back(tiny, adapt_straight, tmp_path):
    run, old, rc, _ = _killed_force_attempt(tiny, adapt_straight, "force-killed", signal.SIGKILL)
    assert rc == -signal.SIGKILL and (run / ".adapt.replaced").exists()
    # the next command that opens the run puts the finished stage back; --force again never deletes it
    r = runner.invoke(app, ["eval", "--config", str(tiny[1]), "--run", str(run)])
    assert r.exit_code == 0, r.output
    assert not (run / ".adapt.replaced").exists()
    assert {k: v for k, v in snapshot_tree(run / "adapt").items() if not k.startswith("eval-")} == old


def test_ctrl_c_on_a_force_attempt_gives_the_old_stage_back(tiny, adapt_straight, tmp_path):
    run, old, rc, out = _killed_force_attempt(tiny, adapt_straight, "force-ctrl-c", signal.SIGINT)
    assert rc == 130 and "is back as it was" in out, out[-2000:]
    assert snapshot_tree(run / "adapt") == old and not (run / ".adapt.replaced").exists()
    r = runner.invoke(app, ["predict", "--run", str(run), "--stage", "adapt", str(tiny[0] / "gta5" / "images"),
                            "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output


def test_a_second_process_on_a_running_stage_is_refused(tiny, tmp_path):
    from pipeline.runtime.run import StageDir
    _, cfg = tiny
    run = tmp_path / "locked"
    holder = StageDir(run, "adapt")
    holder.acquire("phfa adapt (the first one)")
    try:
        for extra in ([], ["--resume"], ["--force"]):
            r = runner.invoke(app, [*ADAPT, "--config", str(cfg), "--run", str(run), *extra])
            assert r.exit_code == 2 and "another phfa process" in r.output and "the first one" in r.output, r.output
    finally:
        holder.release()
    assert not (run / "adapt").exists()
    r = runner.invoke(app, [*ADAPT, "--config", str(cfg), "--run", str(run), "--iters", "1"])
    assert r.exit_code == 0, r.output


def test_settings_that_would_do_nothing_are_refused(tiny, adapt_straight, tmp_path):
    import shutil
    _, cfg = tiny
    run = tmp_path / "pl"
    shutil.copytree(adapt_straight, run)
    assert runner.invoke(app, ["pseudolabel", "--config", str(cfg), "--run", str(run)]).exit_code == 0
    before = snapshot_tree(run / "pseudolabel")
    for bs in ("-2", "0"):
        r = runner.invoke(app, ["pseudolabel", "--config", str(cfg), "--run", str(run), "--force", "--batch-size", bs])
        _one_line_error(r)
        assert "--batch-size" in r.output
    assert snapshot_tree(run / "pseudolabel") == before
    for opt in (["--set", "memory_size=1000000000"], ["--set", "d_ndf=100000"], ["--set", "source_size=100000x100000"]):
        r = runner.invoke(app, [*ADAPT, "--config", str(cfg), "--run", str(tmp_path / "big"), *opt])
        _one_line_error(r)
        assert opt[1].split("=")[0] in r.output


def test_damaged_final_pt_manifest_and_logs_are_sentences(tiny, adapt_straight, tmp_path):
    import shutil
    _, cfg = tiny
    run = tmp_path / "dmg"
    shutil.copytree(adapt_straight, run)
    final = run / "adapt" / "final.pt"
    data = bytearray(final.read_bytes())
    data[len(data) // 2] ^= 0xFF                      # one flipped byte inside a tensor
    final.write_bytes(bytes(data))
    for args in (["eval", "--config", str(cfg), "--run", str(run), "--stage", "adapt"],
                 ["predict", "--run", str(run), "--stage", "adapt", str(tiny[0] / "gta5" / "images"), "--out",
                  str(tmp_path / "p")],
                 ["pseudolabel", "--config", str(cfg), "--run", str(run), "--from", "adapt"]):
        r = runner.invoke(app, args)
        _one_line_error(r)
        assert "damaged" in r.output and "sha256" in r.output
    man = run / "adapt" / "manifest.json"
    for bad in (b"\xff\xfe{}", b"[1, 2]"):
        man.write_bytes(bad)
        for args in (["eval", "--config", str(cfg), "--run", str(run)],
                     ["predict", "--run", str(run), str(tiny[0] / "gta5" / "images"), "--out", str(tmp_path / "p2")],
                     ["pseudolabel", "--config", str(cfg), "--run", str(run)],
                     ["retrain", "--config", str(cfg), "--run", str(run)]):
            r = runner.invoke(app, args)
            _one_line_error(r)
            assert "manifest" in r.output, r.output


def test_a_non_utf8_metrics_log_or_few_shot_list_is_not_a_traceback(tiny, tmp_path):
    _, cfg = tiny
    run = tmp_path / "log"
    p = subprocess.run(cli(*ADAPT, "--config", cfg, "--run", run, "--iters", "3"), env=env(), capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    with open(run / "adapt" / "metrics.jsonl", "ab") as f:
        f.write(b"\xff\xfe garbage\n")
    r = runner.invoke(app, ["report", "--run", str(run), "--config", str(cfg), "--panel-images", "0"])
    assert r.exit_code == 0, r.output
    (run / "fewshot-cityscapes.txt").write_bytes(b"\xff\xfe\x00")
    r = runner.invoke(app, [*ADAPT, "--config", str(cfg), "--run", str(run), "--tag", "other"])
    _one_line_error(r)
    assert "fewshot-cityscapes.txt" in r.output and "UTF-8" in r.output


def test_the_temp_files_of_a_killed_checkpoint_write_are_cleared_on_resume(tiny, tmp_path):
    _, cfg = tiny
    run, rc, _ = interrupt_at(tiny, "litter", ADAPT, "adapt/metrics.jsonl",
                              lambda rs: any(r["phase"] == "2-gta5" for r in rs), signal.SIGKILL)
    assert rc == -signal.SIGKILL
    litter = run / "adapt" / ".last.pt.partial-k1ll3d9x.pt"   # what kill -9 during torch.save leaves
    litter.write_bytes(b"half a checkpoint")
    resume(tiny, run, ADAPT)
    assert not litter.exists() and not list((run / "adapt").glob(".*partial-*"))


def test_a_read_only_run_folder_is_a_sentence_and_stays_as_it_was(tiny, adapt_straight, tmp_path):
    import shutil
    _, cfg = tiny
    mnt = tmp_path / "ro"
    mnt.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True)
    if ok.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({ok.stderr.decode().strip()[:80]})")
    try:
        shutil.copytree(adapt_straight, mnt / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        before = snapshot_tree(mnt / "run")
        for args in ([*ADAPT, "--config", str(cfg), "--run", str(mnt / "run"), "--force"],
                     [*ADAPT, "--config", str(cfg), "--run", str(mnt / "run"), "--tag", "new"],
                     ["pseudolabel", "--config", str(cfg), "--run", str(mnt / "run")],
                     ["eval", "--config", str(cfg), "--run", str(mnt / "run"), "--stage", "adapt"],
                     ["report", "--run", str(mnt / "run"), "--config", str(cfg)],
                     ["predict", "--run", str(mnt / "run"), str(tiny[0] / "gta5" / "images"), "--out",
                      str(mnt / "pred")]):
            r = runner.invoke(app, args)
            _one_line_error(r)
        assert snapshot_tree(mnt / "run") == before
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_fifo_named_like_an_image_does_not_hang_data_check(tiny, tmp_path):
    import shutil
    root, _ = tiny
    data = tmp_path / "d"
    shutil.copytree(root / "gta5", data / "gta5")
    os.mkfifo(data / "gta5" / "images" / "99999.png")
    (data / "d.toml").write_text('[domains.gta5]\nformat = "gta5"\nroot = "gta5"\n')
    p = subprocess.run(cli("data", "check", "--config", data / "d.toml", "gta5"), env=env(), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "99999.png" in p.stderr and "not a regular file" in p.stderr, p.stderr
