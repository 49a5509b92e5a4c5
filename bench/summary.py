"""Print the target-val mIoU of every finished stage of a run (an ablation table).

    .venv/bin/python bench/summary.py runs/toy
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline import classes as C


def main(run: str) -> None:
    run = Path(run)
    rows = []
    for man in sorted(run.glob("*/manifest.json")):
        m = json.loads(man.read_text())
        met = man.parent / "metrics.json"
        if m.get("status") != "finished" or not met.is_file():
            continue
        rows.append((man.parent.name, m, json.loads(met.read_text())))
    rows.sort(key=lambda r: r[1].get("started", ""))  # in the order the stages ran
    if not rows:
        print(f"no finished stage with metrics under {run}")
        return
    t = Table(title=f"{run}: target val, per-class IoU %", title_justify="left")
    t.add_column("class")
    for name, _, _ in rows:
        t.add_column(name, justify="right")
    for c in C.CLASS_NAMES:
        t.add_row(c, *[("—" if r["iou"].get(c) is None else f"{r['iou'][c]:.1f}") for _, _, r in rows])
    t.add_section()
    t.add_row("[bold]mIoU[/]", *[f"[bold]{r['miou']:.2f}[/]" for _, _, r in rows])
    t.add_row("sources", *[",".join(m.get("sources", [])) + (f" ({m['source_style']})" if m.get("source_style", "raw") != "raw" else "") for _, m, _ in rows])
    t.add_row("seed", *[str(m["config"]["seed"]) for _, m, _ in rows])
    Console().print(t)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/toy")
