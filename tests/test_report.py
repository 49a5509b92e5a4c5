"""`phfa report`: a tiny run built through the CLI (source-only, adapt, oracle) plus fake
pseudolabel and translate stages; the HTML is self-contained and its tables match metrics.json;
every figure is PNG and SVG, Tables II and IV are written as CSV and LaTeX, stages carry the
paper's row names, loss panels their human names."""
import base64
import csv
import json
import re
import shutil
import xml.etree.ElementTree as ET

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


@pytest.fixture(scope="module")
def tiny_report(tiny_run):
    """The report of the tiny run (RUN/report), written once through the CLI."""
    root, cfg, run = tiny_run
    r = runner.invoke(app, ["report", "--run", str(run), "--config", str(cfg), "--panel-images", "2"])
    assert r.exit_code == 0, r.output
    return run, run / "report", r.output


STAGES = ["adapt-noadv-nohier", "adapt", "adapt-oracle"]  # table order
METHODS = ["FCN", "PHFA", "oracle"]                       # their row names (raw unity,gta5 with HFA: PHFA)


def test_report_of_a_run(tiny_run, tiny_report):
    root, cfg, run = tiny_run
    _, out, output = tiny_report
    assert str(out / "index.html") in output and str(out / "report.md") in output
    page = (out / "index.html").read_text()
    assert _check_images(page, out)
    assert "<link" not in page and "<script" not in page
    # Table II: every evaluated stage, source-only first, oracle last, mIoU as in metrics.json
    stages = STAGES
    t2 = _table(page, "per-class-table")
    heads = re.findall(r"<th>(.*?)</th>", t2)
    assert heads[1:] == [f"{m} ({s})" for m, s in zip(METHODS, stages)]  # method first, folder second
    assert _row(t2, "miou")[1:] == [f"{_miou(run, s):.2f}" for s in stages]
    road = json.loads((run / "adapt/metrics.json").read_text())["iou"]["road"]
    assert _row(t2, "road")[2] == ("—" if road is None else f"{road:.1f}")
    # Table IV: the adapt row has AA, progressive, all three levels and the oracle-gap share
    src, orc, full = (_miou(run, s) for s in ("adapt-noadv-nohier", "adapt-oracle", "adapt"))
    row = _row(_table(page, "ablation-table"), "adapt")
    assert row[:7] == ["PHFA", "adapt", "✓", "", "✓", "obj+cat+bg", ""]
    assert row[7] == f"{full:.2f}" and row[8] == f"{full - src:+.2f}"
    assert row[9] == ("—" if orc == src else f"{100 * (full - src) / (orc - src):.1f} %")
    assert _row(_table(page, "ablation-table"), "adapt-noadv-nohier")[:7] == ["FCN", "adapt-noadv-nohier", "", "", "",
                                                                             "", ""]
    assert [_row(_table(page, "stages"), s)[0] for s in stages] == METHODS
    assert _row(_table(page, "stages"), "translate-gta5")[0] == "—"
    # the other sections are there
    for sid in ("iou-bars", "panel", "curves", "selfguidance", "translation"):
        assert f'<section id="{sid}">' in page
    assert "source-only: FCN (adapt-noadv-nohier) | final: PHFA (adapt)" in page
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
    assert _row(_table(page, "ablation-table"), "adapt")[9] == \
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


# ----------------------------------------------------------------------------- paper-ready outputs

SVG = "{http://www.w3.org/2000/svg}svg"


def test_every_figure_is_png_and_svg(tiny_report):
    from PIL import Image
    _, out, _ = tiny_report
    pngs = sorted((out / "figures").glob("*.png"))
    names = {p.name for p in pngs}
    assert {"iou-bars.png", "panel.png", "curves-adapt.png", "translate-gta5-preview-000002.png"} <= names
    for p in pngs:
        svg = p.with_suffix(".svg")
        assert svg.is_file(), svg
        assert ET.parse(svg).getroot().tag == SVG, svg
    assert sorted(p.stem for p in (out / "figures").glob("*.svg")) == sorted(p.stem for p in pngs)
    for name in ("iou-bars.png", "panel.png", "curves-adapt.png"):  # drawn here: print resolution
        with Image.open(out / "figures" / name) as im:
            assert round(im.info["dpi"][0]) == 200, name
    # both pages link each figure's SVG; the HTML still embeds only PNGs
    md = (out / "report.md").read_text()
    page = (out / "index.html").read_text()
    for p in pngs:
        assert f"(figures/{p.stem}.svg)" in md and f'href="figures/{p.stem}.svg"' in page, p.stem
    assert "data:image/svg" not in page


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _same(cell, value):
    return cell == "" if value is None else float(cell) == value


def test_tables_as_csv_and_latex(tiny_report):
    from pipeline import classes as C
    run, out, _ = tiny_report
    t2 = _csv_rows(out / "tables/table2-per-class-iou.csv")
    assert [(r["method"], r["stage"]) for r in t2] == list(zip(METHODS, STAGES))
    for r in t2:
        m = json.loads((run / r["stage"] / "metrics.json").read_text())
        assert float(r["mIoU"]) == m["miou"] and _same(r["pixel_acc"], m.get("pixel_acc"))
        assert all(_same(r[c], m["iou"].get(c)) for c in C.CLASS_NAMES), r["stage"]
    t4 = _csv_rows(out / "tables/table4-ablation.csv")
    src, orc = _miou(run, "adapt-noadv-nohier"), _miou(run, "adapt-oracle")
    assert [r["stage"] for r in t4] == STAGES
    phfa = t4[1]
    assert (phfa["method"], phfa["AA"], phfa["IT"], phfa["progressive"], phfa["HFA"], phfa["SG"]) == \
        ("PHFA", "yes", "", "yes", "obj+cat+bg", "")
    full = _miou(run, "adapt")
    assert float(phfa["mIoU"]) == full and abs(float(phfa["delta_vs_source_only"]) - (full - src)) < 1e-9
    assert phfa["oracle_gap_recovered_pct"] == "" if orc == src else \
        abs(float(phfa["oracle_gap_recovered_pct"]) - 100 * (full - src) / (orc - src)) < 1e-9
    for name, n_cols in (("table2-per-class-iou", 2 + len(C.CLASS_NAMES) + 1), ("table4-ablation", 10)):
        tex = (out / f"tables/{name}.tex").read_text()
        assert r"\begin{tabular}" in tex and r"\toprule" in tex and r"\bottomrule" in tex and r"\end{tabular}" in tex
        body = tex.split(r"\midrule", 1)[1].split(r"\bottomrule")[0]
        rows = [ln for ln in body.splitlines() if ln.strip().endswith(r"\\")]
        assert [ln.split(" & ")[1] for ln in rows] == [rf"\texttt{{{s}}}" for s in STAGES]
        assert all(len(ln.split(" & ")) == n_cols for ln in rows)
    # the pages link the four files
    md, page = (out / "report.md").read_text(), (out / "index.html").read_text()
    for f in ("table2-per-class-iou.csv", "table2-per-class-iou.tex", "table4-ablation.csv", "table4-ablation.tex"):
        assert f"(tables/{f})" in md and f'href="tables/{f}"' in page


def _unescaped(tex):
    """The characters LaTeX would reject outside math mode: _ % & not preceded by a backslash."""
    text = re.sub(r"\$[^$]*\$", "", "\n".join(ln for ln in tex.splitlines() if not ln.startswith("%")))
    return re.findall(r"(?<!\\)[_%&]", text.replace(" & ", " "))


def test_latex_escapes_and_bolds(tiny_run, tmp_path):
    """A stage folder with an underscore and a recorded lambda_adv of 0: the LaTeX escapes both, the
    name says λ_adv=0, and the best non-oracle mIoU is bold."""
    from pipeline.stages.report import build_report
    from pipeline.stages.report.tables import latex_escape
    _, _, run = tiny_run
    other = tmp_path / "r"
    for s in STAGES:
        shutil.copytree(run / s, other / ("adapt-my_tag" if s == "adapt" else s))
    man = json.loads((other / "adapt-my_tag/manifest.json").read_text())
    man["config"]["lambda_adv"] = 0.0
    (other / "adapt-my_tag/manifest.json").write_text(json.dumps(man))
    res = build_report(other, None, panel_images=0)
    assert [r["method"] for r in res["ablation"]] == ["FCN", "PHFA (λ_adv=0)", "oracle"]
    for name in ("table2-per-class-iou", "table4-ablation"):
        tex = (other / f"report/tables/{name}.tex").read_text()
        assert r"\texttt{adapt-my\_tag}" in tex and r"PHFA ($\lambda_{\mathrm{adv}}$=0)" in tex
        assert _unescaped(tex) == [], name
    assert _unescaped(latex_escape("a_b 50% R&D")) == [] and _unescaped("a_b") == ["_"]  # the check can fail
    t4 = (other / "report/tables/table4-ablation.tex").read_text()
    mious = {s: _miou(run, s) for s in ("adapt-noadv-nohier", "adapt")}
    best = max(mious.values())
    if mious["adapt"] != mious["adapt-noadv-nohier"]:
        assert rf"\textbf{{{best:.2f}}}" in t4
        worse = min(mious.values())
        assert rf"\textbf{{{worse:.2f}}}" not in t4


def _fake_stage(run, name, sources, style="raw", phases=(), config=None, from_stage=None):
    d = run / name
    d.mkdir(parents=True)
    man = {"stage": name, "status": "finished", "finished": "2026-01-01T00:00:00+00:00", "target": "cityscapes",
           "sources": sources, "source_style": style, "config": config or {"lambda_adv": 0.001},
           "phases": [{"name": f"{i + 1}-{s}", "source": s, "iters": 10, "adversarial": adv, "align": list(al),
                       "target_labels": name.startswith("retrain")} for i, (s, adv, al) in enumerate(phases)]}
    if from_stage:
        man["from_stage"] = from_stage
    d.joinpath("manifest.json").write_text(json.dumps(man))


def test_method_names_follow_role_and_settings(tmp_path):
    """Every name from the manifests alone: folder names are deliberately unrelated."""
    from pipeline.runtime.runindex import RunIndex
    from pipeline.stages.report.methods import method_name
    run = tmp_path / "run"
    ALL = ("object", "category", "background")
    one = lambda adv, al=(): [("gta5", adv, al)]  # noqa: E731
    prog = lambda al=ALL: [("unity", True, ()), ("gta5", True, al)]  # noqa: E731
    expect = {
        "adapt-a": ("FCN", ["gta5"], "raw", one(False)),
        "adapt-b": ("oracle", ["cityscapes"], "raw", [("cityscapes", False, ())]),
        "adapt-c": ("+AA", ["gta5"], "raw", one(True)),
        "adapt-d": ("+AA (λ_adv=0)", ["gta5"], "raw", one(True), {"lambda_adv": 0}),
        "adapt-e": ("+IT", ["gta5"], "translated", one(True)),
        "adapt-f": ("PHFA", ["unity", "gta5"], "raw", prog()),
        "adapt-g": ("PHFA +IT", ["unity", "gta5"], "translated", prog()),
        "adapt-h": ("+AA +HFA", ["gta5"], "raw", one(True, ALL)),
        "adapt-i": ("FCN +IT", ["gta5"], "translated", one(False)),
        "adapt-j": ("+AA +HFA (HFA: obj+bg, progressive)", ["unity", "gta5"], "raw",
                    prog(("object", "background"))),
        "adapt-k": ("PHFA +FDA (λ_back=0)", ["unity", "gta5"], "fda", prog(), {"lambda_adv": 0.01, "lambda_back": 0}),
        "adapt-l": ("FCN (progressive)", ["unity", "gta5"], "raw", [("unity", False, ()), ("gta5", False, ())]),
        "retrain-x": ("+SG", ["gta5"], "translated", one(True), None, "adapt-e"),
        "retrain-y": ("full", ["unity", "gta5"], "translated", prog(), None, "adapt-g"),
        "retrain-z": ("full (round 2)", ["unity", "gta5"], "translated", prog(), None, "retrain-y"),
        "retrain-w": ("PHFA +SG", ["unity", "gta5"], "raw", prog(), None, "adapt-f"),
        "retrain-v": ("+AA +SG", ["gta5"], "raw", one(True), None, "adapt-c"),
    }
    for name, (_, sources, style, phases, *rest) in expect.items():
        cfg, frm = (rest + [None, None])[:2]
        _fake_stage(run, name, sources, style, phases, cfg, frm)
    _fake_translate(run / "translate-gta5")
    idx = RunIndex(run)
    got = {n: method_name(idx.entries[n], idx.role(n), idx.round(n)) for n in expect}
    assert got == {n: v[0] for n, v in expect.items()}
    assert method_name(idx.entries["translate-gta5"], idx.role("translate-gta5")) is None


def test_loss_panels_have_human_names(tiny_run, tiny_report):
    from pipeline.stages.report.content import read_jsonl
    from pipeline.stages.report.figures import LOSS_LABELS, curve_series, loss_panels, panel_title
    run, out, _ = tiny_report
    rows = read_jsonl(run / "adapt/metrics.jsonl")
    phases = json.loads((run / "adapt/manifest.json").read_text())["phases"]
    series, bounds = curve_series(rows + [{"phase": phases[-1]["name"], "iter": 1, "new_key": 1.0}], phases)
    assert {"seg", "adv", "obj", "class", "back", "d", "lr"} <= set(series)
    fig = loss_panels("t", series, bounds)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "source segmentation (Eq. 10)"
    assert sorted(titles) == sorted(LOSS_LABELS[k] if k in LOSS_LABELS else k for k in series)
    assert not set(titles) & (set(series) - {"new_key"})       # known keys: never the raw key
    assert "new_key" in titles and panel_title("new_key") == "new_key"  # unknown keys: the key itself
    for ax in fig.axes:
        assert ax.get_xlabel() == "global iteration"
        assert ax.get_ylabel() == ("learning rate" if ax.get_title() == "learning rate" else "loss value")
    # the written figure holds the same titles (the SVG keeps each text as a comment beside its glyphs)
    svg = (out / "figures/curves-adapt.svg").read_text()
    assert "object alignment (Eq. 1)" in svg and "<!-- obj -->" not in svg and "<!-- seg -->" not in svg
