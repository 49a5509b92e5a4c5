"""`phfa report`: a tiny run built through the CLI (source-only, adapt, oracle) plus fake
pseudolabel and translate stages; the HTML is self-contained and its tables match metrics.json."""
import base64
import json
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from phfa_cli.app import app
from pipeline import classes as C
from pipeline.data import pngio

runner = CliRunner()
TINY = ["--preset", "toy", "--set", "source_size=64,32", "--set", "target_size=64,32", "--set", "batch_size=2",
        "--set", "log_every=1", "--set", "init_stage="]


def _adapt(cfg, run, *extra):
    r = runner.invoke(app, ["adapt", "--config", str(cfg), "--run", str(run), *TINY, "--iters", "1", *extra])
    assert r.exit_code == 0, r.output


def _fake_pseudolabel(stage):
    (stage / "preview").mkdir(parents=True)
    stage.joinpath("manifest.json").write_text(json.dumps(
        {"stage": stage.name, "status": "finished", "from_stage": "adapt", "target": "cityscapes",
         "finished": "2026-01-01T00:00:00+00:00"}))
    classes = {}
    for c, name in enumerate(C.CLASS_NAMES):
        pred = 100 * (c + 1)
        kept = 0 if c == 3 else 60 * (c + 1)
        classes[name] = {"threshold": None if c == 3 else round(0.5 + c / 50, 4), "predicted_pixels": pred,
                         "kept_pixels": kept, "kept_share": kept / pred}
    stage.joinpath("thresholds.json").write_text(json.dumps(
        {"from_stage": "adapt", "images": 4, "cap": 0.9, "thresholds": [v["threshold"] for v in classes.values()],
         "classes": classes}))
    stage.joinpath("diagnostic.json").write_text(json.dumps(
        {"note": "diagnostic only, never used for adaptation",
         "classes": {n: {"precision": 0.25, "coverage": None if i == 3 else 0.125} for i, n in enumerate(C.CLASS_NAMES)},
         "precision": 0.3, "coverage": 0.2}))
    pngio.write_png(stage / "preview" / "alpha_000000_000019.png", np.full((32, 130, 3), 90, np.uint8))


def _fake_translate(stage):
    stage.mkdir()
    stage.joinpath("manifest.json").write_text(json.dumps({"stage": stage.name, "status": "finished",
                                                           "finished": "2026-01-01T00:00:00+00:00"}))
    stage.joinpath("metrics.jsonl").write_text("".join(
        json.dumps({"iter": i, "g_total": 3.0 / i, "d_a": 0.2, "d_b": 0.3, "lr": 2e-4}) + "\n" for i in (1, 2, 3))
        + '{"iter": 4, "g_tot\n')  # a line cut by kill -9 is skipped
    for i, v in ((1, 10), (2, 200)):
        pngio.write_png(stage / f"preview-{i:06d}.png", np.full((16, 100, 3), v, np.uint8))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.conftest import write_tiny_domains
    root = tmp_path_factory.mktemp("report")
    cfg = write_tiny_domains(root)
    run = root / "runs/r"
    _adapt(cfg, run, "--sources", "gta5", "--no-adversarial", "--no-hierarchy")
    _adapt(cfg, run, "--sources", "unity,gta5")
    _adapt(cfg, run, "--sources", "cityscapes", "--no-adversarial", "--no-hierarchy", "--tag", "oracle")
    _fake_pseudolabel(run / "pseudolabel")
    _fake_translate(run / "translate-gta5")
    return root, cfg, run


def _miou(run, stage):
    return json.loads((run / stage / "metrics.json").read_text())["miou"]


def _table(page, tid):
    m = re.search(rf'<table id="{tid}">(.*?)</table>', page, re.S)
    assert m, tid
    return m.group(1)


def _row(table, key):
    m = re.search(rf'<tr data-stage="{re.escape(key)}">(.*?)</tr>', table, re.S)
    assert m, key
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", m.group(1), re.S)]


def _check_images(page, out):
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert srcs
    for s in srcs:
        if s.startswith("data:"):
            assert s.startswith("data:image/png;base64,")
            assert base64.b64decode(s.split(",", 1)[1]).startswith(b"\x89PNG")
        else:
            assert (out / s).is_file(), s
    assert "http://" not in page and "https://" not in page  # no external requests
    return srcs


def _check_markdown(md_path):
    md = md_path.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links
    for link in links:
        assert (md_path.parent / link).is_file(), link
    return md, links


def test_report_of_a_run(tiny_run):
    root, cfg, run = tiny_run
    r = runner.invoke(app, ["report", "--run", str(run), "--config", str(cfg), "--panel-images", "2"])
    assert r.exit_code == 0, r.output
    out = run / "report"
    assert str(out / "index.html") in r.output and str(out / "report.md") in r.output
    page = (out / "index.html").read_text()
    assert _check_images(page, out)
    assert "<link" not in page and "<script" not in page
    # Table II: every evaluated stage, source-only first, oracle last, mIoU as in metrics.json
    stages = ["adapt-noadv-nohier", "adapt", "adapt-oracle"]
    t2 = _table(page, "per-class-table")
    heads = re.findall(r"<th>(.*?)</th>", t2)
    assert [h.split(" (")[0] for h in heads[1:]] == stages
    assert "(source-only)" in heads[1] and "(oracle)" in heads[-1]
    assert _row(t2, "miou")[1:] == [f"{_miou(run, s):.2f}" for s in stages]
    road = json.loads((run / "adapt/metrics.json").read_text())["iou"]["road"]
    assert _row(t2, "road")[2] == ("—" if road is None else f"{road:.1f}")
    # Table IV: the adapt row has AA, progressive, all three levels and the oracle-gap share
    src, orc, full = (_miou(run, s) for s in ("adapt-noadv-nohier", "adapt-oracle", "adapt"))
    row = _row(_table(page, "ablation-table"), "adapt")
    assert row[:6] == ["adapt", "✓", "", "✓", "obj+cat+bg", ""]
    assert row[6] == f"{full:.2f}" and row[7] == f"{full - src:+.2f}"
    assert row[8] == ("—" if orc == src else f"{100 * (full - src) / (orc - src):.1f} %")
    assert _row(_table(page, "ablation-table"), "adapt-noadv-nohier")[1:6] == ["", "", "", "", ""]
    # the other sections are there
    for sid in ("iou-bars", "panel", "curves", "selfguidance", "translation"):
        assert f'<section id="{sid}">' in page
    assert "source-only (adapt-noadv-nohier) | final (adapt)" in page
    assert page.count("training losses") >= 3 and "translate-gta5: CycleGAN losses" in page
    th = _table(page, "thresholds-pseudolabel")
    assert _row(th, "road")[1] == "0.5000" and _row(th, "wall")[1:] == ["—", "400", "0", "0.0"]
    assert "DIAGNOSTIC ONLY" in page and "never used for adaptation" in page
    assert _row(_table(page, "diagnostic-pseudolabel"), "all")[1:] == ["30.0", "20.0"]
    assert f"phfa {__import__('pipeline').__version__}" in page
    # report.md links only images that exist, under the report folder
    md, links = _check_markdown(out / "report.md")
    assert "figures/panel.png" in links and "figures/translate-gta5-preview-000002.png" in links
    assert (out / "figures/translate-gta5-preview-000002.png").read_bytes() == \
        (run / "translate-gta5/preview-000002.png").read_bytes()
    assert "| **mIoU (19)** |" in md and "no pseudolabel stage" not in md


def test_absent_sections_say_what_to_run(tiny_run, tmp_path):
    from pipeline.stages.report import build_report
    _, _, run = tiny_run
    small = tmp_path / "small"
    shutil.copytree(run / "adapt-noadv-nohier", small / "adapt-noadv-nohier")
    res = build_report(small, None, out=tmp_path / "rep")
    page = (tmp_path / "rep/index.html").read_text()
    _check_images(page, tmp_path / "rep")
    _check_markdown(tmp_path / "rep/report.md")
    notes = " ".join(res["notes"])
    for hint in (f"phfa pseudolabel --run {small}", f"phfa translate --run {small}", "--tag oracle",
                 "no data config"):
        assert hint in notes, hint
    assert res["source_only"] == "adapt-noadv-nohier" and res["oracle"] is None
    assert not (small / "report").exists()  # --out elsewhere leaves the run alone


def test_oracle_from_elsewhere(tiny_run, tmp_path):
    root, cfg, run = tiny_run
    other = tmp_path / "r2"
    for s in ("adapt-noadv-nohier", "adapt"):
        shutil.copytree(run / s, other / s)
    r = runner.invoke(app, ["report", "--run", str(other), "--config", str(cfg), "--panel-images", "0",
                            "--oracle", str(run / "adapt-oracle")])
    assert r.exit_code == 0, r.output
    page = (other / "report/index.html").read_text()
    src, orc, full = (_miou(run, s) for s in ("adapt-noadv-nohier", "adapt-oracle", "adapt"))
    assert _row(_table(page, "ablation-table"), "adapt")[8] == \
        ("—" if orc == src else f"{100 * (full - src) / (orc - src):.1f} %")
    r = runner.invoke(app, ["report", "--run", str(other), "--oracle", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "--oracle" in r.output


def test_run_without_finished_stage(tmp_path):
    for run in (tmp_path / "missing", tmp_path / "empty"):
        if run.name == "empty":
            (run / "adapt").mkdir(parents=True)
            (run / "adapt/manifest.json").write_text('{"stage": "adapt", "status": "running"}')
        r = runner.invoke(app, ["report", "--run", str(run)])
        assert r.exit_code == 2, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.output
