"""Table II and Table IV as files beside the report, for a paper: CSV (every value as metrics.json
holds it, full precision) and a booktabs LaTeX tabular (rounded as the report shows them, the best
value of each column in bold where the report bolds it). One row per evaluated stage in both:
the method name first, the folder name second.

    tables/table2-per-class-iou.csv / .tex    per-class IoU %, mIoU and pixel accuracy
    tables/table4-ablation.csv / .tex         component marks, mIoU, Δ vs source-only, oracle gap

The LaTeX needs \\usepackage{booktabs} (and graphicx for Table II's rotated class names, amssymb
for Table IV's \\checkmark); each file says so in its first lines.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from pipeline import classes as C
from pipeline.runtime.atomic import write_text
from pipeline.stages.report.content import Stage
from pipeline.stages.report.figures import finite

TABLE2 = "table2-per-class-iou"
TABLE4 = "table4-ablation"
FILES = [f"{t}.{ext}" for t in (TABLE2, TABLE4) for ext in ("csv", "tex")]
TICK = "✓"

_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "λ": r"$\lambda$", "Δ": r"$\Delta$",
          "—": "--", "–": "--", "→": r"$\rightarrow$", TICK: r"\checkmark{}", "·": r"$\cdot$", "±": r"$\pm$",
          "−": "-"}


def latex_escape(text: str) -> str:
    """Plain text as LaTeX: the special characters escaped, the few symbols the report uses as math
    ("λ_adv" becomes $\lambda_{\mathrm{adv}}$)."""
    parts = re.split(r"λ_([A-Za-z]+)", str(text))
    return "".join(rf"$\lambda_{{\mathrm{{{p}}}}}$" if i % 2 else "".join(_LATEX.get(ch, ch) for ch in p)
                   for i, p in enumerate(parts))


def per_class_values(evaluated: list[Stage]) -> list[tuple[str, list[float | None], list[bool]]]:
    """[(class name or "mIoU", the value of each stage, whether it is bold)]: the best value of a class
    among the non-oracle stages is bold, when more than one has a value and the best is above 0."""
    out = []
    for c in list(C.CLASS_NAMES) + ["mIoU"]:
        vals = [(s.miou if c == "mIoU" else finite(s.metrics["iou"].get(c))) for s in evaluated]
        pool = [v for v, s in zip(vals, evaluated) if v is not None and s.role != "oracle"]
        best = max(pool) if len(pool) > 1 and max(pool) > 0 else None  # no bold for ties at 0
        out.append((c, vals, [v is not None and best is not None and v == best and s.role != "oracle"
                              for v, s in zip(vals, evaluated)]))
    return out


def _csv(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if v is None else repr(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool)
                    else v for v in r])
    return buf.getvalue()


def _num(v, fmt: str, bold: bool = False) -> str:
    if v is None:
        return "--"
    t = format(v, fmt).replace("-", "$-$") if v < 0 else format(v, fmt)
    return rf"\textbf{{{t}}}" if bold else t


def _tabular(spec: str, head: list[str], rows: list[tuple[list[str], bool]], title: str, needs: str) -> str:
    """`rows`: (LaTeX cells, whether a \\midrule goes above the row: the oracle's)."""
    lines = [f"% {title} (phfa report).", f"% Needs {needs} in the preamble.",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    for cells, rule in rows:
        if rule:
            lines.append(r"\midrule")
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def _names(s: Stage) -> list[str]:
    return [latex_escape(s.method or s.name), r"\texttt{" + latex_escape(s.name) + "}"]


def write_table2(evaluated: list[Stage], folder: Path) -> list[Path]:
    """Table II (per-class IoU %), one row per stage, classes as columns as the paper prints it."""
    values = per_class_values(evaluated)
    header = ["method", "stage"] + list(C.CLASS_NAMES) + ["mIoU", "pixel_acc"]
    rows = [[s.method or "", s.name] + [vals[j] for _, vals, _ in values] + [s.metrics.get("pixel_acc")]
            for j, s in enumerate(evaluated)]
    head = ["Method", "Stage"] + [r"\rotatebox{90}{" + latex_escape(c) + "}" for c in C.CLASS_NAMES] + ["mIoU"]
    body = []
    for j, s in enumerate(evaluated):
        cells = _names(s) + [_num(vals[j], ".2f" if c == "mIoU" else ".1f", bold[j]) for c, vals, bold in values]
        body.append((cells, s.role == "oracle" and j > 0))
    tex = _tabular("ll" + "r" * (len(C.CLASS_NAMES) + 1), head, body,
                   "Table II: per-class IoU (%) on the target val split; bold: best non-oracle value per column",
                   r"\usepackage{booktabs} and \usepackage{graphicx}")
    return _write(folder, TABLE2, _csv(header, rows), tex)


def write_table4(ablation: list[dict], evaluated: list[Stage], folder: Path) -> list[Path]:
    """Table IV (ablation): `ablation` is the report's rows (one dict per stage, as
    sections.ablation_section returns them)."""
    by_name = {s.name: s for s in evaluated}
    marks = ["AA", "IT", "progressive", "HFA", "SG"]
    header = ["method", "stage"] + marks + ["mIoU", "delta_vs_source_only", "oracle_gap_recovered_pct"]
    rows, body = [], []
    for j, r in enumerate(ablation):
        oracle = r["role"] == "oracle"
        vals = ["" if oracle else ("yes" if r[m] == TICK else r[m]) for m in marks]
        share = None if r["gap_share"] is None else 100.0 * r["gap_share"]
        rows.append([r["method"] or "", r["stage"]] + vals + [r["miou"], r["delta"], share])
        s = by_name[r["stage"]]
        cells = _names(s) + ["--" if oracle else latex_escape(r[m]) for m in marks] \
            + [_num(r["miou"], ".2f", r["best"]), "--" if r["delta"] is None else
               ("+" if r["delta"] >= 0 else "") + _num(r["delta"], ".2f"), _num(share, ".1f")]
        body.append((cells, oracle and j > 0))
    head = ["Method", "Stage", "AA", "IT", "Prog.", "HFA", "SG", "mIoU", r"$\Delta$", r"Gap (\%)"]
    tex = _tabular("llccccc" + "r" * 3, head, body,
                   "Table IV: ablation on the target val split; Delta: mIoU minus source-only's; Gap: share of "
                   "the oracle gap recovered; bold: best non-oracle mIoU",
                   r"\usepackage{booktabs} and \usepackage{amssymb}")
    return _write(folder, TABLE4, _csv(header, rows), tex)


def _write(folder: Path, stem: str, csv_text: str, tex: str) -> list[Path]:
    paths = [folder / f"{stem}.csv", folder / f"{stem}.tex"]
    write_text(paths[0], csv_text)
    write_text(paths[1], tex)
    return paths


def clear(folder: Path) -> None:
    """Remove the table files an earlier report wrote in `folder` (only those names)."""
    for name in FILES:
        (folder / name).unlink(missing_ok=True)
