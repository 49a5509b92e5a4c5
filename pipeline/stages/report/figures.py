"""The report's figures (matplotlib): loss curves, per-class IoU bars, the Fig. 2 panel. Each is written
twice under the same stem: a PNG at FIG_DPI (what the HTML embeds) and an SVG (vector, for a paper;
text drawn as paths, so it looks the same everywhere)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline import classes as C
from pipeline.runtime.atomic import write_bytes
from pipeline.runtime.progress import Reporter
from pipeline.stages.report.content import Stage

FIG_DPI = 200

# metrics.jsonl keys -> panel titles (training losses: pipeline/train.py; CycleGAN: models/cyclegan.py)
LOSS_LABELS = {
    "seg": "source segmentation (Eq. 10)",
    "seg_t": "target pseudo-label segmentation (Eq. 9)",
    "adv": "adversarial, target (Eq. 10)",
    "obj": "object alignment (Eq. 1)",
    "class": "category, max-squares (Eq. 2-3)",
    "back": "background (Eq. 6)",
    "d": "discriminator",
    "total": "total, weighted (without D)",
    "g_adv_ab": "generator adversarial, source → target",
    "g_adv_ba": "generator adversarial, target → source",
    "cycle_a": "cycle consistency, source",
    "cycle_b": "cycle consistency, target",
    "idt_a": "identity, source",
    "idt_b": "identity, target",
    "ppl": "perceptual (Eq. 7)",
    "g_total": "generators, total",
    "d_a": "discriminator, source",
    "d_b": "discriminator, target",
    "lr": "learning rate",
}


def panel_title(key: str) -> str:
    """The human name of a metrics.jsonl key (the key itself when it has none)."""
    return LOSS_LABELS.get(key, key)


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure
    fig = MplFigure(figsize=(w, h), dpi=FIG_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    """Write `path` (PNG) and the same figure as SVG beside it; returns the PNG's path."""
    import io

    import matplotlib
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIG_DPI, bbox_inches="tight", metadata={"Software": None})
    write_bytes(path, buf.getvalue())
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": path.stem}):  # stable element ids: same input, same file
        fig.savefig(buf, format="svg", dpi=FIG_DPI, bbox_inches="tight", metadata={"Date": None, "Creator": None})
    write_bytes(path.with_suffix(".svg"), buf.getvalue())
    return path


def svg_of_png(png: bytes, width: int, height: int) -> bytes:
    """An SVG holding a raster image (a preview copied as it is): the PNG embedded, drawn pixelated."""
    import base64
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
            f'xmlns:xlink="http://www.w3.org/1999/xlink" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><image width="{width}" height="{height}" '
            f'style="image-rendering:pixelated" xlink:href="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}"/></svg>\n').encode()


def finite(v) -> float | None:
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
        it = finite(r.get("iter"))
        if it is None:
            continue
        if ph not in offsets:  # a phase the manifest does not list: after everything seen so far
            offsets[ph] = max([total] + [offsets[k] + v for k, v in seen_max.items()])
        seen_max[ph] = max(seen_max.get(ph, 0), int(it))
        x = offsets[ph] + it
        for k, v in r.items():
            if k in ("phase", "iter"):
                continue
            v = finite(v)
            if v is None:
                continue
            xs, ys = series.setdefault(k, ([], []))
            xs.append(x)
            ys.append(v)
    if any(k is not None for k in seen_max):
        bounds = sorted((off, str(name)) for name, off in offsets.items() if name is not None and name in seen_max)
    return series, bounds


def loss_figure(title: str, series: dict, bounds: list[tuple[int, str]], path: Path) -> Path:
    """The loss curves of one stage written to `path` (PNG) and its SVG twin."""
    return _save(loss_panels(title, series, bounds), path)


def loss_panels(title: str, series: dict, bounds: list[tuple[int, str]]):
    """One panel per logged key (titled by `panel_title`, axes labelled), phase boundaries dashed."""
    order = list(LOSS_LABELS)  # known keys in the order above, then the others as logged
    keys = sorted(series, key=lambda k: (order.index(k) if k in order else len(order), list(series).index(k)))
    ncols = min(4, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = _figure(3.2 * ncols, 2.4 * nrows + 0.5)
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
        ax.set_title(panel_title(k), fontsize=8.5)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        for x0, _ in bounds[1:]:
            ax.axvline(x0, color="0.5", ls="--", lw=0.8)
        ax.set_xlabel("global iteration" if bounds else "iteration", fontsize=7)
        ax.set_ylabel("learning rate" if k == "lr" else "loss value", fontsize=7)
    fig.tight_layout()
    return fig


def iou_bars(stages: list[Stage], path: Path) -> Path:
    n = len(stages)
    width = 0.8 / max(n, 1)
    fig = _figure(min(16.0, max(10.0, 0.5 * len(C.CLASS_NAMES) * max(1.0, n / 3))), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(C.CLASS_NAMES))
    for j, s in enumerate(stages):
        vals = [finite(s.metrics["iou"].get(c)) for c in C.CLASS_NAMES]
        xs = [x[i] - 0.4 + width * (j + 0.5) for i, v in enumerate(vals) if v is not None]
        ys = [v for v in vals if v is not None]
        label = f"{s.label}: mIoU {s.miou:.2f}"
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
        reporter.phase("report: panel", 0, len(items), unit="images")
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


