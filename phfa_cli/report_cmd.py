"""`phfa report --run RUN`: a self-contained HTML report (and report.md, figures/, tables/) of a run.

Registered on the root app by `register(app)`; the work is `pipeline.stages.report.build_report`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from phfa_cli.common import err, guarded, out


@guarded
def report_cmd(
    run: Annotated[Path, typer.Option("--run", help="Run folder: runs/<name>.")],
    config: Annotated[Optional[Path], typer.Option("--config", help="Data config (TOML) for the qualitative panel; default: the one the run's stages recorded, else ./phfa-data.toml.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for index.html, report.md, figures/ (PNG + SVG) and tables/ (CSV + LaTeX) (default: RUN/report).")] = None,
    oracle: Annotated[Optional[Path], typer.Option("--oracle", help="A stage folder with metrics.json outside the run to use as the oracle (e.g. runs/other/adapt-oracle).")] = None,
    panel_images: Annotated[int, typer.Option("--panel-images", help="Target val images in the Fig. 2-style panel (0: none).")] = 3,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace files in --out that phfa did not write.")] = False,
):
    """HTML + Markdown report: Table II/IV (also as CSV and LaTeX), IoU bars, Fig. 2 panel, loss curves,
    pseudo-labels, translation; every figure as PNG and SVG.

    \b
    Example:
        phfa report --run runs/demo                  (runs/demo/report/index.html)
        phfa report --run runs/demo --oracle runs/other/adapt-oracle --out paper-figures
    """
    from pipeline.runtime.progress import Silent
    from pipeline.stages.report import build_report, resolve_data_config

    data = resolve_data_config(run, config)
    res = build_report(run, data, out=out_dir, panel_images=panel_images, reporter=Silent(), oracle=oracle,
                       overwrite=overwrite)
    for note in res["notes"]:
        if note.startswith("no "):
            err.print(f"[dim]{escape(note.replace('`', ''))}[/]")
    out.print(f"html: {escape(res['html'])}")
    out.print(f"markdown: {escape(res['markdown'])}")


def register(app: typer.Typer) -> None:
    """Add `report` to the root app."""
    app.command("report")(report_cmd)
