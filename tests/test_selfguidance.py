"""`phfa pseudolabel` (Eq. 8) and `phfa retrain` (Eq. 9, 11) end to end on tiny data."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from phfa_cli.app import app
from pipeline.data import datasets, pngio
from pipeline.data.dataconfig import DomainSpec

runner = CliRunner()
TINY = ["--preset", "toy", "--set", "source_size=64,32", "--set", "target_size=64,32", "--set", "batch_size=2",
        "--set", "log_every=1", "--set", "init_stage="]


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """A tiny run with a finished progressive adapt stage and its pseudo-labels."""
    from tests.conftest import write_tiny_domains
    root = tmp_path_factory.mktemp("sg")
    cfg = write_tiny_domains(root)
    run = root / "R"
    r = runner.invoke(app, ["adapt", "--config", str(cfg), "--run", str(run), "--sources", "unity,gta5",
                            "--iters", "2", *TINY])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["pseudolabel", "--config", str(cfg), "--run", str(run)])
    assert r.exit_code == 0, r.output
    assert "adapt" in r.output and "DIAGNOSTIC" in r.output
    return root, cfg, run


def test_pseudolabels_follow_eq8_and_read_as_a_domain(adapted):
    root, cfg, run = adapted
    st = run / "pseudolabel"
    th = json.loads((st / "thresholds.json").read_text())
    assert th["from_stage"] == "adapt" and th["images"] == 4
    # recompute the rule from the model's own predictions, independently of the stage's code path
    from pipeline.config import from_dict
    from pipeline.data.transforms import to_tensor
    from pipeline.models.segmentor import load_segmentor
    model, ck = load_segmentor(run / "adapt/final.pt")
    model.eval()
    size = tuple(from_dict(ck["config"]).target_size)
    spec = DomainSpec("cityscapes", "cityscapes", root / "cityscapes")
    names = [n for n in (run / "fewshot-cityscapes.txt").read_text().split() if not n.startswith("#")][-4:]
    by = {s.name: s for s in datasets.samples(spec, "train")}
    confs, preds = [], []
    with torch.no_grad():
        for n in names:
            x = to_tensor(datasets.load_pair(spec, by[n], size, with_label=False)[0])[None]
            _, logits = model(x)
            p = torch.softmax(torch.nn.functional.interpolate(logits, size=(size[1], size[0]), mode="bilinear",
                                                              align_corners=True), 1)[0]
            c, k = p.max(0)
            confs.append(c.numpy())
            preds.append(k.numpy())
    conf, pred = np.stack(confs), np.stack(preds)
    for c in range(19):
        sel = conf[pred == c]
        want = None if sel.size == 0 else min(0.9, float(np.median(sel)))
        got = th["thresholds"][c]
        assert (got is None) == (want is None), c
        if want is not None:
            assert got == pytest.approx(want, abs=1e-5), c
    # the label PNGs are what the rule says, and an ordinary `folder` domain reads them back
    pspec = DomainSpec("p", "folder", st / "domain")
    items = {s.name: s for s in datasets.samples(pspec, datasets.train_split(pspec))}
    assert sorted(items) == sorted(names)
    for i, n in enumerate(names):
        _, lab = datasets.load_pair(pspec, items[n], size)
        thr = np.array([t if t is not None else np.inf for t in th["thresholds"]])[pred[i]]
        want = np.where(conf[i] >= thr, pred[i], 255)
        # batched vs single-image forward passes differ in the last float bits: only pixels
        # within 1e-5 of their threshold (or of a tie between two classes) may differ
        differ = lab != want
        assert (np.abs(conf[i] - thr)[differ] < 1e-5).all() and differ.mean() < 0.01, n
    assert (st / "diagnostic.json").is_file() and "diagnostic" in json.loads((st / "diagnostic.json").read_text())["note"]
    assert list((st / "preview").glob("*.png"))


def _capture_init(monkeypatch):
    from pipeline import train
    seen, real = [], train.run

    def spy(cfg, model, *a, **k):
        seen.append({k2: v.clone() for k2, v in model.state_dict().items()})
        return real(cfg, model, *a, **k)
    monkeypatch.setattr(train, "run", spy)
    return seen


def test_retrain_starts_from_initial_weights_and_rounds_do_not_overwrite(adapted, tmp_path, monkeypatch):
    root, cfg, run = adapted
    import shutil
    r2 = tmp_path / "R"
    shutil.copytree(run, r2, symlinks=True)
    seen = _capture_init(monkeypatch)
    r = runner.invoke(app, ["adapt", "--config", str(cfg), "--run", str(r2), "--sources", "unity,gta5", "--iters", "2",
                            *TINY, "--tag", "again"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["retrain", "--config", str(cfg), "--run", str(r2), "--iters", "2"])
    assert r.exit_code == 0, r.output
    init_adapt, init_retrain = seen
    adapted_w = torch.load(r2 / "adapt/final.pt", weights_only=True)["model"]
    for k in init_adapt:
        assert torch.equal(init_adapt[k], init_retrain[k]), k  # the same initial weights as adapt ...
    assert any(not torch.equal(init_retrain[k], adapted_w[k]) for k in adapted_w)  # ... never the adapted ones
    man = json.loads((r2 / "retrain/manifest.json").read_text())
    assert man["status"] == "finished" and all(p["target_labels"] for p in man["phases"])
    assert [p["name"] for p in man["phases"]] == ["1-unity", "2-gta5"]
    assert "seg_t" in json.loads((r2 / "retrain/metrics.jsonl").read_text().splitlines()[-1])
    # a second round: pseudolabel --from retrain, retrain again; the first round is untouched
    first = {p: p.read_bytes() for p in (r2 / "retrain").glob("*.pt")}
    first_labels = {p: p.read_bytes() for p in (r2 / "pseudolabel/domain/labels").glob("*.png")}
    r = runner.invoke(app, ["pseudolabel", "--config", str(cfg), "--run", str(r2), "--from", "retrain"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["retrain", "--config", str(cfg), "--run", str(r2), "--labels", "pseudolabel-retrain",
                            "--iters", "1"])
    assert r.exit_code == 0, r.output
    assert (r2 / "retrain-retrain/final.pt").is_file()
    assert all(p.read_bytes() == b for p, b in first.items())
    assert all(p.read_bytes() == b for p, b in first_labels.items())
    r = runner.invoke(app, ["eval", "--config", str(cfg), "--run", str(r2)])
    assert r.exit_code == 0, r.output
    for st in ("adapt", "retrain", "retrain-retrain"):
        assert st in r.output


def _set_labels(run, value):
    for p in (run / "pseudolabel/domain/labels").glob("*.png"):
        a = pngio.read_index(p)
        pngio.write_png(p, np.full_like(a, value))


def test_retrain_uses_the_pseudo_labels(adapted, tmp_path):
    """Two retrains that differ only in their pseudo-labels: each predicts its labelled class."""
    root, cfg, run = adapted
    import shutil
    shares = {}
    for cls in (8, 10):  # vegetation vs sky everywhere
        rr = tmp_path / f"R{cls}"
        shutil.copytree(run, rr, symlinks=True)
        _set_labels(rr, cls)
        r = runner.invoke(app, ["retrain", "--config", str(cfg), "--run", str(rr), "--iters", "4",  # photometric off: 4 steps isolate the labels
                                "--set", "photometric=false", "--set", "optimizer=sgd", "--set", "lr=0.02", "--set", "lambda_seg=1"])
        assert r.exit_code == 0, r.output
        from pipeline.models.segmentor import load_segmentor
        from pipeline.data.transforms import to_tensor
        model, _ = load_segmentor(rr / "retrain/final.pt")
        model.eval()
        spec = DomainSpec("cityscapes", "cityscapes", root / "cityscapes")
        xs = torch.stack([to_tensor(datasets.load_pair(spec, s, (64, 32), with_label=False)[0])
                          for s in datasets.samples(spec, "train")])
        with torch.no_grad():
            pred = model(xs)[1].argmax(1)
        shares[cls] = {c: float((pred == c).float().mean()) for c in (8, 10)}
    assert shares[8][8] > shares[10][8] and shares[10][10] > shares[8][10], shares


def test_all_ignore_pseudo_labels_do_not_give_nan(adapted, tmp_path):
    root, cfg, run = adapted
    import shutil
    rr = tmp_path / "R255"
    shutil.copytree(run, rr, symlinks=True)
    _set_labels(rr, 255)
    r = runner.invoke(app, ["retrain", "--config", str(cfg), "--run", str(rr), "--iters", "2"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (rr / "retrain/metrics.jsonl").read_text().splitlines()]
    assert all(row["seg_t"] == 0.0 and np.isfinite(row["total"]) for row in rows)


def test_bad_inputs(adapted, tmp_path):
    root, cfg, run = adapted
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(app, ["pseudolabel", "--config", str(cfg), "--run", str(empty)])
    assert r.exit_code == 2 and "phfa adapt --run" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = runner.invoke(app, ["retrain", "--config", str(cfg), "--run", str(empty)])
    assert r.exit_code == 2 and "phfa pseudolabel --run" in r.output
    r = runner.invoke(app, ["pseudolabel", "--config", str(cfg), "--run", str(run), "--from", "nosuch"])
    assert r.exit_code == 2 and "nosuch" in r.output and "adapt" in r.output
    r = runner.invoke(app, ["pseudolabel", "--config", str(cfg), "--run", str(run), "--from", "../x"])
    assert r.exit_code == 2 and "plain name" in r.output
    assert not (tmp_path.parent / "x").exists()


def test_retrain_with_a_preset_keeps_the_origin_stages_switches(adapted, tmp_path):
    """`--preset` gives retrain its hyper-parameters, never its phase shape: the pseudo-labels of an
    `adapt --no-hierarchy` stage retrain without hierarchy losses (the +AA +IT +SG ablation row
    once retrained with them), and a `--set` still overrides."""
    root, cfg, run = adapted
    import shutil
    r2 = tmp_path / "R"
    shutil.copytree(run, r2, symlinks=True)
    r = runner.invoke(app, ["adapt", "--config", str(cfg), "--run", str(r2), "--sources", "gta5", "--no-hierarchy",
                            "--iters", "1", *TINY])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["pseudolabel", "--config", str(cfg), "--run", str(r2), "--from", "adapt-nohier"])
    assert r.exit_code == 0, r.output
    for extra, align in (([], []), (["--set", "align=object", "--force"], ["object"])):
        r = runner.invoke(app, ["retrain", "--config", str(cfg), "--run", str(r2), "--labels", "pseudolabel-adapt-nohier",
                                "--iters", "1", *TINY, *extra])
        assert r.exit_code == 0, r.output
        man = json.loads((r2 / "retrain-adapt-nohier/manifest.json").read_text())
        assert [(p["name"], p["adversarial"], list(p["align"])) for p in man["phases"]] == [("1-gta5", True, align)]
        assert man["config"]["lr"] == json.loads((r2 / "adapt-nohier/manifest.json").read_text())["config"]["lr"]
