"""Print the target-val per-class IoU of every finished stage of a run, with its role (an ablation table).

    .venv/bin/python bench/summary.py runs/toy
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline import classes as C
from pipeline.runtime import layout
from pipeline.runtime.runindex import RunIndex


def main(run: str) -> None:
    index = RunIndex(Path(run))
    rows = []
    for name in index.models():  # the run index's table order: source-only, variants, PHFA, retrain, oracle
        met = index.entries[name].path / layout.METRICS
        if met.is_file():
            rows.append((name, index.entries[name].manifest, json.loads(met.read_text())))
    if not rows:
        print(f"no finished stage with metrics under {run}")
        return
    t = Table(title=f"{run}: target val, per-class IoU %", title_justify="left")
    t.add_column("class")
    final = index.final()
    for name, _, _ in rows:
        role = index.role(name)
        t.add_column(f"{name}\n({role}{', final' if name == final else ''})", justify="right")
    for c in C.CLASS_NAMES:
        t.add_row(c, *[("—" if r["iou"].get(c) is None else f"{r['iou'][c]:.1f}") for _, _, r in rows])
    t.add_section()
    t.add_row("[bold]mIoU[/]", *[f"[bold]{r['miou']:.2f}[/]" for _, _, r in rows])
    t.add_row("sources", *[",".join(m.get("sources", [])) + (f" ({m['source_style']})" if m.get("source_style", "raw") != "raw" else "") for _, m, _ in rows])
    t.add_row("seed", *[str(m["config"]["seed"]) for _, m, _ in rows])
    Console().print(t)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/toy")
