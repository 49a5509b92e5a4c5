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

Every stage is named by its paper row (methods.py: FCN, +AA, +IT, +SG, PHFA, full, oracle, or its
components composed) first and its folder second, in tables and figure legends alike.

Outputs in RUN/report/ (or `out`): index.html (every image embedded as a data: URI, inline
CSS, opens from disk with no server), report.md, figures/ (each figure as PNG at 200 dpi, which
the pages show, and as SVG under the same stem) and tables/ (Table II and Table IV as CSV and as
booktabs LaTeX, tables.py), both linked from the pages. A section whose inputs are absent is
replaced by one line naming the command that makes them.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

from pipeline.data.dataconfig import DataConfig
from pipeline.errors import PhfaError
from pipeline.runtime.atomic import write_text
from pipeline.runtime.progress import Reporter
from pipeline.runtime.runindex import RunIndex
from pipeline.stages.outdir import dataset_roots, open_out
from pipeline.textfiles import read_text
from pipeline.stages.report.content import Figure, Para, classify, external_oracle, find_stages, resolve_data_config
from pipeline.stages.report import tables
from pipeline.stages.report.render import render_html, render_markdown
from pipeline.stages.report.sections import (ablation_section, bars_section, curves_section, header_section,
                                              panel_section, per_class_section, selfguidance_section,
                                              translation_section)

__all__ = ["build_report", "resolve_data_config"]


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
        open_out(out, ["index.html", "report.md", "figures", "tables"], overwrite=overwrite,
                 protected=dataset_roots(data, near=Path(out)))
    out = Path(out) if out is not None else run / "report"
    fig_dir = out / "figures"
    listing = fig_dir / ".phfa-report-files"
    if listing.is_file():  # the figures an earlier report wrote here (and nothing else) go
        for name in read_text(listing, "the report's figure list", fix="delete it").splitlines():
            if name and "/" not in name and name.endswith((".png", ".svg")):
                (fig_dir / name).unlink(missing_ok=True)
    fig_dir.mkdir(parents=True, exist_ok=True)
    tab_dir = out / "tables"
    tables.clear(tab_dir)

    def say(msg: str) -> None:
        if reporter is not None:
            reporter.message(msg)

    evaluated, src, orc = classify(index, [s for s in stages if s.metrics is not None], ext)
    final = next((s for s in stages if s.name == index.final()), None)
    generated = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    say("report: tables")
    per_class = per_class_section(evaluated, run)
    abl, ablation_rows = ablation_section(evaluated, src, orc, run)
    table_files: list[Path] = []
    if evaluated:
        for sec, files in ((per_class, tables.write_table2(evaluated, tab_dir)),
                           (abl, tables.write_table4(ablation_rows, evaluated, tab_dir))):
            sec.blocks.append(Para("this table as data: " + " · ".join(
                f"[{f.name}]({f.relative_to(out).as_posix()})" for f in files), "note"))
            table_files += files
    sections = [header_section(run, stages + ([ext] if ext else []), generated), per_class, abl]
    say("report: figures")
    sections.append(bars_section(evaluated, fig_dir))
    say("report: panel")
    sections.append(panel_section(run, data, src, final, panel_images, fig_dir, reporter))
    sections.append(curves_section(stages, fig_dir, run))
    sections.append(selfguidance_section(stages, fig_dir, run))
    sections.append(translation_section(stages, fig_dir, run))

    title = f"PHFA report: {run.resolve().name}"
    html_path, md_path = out / "index.html", out / "report.md"
    write_text(html_path, render_html(title, sections, out))
    write_text(md_path, render_markdown(title, sections, out))
    figures = [str(b.path) for s in sections for b in s.blocks if isinstance(b, Figure)]
    write_text(listing, "".join(f"{Path(f).name}\n{Path(f).with_suffix('.svg').name}\n" for f in figures))
    notes = [b.text for s in sections for b in s.blocks if isinstance(b, Para) and b.cls == "note"]
    return {"html": str(html_path), "markdown": str(md_path), "figures": figures,
            "vector_figures": [str(Path(f).with_suffix(".svg")) for f in figures],
            "tables": [str(f) for f in table_files],
            "stages": [s.name for s in stages], "evaluated": [s.name for s in evaluated],
            "source_only": src.name if src else None, "oracle": orc.name if orc else None,
            "final": final.name if final else None, "ablation": ablation_rows, "notes": notes}
