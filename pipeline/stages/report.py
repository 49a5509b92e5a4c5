"""`phfa report`: one self-contained HTML page (and a Markdown twin) summarising a run.

Everything is read from what the stages left in RUN/ (manifests, metrics.json, metrics.jsonl,
previews, thresholds.json, diagnostic.json); only the Fig. 2-style panel runs inference, with
the final.pt of the source-only and the final stage on a few target val images. Sections:

    header              run, date, phfa version, every stage found (status, finished time)
    Table II            per-class IoU of every evaluated training stage side by side
    Table IV            ablation: components of each stage, mIoU, delta vs source-only,
                        share of the oracle gap recovered
    IoU bars            per-class IoU, one group per class, one bar per stage
    Fig. 2 panel        image | ground truth | source-only | final, for N target val images
    loss curves         metrics.jsonl of each training stage (x: global iteration, phase
                        boundaries marked) and the CycleGAN losses of translate stages
    self-guidance       pseudo-label thresholds and kept shares (Eq. 8), the diagnostic
                        against ground truth (never used for adaptation), previews
    translation         the last preview of each translate stage

Outputs in RUN/report/ (or `out`): index.html (every image embedded as a data: URI, inline
CSS, opens from disk with no server), report.md and the PNG figures it links (figures/).
A section whose inputs are absent is replaced by one line naming the command that makes them.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import __version__
from pipeline import classes as C
from pipeline.data import pngio
from pipeline.data.dataconfig import DataConfig, load_data_config
from pipeline.errors import PhfaError
from pipeline.runtime import layout
from pipeline.runtime.atomic import write_bytes, write_text
from pipeline.runtime.progress import Reporter
from pipeline.runtime.run import StageDir
from pipeline.runtime.runindex import Entry, RunIndex
from pipeline.stages.outdir import dataset_roots, open_out
from pipeline.textfiles import read_text

ALIGN_SHORT = {"object": "obj", "category": "cat", "background": "bg"}
PSEUDO_PREVIEWS = 4
_FIG_DPI = 100


# ----------------------------------------------------------------------------- reading the run


@dataclass
class Stage:
    """One stage folder of the run (or the external oracle), as the report sees it: the run
    index's entry, its metrics.json and the role the report labels it with."""
    entry: Entry
    metrics: dict | None = None          # metrics.json (target val), training stages only
    external: bool = False               # given with --oracle, outside the run
    role: str = ""                       # source-only | oracle | "" (from the run index)

    name = property(lambda self: self.entry.name)
    path = property(lambda self: self.entry.path)
    manifest = property(lambda self: self.entry.manifest)
    finished = property(lambda self: self.entry.finished)
    phases = property(lambda self: self.entry.phases)
    adversarial = property(lambda self: self.entry.adversarial)
    align = property(lambda self: self.entry.align)
    sources = property(lambda self: self.entry.sources)
    style = property(lambda self: self.entry.style)

    @property
    def kind(self) -> str:
        return "adapt" if self.external else self.entry.kind

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "unknown"))

    @property
    def miou(self) -> float | None:
        v = (self.metrics or {}).get("miou")
        return float(v) if isinstance(v, (int, float)) else None


def _read_json(path: Path) -> dict | None:
    try:
        v = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return v if isinstance(v, dict) else None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a line cut by kill -9, or damaged (not UTF-8 JSON)
        if isinstance(r, dict):
            rows.append(r)
    return rows


def _evaluation(path: Path) -> dict | None:
    m = _read_json(path / layout.METRICS)
    return m if m is not None and isinstance(m.get("iou"), dict) and isinstance(m.get("miou"), (int, float)) else None


def find_stages(index: RunIndex) -> list[Stage]:
    """Every stage of the run index (report/ and hidden folders aside), with its evaluation."""
    out = []
    for e in index.entries.values():
        st = Stage(e)
        if e.kind in ("adapt", "retrain") and e.finished:
            st.metrics = _evaluation(e.path)
        out.append(st)
    return out


def external_oracle(path: Path) -> Stage:
    """The stage folder given with --oracle (its metrics.json; its manifest when there is one)."""
    path = Path(path)
    if path.is_file() and path.name == layout.METRICS:
        path = path.parent
    m = _evaluation(path) if path.is_dir() else None
    if m is None:
        raise PhfaError(f"--oracle: {path} is not a stage folder with a metrics.json (e.g. runs/other/adapt-oracle)")
    man = _read_json(path / layout.MANIFEST) or {"status": "finished"}
    name = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    return Stage(Entry(name, path, man), metrics=m, external=True, role="oracle")


def classify(index: RunIndex, evaluated: list[Stage], oracle: Stage | None) -> tuple[list[Stage], Stage | None,
                                                                                   Stage | None]:
    """(evaluated stages in the index's table order, the source-only stage, the oracle the gap is
    measured to: --oracle, else the run's own)."""
    src_name = index.source_only()
    for s in evaluated:
        s.role = "oracle" if index.role(s.name) == "oracle" else "source-only" if s.name == src_name else ""
    src = next((s for s in evaluated if s.name == src_name), None)
    if oracle is None:
        inside = [s for s in evaluated if s.role == "oracle"]
        oracle = max(inside, key=lambda s: (s.entry.finished_at, s.name)) if inside else None
    ordered = sorted(evaluated, key=lambda s: index.order_key(s.name))
    return ordered + ([oracle] if oracle is not None and oracle.external else []), src, oracle


def resolve_data_config(run: Path, config: Path | None) -> DataConfig | None:
    """`config` when given (errors as usual); else ./phfa-data.toml, else the data config a stage
    manifest recorded; None when none exists (the report then skips the panel)."""
    if config is not None:
        return load_data_config(config)
    cands = [Path("phfa-data.toml")]
    if Path(run).is_dir():
        for st in find_stages(RunIndex(run)):
            p = (st.manifest.get("inputs") or {}).get("data_config") if isinstance(st.manifest.get("inputs"), dict) \
                else None
            if p:
                cands.append(Path(p))
    for c in cands:
        if c.is_file():
            try:
                return load_data_config(c)
            except PhfaError:
                continue
    return None


# ----------------------------------------------------------------------------- the document model


@dataclass
class Cell:
    text: str
    bold: bool = False


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    id: str | None = None
    keys: list[str] | None = None        # data-stage of each row (HTML)
    caption: str | None = None


@dataclass
class Para:
    text: str                            # `code` spans become <code>
    cls: str | None = None               # note | warn


@dataclass
class Figure:
    path: Path
    caption: str
    min_width: int = 0                   # small previews are shown enlarged (integer factor, pixelated)


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)


def _pct(v, digits: int = 1) -> str:
    return "—" if not isinstance(v, (int, float)) or math.isnan(v) else f"{100 * v:.{digits}f}"


def _num(v, fmt: str) -> str:
    return "—" if not isinstance(v, (int, float)) or math.isnan(v) else format(v, fmt)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name).strip("_") or "x"


# ----------------------------------------------------------------------------- figures


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure
    fig = MplFigure(figsize=(w, h), dpi=_FIG_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_FIG_DPI, bbox_inches="tight", metadata={"Software": None})
    write_bytes(path, buf.getvalue())
    return path


def _finite(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def curve_series(rows: list[dict], phases: list[dict]) -> tuple[dict[str, tuple[list, list]], list[tuple[int, str]]]:
    """{loss key: (global iterations, values)} and [(global start, phase name)] of the phases.

    A row's iteration counts within its phase; the global one adds the iterations of the phases
    before it (from the manifest, else the last iteration logged in them)."""
    offsets: dict[str | None, int] = {}
    total = 0
    for p in phases:
        if p.get("name") is not None and p.get("name") not in offsets:
            offsets[p["name"]] = total
            total += int(p.get("iters") or 0)
    seen_max: dict[str | None, int] = {}
    series: dict[str, tuple[list, list]] = {}
    bounds: list[tuple[int, str]] = []
    for r in rows:
        ph = r.get("phase")
        it = _finite(r.get("iter"))
        if it is None:
            continue
        if ph not in offsets:  # a phase the manifest does not list: after everything seen so far
            offsets[ph] = max([total] + [offsets[k] + v for k, v in seen_max.items()])
        seen_max[ph] = max(seen_max.get(ph, 0), int(it))
        x = offsets[ph] + it
        for k, v in r.items():
            if k in ("phase", "iter"):
                continue
            v = _finite(v)
            if v is None:
                continue
            xs, ys = series.setdefault(k, ([], []))
            xs.append(x)
            ys.append(v)
    if any(k is not None for k in seen_max):
        bounds = sorted((off, str(name)) for name, off in offsets.items() if name is not None and name in seen_max)
    return series, bounds


def loss_figure(title: str, series: dict, bounds: list[tuple[int, str]], path: Path) -> Path:
    keys = list(series)
    ncols = min(4, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = _figure(3.0 * ncols, 2.1 * nrows + 0.5)
    if len(bounds) > 1:
        ends = [b[0] for b in bounds[1:]] + [max(max(xs) for xs, _ in series.values())]
        title += "\nphases: " + ", ".join(f"{name} ({x0:g}-{x1:g})" for (x0, name), x1 in zip(bounds, ends))
    fig.suptitle(title, fontsize=10)
    first = None
    few = max(len(xs) for xs, _ in series.values()) < 30
    for i, k in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, i + 1, sharex=first)
        first = first or ax
        xs, ys = series[k]
        ax.plot(xs, ys, lw=1.2, color=f"C{i % 10}", marker="o" if few else None, ms=3)
        ax.set_title(k, fontsize=9)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        for x0, _ in bounds[1:]:
            ax.axvline(x0, color="0.5", ls="--", lw=0.8)
        if i >= len(keys) - ncols:
            ax.set_xlabel("global iteration" if bounds else "iteration", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def iou_bars(stages: list[Stage], path: Path) -> Path:
    n = len(stages)
    width = 0.8 / max(n, 1)
    fig = _figure(max(10.0, 0.5 * len(C.CLASS_NAMES) * max(1.0, n / 3)), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(C.CLASS_NAMES))
    for j, s in enumerate(stages):
        vals = [_finite(s.metrics["iou"].get(c)) for c in C.CLASS_NAMES]
        xs = [x[i] - 0.4 + width * (j + 0.5) for i, v in enumerate(vals) if v is not None]
        ys = [v for v in vals if v is not None]
        label = s.name + (f" ({s.role})" if s.role else "") + f": mIoU {s.miou:.2f}"
        ax.bar(xs, ys, width=width, label=label, color=f"C{j % 10}",
               hatch="//" if s.role == "oracle" else None, edgecolor="white" if s.role != "oracle" else "0.3",
               linewidth=0.3)
    ax.set_xticks(x)
    ax.set_xticklabels(C.CLASS_NAMES, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("IoU %")
    ax.set_xlim(-0.6, len(C.CLASS_NAMES) - 0.4)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(3, n), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _fit(img: np.ndarray, max_w: int = 512) -> np.ndarray:
    from PIL import Image
    h, w = img.shape[:2]
    if w <= max_w:
        return img
    nh = max(1, round(h * max_w / w))
    return np.asarray(Image.fromarray(img).resize((max_w, nh), Image.NEAREST))


def panel_figure(spec, items, models: list[tuple[str, object, tuple[int, int]]], path: Path,
                 reporter: Reporter | None) -> Path:
    """Rows: image | ground truth | prediction of each model, colourised (Fig. 2 style)."""
    import torch

    from pipeline.data import datasets
    from pipeline.data.transforms import to_tensor
    from pipeline.inference import predict_logits

    cols = ["image", "ground truth"] + [t for t, _, _ in models]
    rows, present = [], set()
    if reporter is not None:
        reporter.phase("report: panel", 0, len(items))
    for i, s in enumerate(items):
        img, gt = datasets.load_pair(spec, s, None, with_label=s.label is not None)
        h, w = img.shape[:2]
        cells = [_fit(img)]
        if gt is not None:
            present.update(int(c) for c in np.unique(gt) if c != C.IGNORE)
            cells.append(_fit(C.colorize(gt)))
        else:
            cells.append(None)
        for _, model, size in models:
            x = to_tensor(datasets.load_pair(spec, s, size, with_label=False)[0])[None]
            with torch.no_grad():
                pred = predict_logits(model, x, (h, w)).argmax(1)[0].to(torch.uint8).numpy()
            present.update(int(c) for c in np.unique(pred))
            cells.append(_fit(C.colorize(pred)))
        rows.append((s.name, cells))
        if reporter is not None:
            reporter.step(i + 1)
    ch, cw = rows[0][1][0].shape[:2]
    cell_w = 2.6
    fig = _figure(cell_w * len(cols), cell_w * ch / cw * len(rows) + 1.0)
    for r, (name, cells) in enumerate(rows):
        for c, im in enumerate(cells):
            ax = fig.add_subplot(len(rows), len(cols), r * len(cols) + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if im is None:
                ax.text(0.5, 0.5, "no label", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            else:
                ax.imshow(im, interpolation="nearest")
            if r == 0:
                ax.set_title(cols[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=6)
    from matplotlib.patches import Patch
    handles = [Patch(color=np.asarray(C.PALETTE[c]) / 255, label=C.CLASS_NAMES[c]) for c in sorted(present)
               if c < len(C.CLASS_NAMES)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(10, len(handles)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    return _save(fig, path)


# ----------------------------------------------------------------------------- sections


def _header(run: Path, stages: list[Stage], generated: str) -> Section:
    sec = Section("header", "Run")
    sec.blocks.append(Para(f"run: `{run}` · generated: {generated} · phfa {__version__}"))
    rows, keys = [], []
    for s in stages:
        rows.append([Cell(s.name), Cell(s.kind), Cell(s.status), Cell(str(s.manifest.get("finished") or "—")),
                     Cell(_num(s.miou, ".2f") if s.metrics else "—")])
        keys.append(s.name)
    sec.blocks.append(Table(["stage", "kind", "status", "finished", "target val mIoU"], rows, id="stages",
                            keys=keys))
    return sec


def _per_class(evaluated: list[Stage], run: Path) -> Section:
    sec = Section("per-class", "Per-class IoU % on the target val split (Table II)")
    if not evaluated:
        sec.blocks.append(Para(f"no evaluated training stage: run `phfa adapt --run {run} --sources gta5 "
                               f"--no-adversarial --no-hierarchy` (source-only) and `phfa adapt --run {run} "
                               f"--sources unity,gta5` with a labelled target val split", "note"))
        return sec
    cols = ["class"] + [s.name + (f" ({s.role})" if s.role else "") for s in evaluated]
    rows = []
    for c in list(C.CLASS_NAMES) + ["mIoU"]:
        vals = [(s.miou if c == "mIoU" else _finite(s.metrics["iou"].get(c))) for s in evaluated]
        pool = [v for v, s in zip(vals, evaluated) if v is not None and s.role != "oracle"]
        best = max(pool) if len(pool) > 1 and max(pool) > 0 else None  # no bold for ties at 0
        fmt = ".2f" if c == "mIoU" else ".1f"
        rows.append([Cell(f"mIoU ({evaluated[0].metrics.get('classes', 19)})" if c == "mIoU" else c,
                          bold=c == "mIoU")]
                    + [Cell(_num(v, fmt), bold=v is not None and best is not None and v == best and s.role != "oracle")
                       for v, s in zip(vals, evaluated)])
    rows.append([Cell("pixel acc.")] + [Cell(_num(s.metrics.get("pixel_acc"), ".2f")) for s in evaluated])
    sec.blocks.append(Table(cols, rows, id="per-class-table", keys=list(C.CLASS_NAMES) + ["miou", "pixel_acc"]))
    sec.blocks.append(Para("bold: the best value of each row among the non-oracle stages.", "note"))
    return sec


def _ablation(evaluated: list[Stage], src: Stage | None, oracle: Stage | None, run: Path) -> tuple[Section, list]:
    sec = Section("ablation", "Ablation (Table IV)")
    data: list[dict] = []
    if not evaluated:
        sec.blocks.append(Para(f"no evaluated training stage: run `phfa adapt --run {run} --sources unity,gta5`",
                               "note"))
        return sec, data
    base = src.miou if src is not None else None
    top = oracle.miou if oracle is not None else None
    rows, keys = [], []
    tick = "✓"
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
        data.append({"stage": s.name, "role": s.role, **comps, "miou": s.miou, "delta": delta, "gap_share": share})
        rows.append([Cell(s.name + (f" ({s.role})" if s.role else ""))]
                    + [Cell("—" if is_or else v) for v in comps.values()]
                    + [Cell(f"{s.miou:.2f}", bold=not is_or and s.miou == best),
                       Cell("—" if delta is None else f"{delta:+.2f}"),
                       Cell("—" if share is None else f"{100 * share:.1f} %")])
        keys.append(s.name)
    sec.blocks.append(Table(["stage", "AA", "IT", "progressive", "HFA", "SG", "mIoU", "Δ vs source-only",
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


def _bars(evaluated: list[Stage], fig_dir: Path) -> Section:
    sec = Section("iou-bars", "Per-class IoU bars")
    if not evaluated:
        sec.blocks.append(Para("no evaluated training stage (see the tables above)", "note"))
        return sec
    sec.blocks.append(Figure(iou_bars(evaluated, fig_dir / "iou-bars.png"),
                             "per-class IoU % on the target val split, one bar per stage (hatched: oracle)"))
    return sec


def _panel(run: Path, data: DataConfig | None, src: Stage | None, final: Stage | None, n: int,
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
        for role, st in (("source-only", src), ("final", final)):
            model, ck = load_segmentor(StageDir(st.path.parent, st.name).model("--run"), "--run",
                                       expect_classes=C.NUM_CLASSES)
            model.eval()
            models.append((f"{role}: {st.name}", model, tuple(from_dict(ck["config"]).target_size)))
        path = panel_figure(spec, items, models, fig_dir / "panel.png", reporter)
    except PhfaError as e:  # a damaged checkpoint or image costs the panel, not the report
        sec.blocks.append(Para(f"no panel: {e}", "note"))
        return sec
    sec.blocks.append(Figure(path, f"{len(items)} {target} val images (first by name): image | ground truth | "
                                   f"source-only ({src.name}) | final ({final.name})"))
    return sec


def _curves(stages: list[Stage], fig_dir: Path, run: Path) -> Section:
    sec = Section("curves", "Loss curves")
    any_fig = False
    for s in stages:
        if s.external or s.kind not in ("adapt", "retrain", "translate"):
            continue
        rows = _read_jsonl(s.path / layout.METRIC_ROWS)
        if not rows:
            continue
        series, bounds = curve_series(rows, s.phases if s.kind != "translate" else [])
        if not series:
            continue
        what = "CycleGAN losses" if s.kind == "translate" else "training losses"
        title = f"{s.name}: {what}" + ("" if s.finished else f" ({s.status})")
        p = loss_figure(title, series, bounds, fig_dir / f"curves-{_safe(s.name)}.png")
        sec.blocks.append(Figure(p, title + (" — x: global iteration across phases, dashed: phase boundaries"
                                             if len(bounds) > 1 else "")))
        any_fig = True
    if not any_fig:
        sec.blocks.append(Para(f"no metrics.jsonl in any stage: run `phfa adapt --run {run} --sources unity,gta5`",
                               "note"))
    return sec


def _copy_png(src: Path, dst: Path) -> Path | None:
    try:
        data = src.read_bytes()
    except OSError:
        return None
    if not data.startswith(b"\x89PNG"):
        return None
    write_bytes(dst, data)
    return dst


def _selfguidance(stages: list[Stage], fig_dir: Path, run: Path) -> Section:
    sec = Section("selfguidance", "Self-guidance: pseudo-labels (Eq. 8)")
    pls = [s for s in stages if s.kind == "pseudolabel" and not s.external]
    found = False
    for s in pls:
        th = _read_json(s.path / "thresholds.json")
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
            rows.append([Cell(name), Cell(_num(r.get("threshold"), ".4f")), Cell(_num(pp, "d")),
                         Cell(_num(kp, "d")), Cell(_pct(r.get("kept_share")))])
        share = th.get("kept_share", tot_kept / tot_pred if tot_pred else None)
        rows.append([Cell("all", True), Cell(""), Cell(str(tot_pred), True), Cell(str(tot_kept), True),
                     Cell(_pct(share), True)])
        sec.blocks.append(Table(["class", "threshold", "predicted px", "kept px", "kept %"], rows,
                                id=f"thresholds-{_safe(s.name)}", keys=list(C.CLASS_NAMES) + ["all"]))
        diag = _read_json(s.path / "diagnostic.json")
        if diag is not None and isinstance(diag.get("classes"), dict):
            sec.blocks.append(Para("DIAGNOSTIC ONLY — precision and coverage of these pseudo-labels against the "
                                   "target's ground truth, which adaptation never uses", "warn"))
            drows = []
            for name in C.CLASS_NAMES:
                d = diag["classes"].get(name) if isinstance(diag["classes"].get(name), dict) else {}
                drows.append([Cell(name), Cell(_pct(d.get("precision"))), Cell(_pct(d.get("coverage")))])
            drows.append([Cell("all", True), Cell(_pct(diag.get("precision")), True),
                          Cell(_pct(diag.get("coverage")), True)])
            sec.blocks.append(Table(["class", "precision % (diagnostic)", "coverage % (diagnostic)"], drows,
                                    id=f"diagnostic-{_safe(s.name)}", keys=list(C.CLASS_NAMES) + ["all"],
                                    caption="diagnostic only, never used for adaptation"))
        previews = sorted((s.path / "preview").glob("*.png"))[:PSEUDO_PREVIEWS] \
            if (s.path / "preview").is_dir() else []
        for p in previews:
            c = _copy_png(p, fig_dir / f"{_safe(s.name)}-{_safe(p.stem)}.png")
            if c is not None:
                sec.blocks.append(Figure(c, f"{s.name}: {p.stem} — image | pseudo-label (black: ignored)", 512))
    if not found:
        sec.blocks.append(Para(f"no pseudolabel stage: run `phfa pseudolabel --run {run}`", "note"))
    return sec


def _translation(stages: list[Stage], fig_dir: Path, run: Path) -> Section:
    sec = Section("translation", "Image translation (Eq. 7)")
    found = False
    for s in stages:
        if s.kind != "translate" or s.external:
            continue
        prev = sorted(s.path.glob("preview-*.png"))
        if not prev:
            continue
        c = _copy_png(prev[-1], fig_dir / f"{_safe(s.name)}-{prev[-1].stem}.png")
        if c is None:
            continue
        found = True
        sec.blocks.append(Figure(c, f"{s.name} ({s.status}), {prev[-1].name}: source | translated | target",
                                 768))
    if not found:
        sec.blocks.append(Para(f"no translate stage: run `phfa translate --run {run} --source gta5`", "note"))
    return sec


# ----------------------------------------------------------------------------- rendering


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
 padding:16px 24px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:8px 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
nav a{margin-right:12px;font-size:13px} code{background:#f3f3f5;padding:1px 4px;border-radius:3px;font-size:12.5px}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px} caption{text-align:left;font-size:12px;color:#a15c00}
th,td{border:1px solid #d8d8dc;padding:3px 8px} th{background:#f3f3f5;font-weight:600;text-align:center}
td{text-align:right;font-variant-numeric:tabular-nums} td.t,td:first-child{text-align:left} td.c{text-align:center}
tr:nth-child(even) td{background:#fafafc} .scroll{overflow-x:auto}
figure{margin:10px 0 18px} figure img{max-width:100%;height:auto;border:1px solid #eee}
img.px{image-rendering:pixelated} figcaption{font-size:12px;color:#555} p.note{color:#666;font-size:12.5px;margin:4px 0}
p.warn{color:#8a4b00;background:#fff4e0;border-left:3px solid #e39b2d;padding:4px 8px;font-size:12.5px}
"""


def _inline_html(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)


def _td(c: Cell, first: bool = False) -> str:
    cls = "" if first or _numeric(c.text) else ' class="c"' if len(c.text) <= 3 else ' class="t"'
    t = html.escape(c.text)
    return f"<td{cls}><b>{t}</b></td>" if c.bold else f"<td{cls}>{t}</td>"


def render_html(title: str, sections: list[Section]) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width,initial-scale=1">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             "<nav>" + "".join(f'<a href="#{html.escape(s.id)}">{html.escape(s.title)}</a>' for s in sections[1:])
             + "</nav>"]
    for s in sections:
        parts.append(f'<section id="{html.escape(s.id)}"><h2>{html.escape(s.title)}</h2>')
        for b in s.blocks:
            if isinstance(b, Para):
                cls = f' class="{b.cls}"' if b.cls else ""
                parts.append(f"<p{cls}>{_inline_html(b.text)}</p>")
            elif isinstance(b, Table):
                tid = f' id="{html.escape(b.id)}"' if b.id else ""
                rows = ["<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in b.columns) + "</tr>"]
                for i, r in enumerate(b.rows):
                    key = f' data-stage="{html.escape(b.keys[i])}"' if b.keys and i < len(b.keys) else ""
                    rows.append(f"<tr{key}>" + "".join(_td(c, j == 0) for j, c in enumerate(r)) + "</tr>")
                cap = f"<caption>{html.escape(b.caption)}</caption>" if b.caption else ""
                parts.append(f'<div class="scroll"><table{tid}>{cap}' + "".join(rows) + "</table></div>")
            elif isinstance(b, Figure):
                uri = "data:image/png;base64," + base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
                size = ""
                if b.min_width:
                    w, _ = pngio.image_size(b.path)
                    if 0 < w < b.min_width:
                        size = f' width="{w * math.ceil(b.min_width / w)}" class="px"'
                parts.append(f'<figure><img src="{uri}"{size} alt="{html.escape(b.caption)}">'
                             f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[+-]?[0-9.]+( %)?|—|", text.strip()))


def _md_cell(c: Cell) -> str:
    t = c.text.replace("|", "\\|")
    return f"**{t}**" if c.bold and t.strip() else t


def render_markdown(title: str, sections: list[Section], base: Path) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Para):
                lines += [("> " if b.cls == "warn" else "") + (f"_{b.text}_" if b.cls == "note" else b.text), ""]
            elif isinstance(b, Table):
                if b.caption:
                    lines += [f"_{b.caption}_", ""]
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in b.columns) + " |")
                numeric = [i > 0 and all(_numeric(r[i].text) for r in b.rows if i < len(r)) for i in range(len(b.columns))]
                lines.append("|" + "|".join(" ---: " if n else " --- " for n in numeric) + "|")
                for r in b.rows:
                    lines.append("| " + " | ".join(_md_cell(c) for c in r) + " |")
                lines.append("")
            elif isinstance(b, Figure):
                rel = Path(b.path).resolve().relative_to(base.resolve()).as_posix()
                alt = b.caption.replace("[", "(").replace("]", ")")
                lines += [f"![{alt}]({rel})", "", f"_{b.caption}_", ""]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- entry point


def build_report(run: Path, data: DataConfig | None, out: Path | None = None, panel_images: int = 3,
                 reporter: Reporter | None = None, oracle: Path | None = None, overwrite: bool = False) -> dict:
    """Write `out`/index.html (self-contained) and `out`/report.md (+ figures/) for `run`.

    `out` defaults to RUN/report; another folder follows `outdir.open_out` (files phfa did not
    write there are replaced only with `overwrite`). `oracle` is a stage folder (with metrics.json)
    outside the run whose mIoU is the top of the oracle gap. Returns the paths written and the
    ablation rows."""
    run = Path(run)
    if not run.is_dir():
        raise PhfaError(f"--run: {run} does not exist")
    if panel_images < 0:
        raise PhfaError(f"--panel-images must be 0 or more, not {panel_images}")
    index = RunIndex(run)   # (a stage a killed --force attempt left aside comes back first)
    stages = find_stages(index)
    if not any(s.finished for s in stages):
        raise PhfaError(f"--run: {run} has no finished stage; run `phfa adapt --run {run} --sources ...` first")
    ext = external_oracle(oracle) if oracle is not None else None
    if out is not None:
        open_out(out, ["index.html", "report.md", "figures"], overwrite=overwrite,
                 protected=dataset_roots(data, near=Path(out)))
    out = Path(out) if out is not None else run / "report"
    fig_dir = out / "figures"
    listing = fig_dir / ".phfa-report-files"
    if listing.is_file():  # the figures an earlier report wrote here (and nothing else) go
        for name in read_text(listing, "the report's figure list", fix="delete it").splitlines():
            if name and "/" not in name and name.endswith(".png"):
                (fig_dir / name).unlink(missing_ok=True)
    fig_dir.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        if reporter is not None:
            reporter.message(msg)

    evaluated, src, orc = classify(index, [s for s in stages if s.metrics is not None], ext)
    final = next((s for s in stages if s.name == index.final()), None)
    generated = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    say("report: tables")
    sections = [_header(run, stages + ([ext] if ext else []), generated), _per_class(evaluated, run)]
    abl, ablation_rows = _ablation(evaluated, src, orc, run)
    sections.append(abl)
    say("report: figures")
    sections.append(_bars(evaluated, fig_dir))
    say("report: panel")
    sections.append(_panel(run, data, src, final, panel_images, fig_dir, reporter))
    sections.append(_curves(stages, fig_dir, run))
    sections.append(_selfguidance(stages, fig_dir, run))
    sections.append(_translation(stages, fig_dir, run))

    title = f"PHFA report: {run.resolve().name}"
    html_path, md_path = out / "index.html", out / "report.md"
    write_text(html_path, render_html(title, sections))
    write_text(md_path, render_markdown(title, sections, out))
    figures = [str(b.path) for s in sections for b in s.blocks if isinstance(b, Figure)]
    write_text(listing, "".join(Path(f).name + "\n" for f in figures))
    notes = [b.text for s in sections for b in s.blocks if isinstance(b, Para) and b.cls == "note"]
    return {"html": str(html_path), "markdown": str(md_path), "figures": figures,
            "stages": [s.name for s in stages], "evaluated": [s.name for s in evaluated],
            "source_only": src.name if src else None, "oracle": orc.name if orc else None,
            "final": final.name if final else None, "ablation": ablation_rows, "notes": notes}
