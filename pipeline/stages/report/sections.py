"""The report's sections, each built as data (tables, paragraphs, figures) from the run's stages."""
from __future__ import annotations

from pathlib import Path

from pipeline import __version__
from pipeline import classes as C
from pipeline.data import pngio
from pipeline.data.dataconfig import DataConfig
from pipeline.errors import PhfaError
from pipeline.runtime import layout
from pipeline.runtime.atomic import write_bytes
from pipeline.runtime.progress import Reporter
from pipeline.runtime.run import StageDir
from pipeline.stages.report.content import (Cell, Figure, Para, Section, Stage, Table, fmt_num, fmt_pct, read_json,
                                            read_jsonl, safe_name)
from pipeline.stages.report.figures import curve_series, iou_bars, loss_figure, panel_figure, svg_of_png
from pipeline.stages.report.tables import TICK, per_class_values

ALIGN_SHORT = {"object": "obj", "category": "cat", "background": "bg"}
PSEUDO_PREVIEWS = 4


def header_section(run: Path, stages: list[Stage], generated: str) -> Section:
    sec = Section("header", "Run")
    sec.blocks.append(Para(f"run: `{run}` · generated: {generated} · phfa {__version__}"))
    rows, keys = [], []
    for s in stages:
        rows.append([Cell(s.method or "—"), Cell(s.name), Cell(s.kind), Cell(s.status),
                     Cell(str(s.manifest.get("finished") or "—")),
                     Cell(fmt_num(s.miou, ".2f") if s.metrics else "—")])
        keys.append(s.name)
    sec.blocks.append(Table(["method", "stage", "kind", "status", "finished", "target val mIoU"], rows, id="stages",
                            keys=keys))
    sec.blocks.append(Para("method: the paper's row name, from each stage's role and recorded settings (FCN: "
                           "source-only; +AA, +IT, +SG: the paper's cumulative rows; PHFA: adversarial with every "
                           "hierarchy level over progressive sources; full: PHFA + IT + SG)", "note"))
    return sec


def per_class_section(evaluated: list[Stage], run: Path) -> Section:
    sec = Section("per-class", "Per-class IoU % on the target val split (Table II)")
    if not evaluated:
        sec.blocks.append(Para(f"no evaluated training stage: run `phfa adapt --run {run} --sources gta5 "
                               f"--no-adversarial --no-hierarchy` (source-only) and `phfa adapt --run {run} "
                               f"--sources unity,gta5` with a labelled target val split", "note"))
        return sec
    cols = ["class"] + [s.label for s in evaluated]
    rows = []
    for c, vals, bold in per_class_values(evaluated):
        fmt = ".2f" if c == "mIoU" else ".1f"
        rows.append([Cell(f"mIoU ({evaluated[0].metrics.get('classes', 19)})" if c == "mIoU" else c,
                          bold=c == "mIoU")]
                    + [Cell(fmt_num(v, fmt), bold=b) for v, b in zip(vals, bold)])
    rows.append([Cell("pixel acc.")] + [Cell(fmt_num(s.metrics.get("pixel_acc"), ".2f")) for s in evaluated])
    sec.blocks.append(Table(cols, rows, id="per-class-table", keys=list(C.CLASS_NAMES) + ["miou", "pixel_acc"]))
    sec.blocks.append(Para("bold: the best value of each row among the non-oracle stages.", "note"))
    return sec


def ablation_section(evaluated: list[Stage], src: Stage | None, oracle: Stage | None, run: Path) -> tuple[Section, list]:
    sec = Section("ablation", "Ablation (Table IV)")
    data: list[dict] = []
    if not evaluated:
        sec.blocks.append(Para(f"no evaluated training stage: run `phfa adapt --run {run} --sources unity,gta5`",
                               "note"))
        return sec, data
    base = src.miou if src is not None else None
    top = oracle.miou if oracle is not None else None
    rows, keys = [], []
    tick = TICK
    best = max((s.miou for s in evaluated if s.role != "oracle"), default=None)
    for s in evaluated:
        share = None
        if base is not None and top is not None and top != base:
            share = (s.miou - base) / (top - base)
        is_or = s.role == "oracle"
        it = {"translated": tick, "fda": "FDA"}.get(s.style, "")
        comps = {"AA": tick if s.adversarial else "", "IT": it, "progressive": tick if len(s.sources) > 1 else "",
                 "HFA": "+".join(ALIGN_SHORT.get(a, a) for a in s.align), "SG": tick if s.kind == "retrain" else ""}
        delta = None if base is None else s.miou - base
        data.append({"method": s.method, "stage": s.name, "role": s.role, **comps, "miou": s.miou, "delta": delta,
                     "gap_share": share, "best": not is_or and s.miou == best})
        rows.append([Cell(s.method or "—"), Cell(s.name)]
                    + [Cell("—" if is_or else v) for v in comps.values()]
                    + [Cell(f"{s.miou:.2f}", bold=not is_or and s.miou == best),
                       Cell("—" if delta is None else f"{delta:+.2f}"),
                       Cell("—" if share is None else f"{100 * share:.1f} %")])
        keys.append(s.name)
    sec.blocks.append(Table(["method", "stage", "AA", "IT", "progressive", "HFA", "SG", "mIoU", "Δ vs source-only",
                             "oracle gap recovered"], rows, id="ablation-table", keys=keys))
    sec.blocks.append(Para("AA: output-space adversarial alignment in some phase; IT: image translation "
                           "(CycleGAN-translated sources; FDA: Fourier domain adaptation); progressive: more than "
                           "one source, trained in order; HFA: hierarchy levels aligned (obj: object, cat: "
                           "category, bg: background); SG: self-guided retraining on pseudo-labels. "
                           "Oracle gap recovered = (mIoU − source-only) / (oracle − source-only).", "note"))
    if src is None:
        sec.blocks.append(Para(f"no source-only stage, so no deltas: run `phfa adapt --run {run} --sources gta5 "
                               "--no-adversarial --no-hierarchy`", "note"))
    if oracle is None:
        sec.blocks.append(Para(f"no oracle stage, so no oracle-gap share: run `phfa adapt --run {run} --sources "
                               "cityscapes --no-adversarial --no-hierarchy --tag oracle` (or pass `--oracle "
                               "STAGE_DIR`)", "note"))
    elif oracle.external:
        sec.blocks.append(Para(f"oracle: `{oracle.path}` (given with --oracle)", "note"))
    return sec, data


def bars_section(evaluated: list[Stage], fig_dir: Path) -> Section:
    sec = Section("iou-bars", "Per-class IoU bars")
    if not evaluated:
        sec.blocks.append(Para("no evaluated training stage (see the tables above)", "note"))
        return sec
    sec.blocks.append(Figure(iou_bars(evaluated, fig_dir / "iou-bars.png"),
                             "per-class IoU % on the target val split, one bar per stage (hatched: oracle)"))
    return sec


def panel_section(run: Path, data: DataConfig | None, src: Stage | None, final: Stage | None, n: int,
           fig_dir: Path, reporter: Reporter | None) -> Section:
    sec = Section("panel", "Qualitative results (Fig. 2)")
    if n <= 0:
        sec.blocks.append(Para("panel skipped: --panel-images 0", "note"))
        return sec
    if data is None:
        sec.blocks.append(Para(f"no data config, so no panel: run `phfa report --run {run} --config "
                               "phfa-data.toml`", "note"))
        return sec
    if src is None or not (src.path / layout.FINAL).is_file():
        sec.blocks.append(Para(f"no source-only stage, so no panel: run `phfa adapt --run {run} --sources gta5 "
                               "--no-adversarial --no-hierarchy`", "note"))
        return sec
    if final is None:
        sec.blocks.append(Para(f"no adapted stage, so no panel: run `phfa adapt --run {run} --sources unity,gta5`",
                               "note"))
        return sec
    target = final.manifest.get("target") or src.manifest.get("target")
    if not target or target not in data.domains:
        sec.blocks.append(Para(f"the data config {data.path} has no domain '{target}' (the stages' target): "
                               "pass the run's `--config`", "note"))
        return sec
    from pipeline.data import datasets
    from pipeline.models.segmentor import load_segmentor
    from pipeline.config import from_dict
    spec = data.domain(target)
    try:
        items = sorted(datasets.samples(spec, "val"), key=lambda s: s.name)[:n]
    except PhfaError as e:
        items, why = [], str(e)
    else:
        why = f"{target}/val has no images"
    if not items:
        sec.blocks.append(Para(f"no panel: {why}", "note"))
        return sec
    try:
        models = []
        for title, st in ((src.label, src), (f"final: {final.label}", final)):
            model, ck = load_segmentor(StageDir(st.path.parent, st.name).model("--run"), "--run",
                                       expect_classes=C.NUM_CLASSES)
            model.eval()
            models.append((title, model, tuple(from_dict(ck["config"]).target_size)))
        path = panel_figure(spec, items, models, fig_dir / "panel.png", reporter)
    except PhfaError as e:  # a damaged checkpoint or image costs the panel, not the report
        sec.blocks.append(Para(f"no panel: {e}", "note"))
        return sec
    sec.blocks.append(Figure(path, f"{len(items)} {target} val images (first by name): image | ground truth | "
                                   f"source-only: {src.label} | final: {final.label}"))
    return sec


def curves_section(stages: list[Stage], fig_dir: Path, run: Path) -> Section:
    sec = Section("curves", "Loss curves")
    any_fig = False
    for s in stages:
        if s.external or s.kind not in ("adapt", "retrain", "translate"):
            continue
        rows = read_jsonl(s.path / layout.METRIC_ROWS)
        if not rows:
            continue
        series, bounds = curve_series(rows, s.phases if s.kind != "translate" else [])
        if not series:
            continue
        what = "CycleGAN losses" if s.kind == "translate" else "training losses"
        title = f"{s.label}: {what}" + ("" if s.finished else f" ({s.status})")
        p = loss_figure(title, series, bounds, fig_dir / f"curves-{safe_name(s.name)}.png")
        sec.blocks.append(Figure(p, title + (" — x: global iteration across phases, dashed: phase boundaries"
                                             if len(bounds) > 1 else "")))
        any_fig = True
    if not any_fig:
        sec.blocks.append(Para(f"no metrics.jsonl in any stage: run `phfa adapt --run {run} --sources unity,gta5`",
                               "note"))
    return sec


def _copy_png(src: Path, dst: Path) -> Path | None:
    """Copy a preview PNG (and write an SVG holding it beside the copy); None when it is no PNG."""
    try:
        data = src.read_bytes()
        w, h = pngio.image_size(src)
    except (OSError, PhfaError):
        return None
    if not data.startswith(b"\x89PNG"):
        return None
    write_bytes(dst, data)
    write_bytes(dst.with_suffix(".svg"), svg_of_png(data, w, h))
    return dst


def selfguidance_section(stages: list[Stage], fig_dir: Path, run: Path) -> Section:
    sec = Section("selfguidance", "Self-guidance: pseudo-labels (Eq. 8)")
    pls = [s for s in stages if s.kind == "pseudolabel" and not s.external]
    found = False
    for s in pls:
        th = read_json(s.path / "thresholds.json")
        if th is None or not isinstance(th.get("classes"), dict):
            continue
        found = True
        sec.blocks.append(Para(f"**{s.name}** ({s.status}): {th.get('images', '?')} images labelled by "
                               f"`{th.get('from_stage', '?')}`; threshold_c = min({th.get('cap', 0.9)}, median "
                               "confidence of the pixels predicted c)"))
        rows = []
        tot_pred = tot_kept = 0
        for name in C.CLASS_NAMES:
            r = th["classes"].get(name)
            if not isinstance(r, dict):
                rows.append([Cell(name), Cell("—"), Cell("—"), Cell("—"), Cell("—")])
                continue
            pp, kp = r.get("predicted_pixels"), r.get("kept_pixels")
            tot_pred += pp if isinstance(pp, int) else 0
            tot_kept += kp if isinstance(kp, int) else 0
            rows.append([Cell(name), Cell(fmt_num(r.get("threshold"), ".4f")), Cell(fmt_num(pp, "d")),
                         Cell(fmt_num(kp, "d")), Cell(fmt_pct(r.get("kept_share")))])
        share = th.get("kept_share", tot_kept / tot_pred if tot_pred else None)
        rows.append([Cell("all", True), Cell(""), Cell(str(tot_pred), True), Cell(str(tot_kept), True),
                     Cell(fmt_pct(share), True)])
        sec.blocks.append(Table(["class", "threshold", "predicted px", "kept px", "kept %"], rows,
                                id=f"thresholds-{safe_name(s.name)}", keys=list(C.CLASS_NAMES) + ["all"]))
        diag = read_json(s.path / "diagnostic.json")
        if diag is not None and isinstance(diag.get("classes"), dict):
            sec.blocks.append(Para("DIAGNOSTIC ONLY — precision and coverage of these pseudo-labels against the "
                                   "target's ground truth, which adaptation never uses", "warn"))
            drows = []
            for name in C.CLASS_NAMES:
                d = diag["classes"].get(name) if isinstance(diag["classes"].get(name), dict) else {}
                drows.append([Cell(name), Cell(fmt_pct(d.get("precision"))), Cell(fmt_pct(d.get("coverage")))])
            drows.append([Cell("all", True), Cell(fmt_pct(diag.get("precision")), True),
                          Cell(fmt_pct(diag.get("coverage")), True)])
            sec.blocks.append(Table(["class", "precision % (diagnostic)", "coverage % (diagnostic)"], drows,
                                    id=f"diagnostic-{safe_name(s.name)}", keys=list(C.CLASS_NAMES) + ["all"],
                                    caption="diagnostic only, never used for adaptation"))
        previews = sorted((s.path / "preview").glob("*.png"))[:PSEUDO_PREVIEWS] \
            if (s.path / "preview").is_dir() else []
        for p in previews:
            c = _copy_png(p, fig_dir / f"{safe_name(s.name)}-{safe_name(p.stem)}.png")
            if c is not None:
                sec.blocks.append(Figure(c, f"{s.name}: {p.stem} — image | pseudo-label (black: ignored)", 512))
    if not found:
        sec.blocks.append(Para(f"no pseudolabel stage: run `phfa pseudolabel --run {run}`", "note"))
    return sec


def translation_section(stages: list[Stage], fig_dir: Path, run: Path) -> Section:
    sec = Section("translation", "Image translation (Eq. 7)")
    found = False
    for s in stages:
        if s.kind != "translate" or s.external:
            continue
        prev = sorted(s.path.glob("preview-*.png"))
        if not prev:
            continue
        c = _copy_png(prev[-1], fig_dir / f"{safe_name(s.name)}-{prev[-1].stem}.png")
        if c is None:
            continue
        found = True
        sec.blocks.append(Figure(c, f"{s.name} ({s.status}), {prev[-1].name}: source | translated | target",
                                 768))
    if not found:
        sec.blocks.append(Para(f"no translate stage: run `phfa translate --run {run} --source gta5`", "note"))
    return sec


