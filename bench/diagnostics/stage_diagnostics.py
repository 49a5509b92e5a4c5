"""What each aligning stage of an ablation did, read from its own records: the evidence behind
README's reading of Table IV on toytown.

    .venv/bin/python bench/diagnostics/stage_diagnostics.py runs/ablation/s0 runs/ablation/s1 runs/ablation/s2

Per run folder and per finished adapt/retrain stage, from `metrics.jsonl` and `manifest.json`:
  seg@50     mean segmentation loss over each phase's first 50 iterations (a warm start that
             restarts a fresh optimiser at full lr shows here as a jump above the start's end)
  seg end    segmentation loss at the stage's last logged iteration
  adv share  lambda_adv * L_adv / total loss at the last logged iteration (Eq. 12's adversarial term)
  D end      discriminator loss at the last logged iteration (ln 2 = 0.69 when it cannot tell: its loss is the mean of two BCE terms)
  hier share (lambda_obj L_obj + lambda_class L_class + lambda_back L_back) / total, same iteration
  things     source thing-memory counts after the last phase (Eq. 1 acts on a class only once its
             ring is full) as "full of 11", then the counts
and each pseudo-label stage's precision and coverage (`diagnostic.json`, read from target labels
for this diagnostic only). Reads files only; runs nothing.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline import classes as C
from pipeline.runtime import layout


def by_phase(lines: list[dict]) -> dict[str, list[dict]]:
    phases: dict[str, list[dict]] = {}
    for r in lines:
        phases.setdefault(r.get("phase", "?"), []).append(r)
    return phases


def stage_row(stage: Path) -> dict | None:
    man, log = stage / layout.MANIFEST, stage / layout.METRIC_ROWS
    if not man.is_file() or not log.is_file():
        return None
    m = json.loads(man.read_text())
    if m.get("status") != "finished":
        return None
    cfg = m.get("config", {})
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    lines = [r for r in lines if "seg" in r and "iter" in r]
    if not lines:
        return None
    phases = by_phase(lines)
    seg50 = []
    for name, rs in phases.items():
        first = [r["seg"] for r in rs if r["iter"] <= 50]
        if first:
            seg50.append(f"{sum(first) / len(first):.2f}")
    end = lines[-1]
    total = end.get("total") or float("nan")
    adv = cfg.get("lambda_adv", 0) * end["adv"] / total if "adv" in end else None
    hier = sum(cfg.get(f"lambda_{k}", 0) * end[k] for k in ("obj", "class", "back") if k in end)
    things = None
    done = m.get("phases_done") or []
    counts = next((p.get("memory_counts") for p in reversed(done) if p.get("memory_counts")), None)
    if counts:
        thing_ids = list(C.THING_CLASSES)
        ring = max(counts[i] for i in thing_ids)
        full = sum(counts[i] >= ring for i in thing_ids) if ring > 0 else 0
        things = f"{full} of {len(thing_ids)}: " + " ".join(f"{C.CLASS_NAMES[i]} {counts[i]}" for i in thing_ids)
    return {"seg@50": "/".join(seg50), "seg end": f"{end['seg']:.2f}",
            "adv share": "" if adv is None else f"{adv:.3f}",
            "D end": f"{end['d']:.2f}" if "d" in end else "",
            "hier share": f"{hier / total:.3f}" if any(k in end for k in ("obj", "class", "back")) else "",
            "things": things or ""}


def main(runs: list[str]) -> None:
    for run in map(Path, runs):
        print(f"== {run}")
        for stage in sorted(p for p in run.iterdir() if p.is_dir()):
            if stage.name.startswith(("adapt", "retrain")):
                row = stage_row(stage)
                if row:
                    print(f"  {stage.name:28s} " + "  ".join(f"{k} {v}" for k, v in row.items() if v))
            elif stage.name.startswith("pseudolabel") and (stage / "diagnostic.json").is_file():
                d = json.loads((stage / "diagnostic.json").read_text())
                poor = [f"{n} {v['precision'] * 100:.0f}%/{v['coverage'] * 100:.0f}%"
                        for n, v in d.get("classes", {}).items() if v.get("precision", 1) < 0.5]
                print(f"  {stage.name:28s} precision {d['precision'] * 100:.1f} %  coverage {d['coverage'] * 100:.1f} %"
                      + (f"  under 50 % precise: {', '.join(poor)}" if poor else ""))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
