"""Calibrate toytown and the toy preset on the rows that contain no adaptation.

    .venv/bin/python bench/calibrate.py --data data/toytown --out runs/calib --seeds 0 1 2 [--set KEY=VALUE ...]

For each training seed, in OUT/s<seed> (toy preset, CPU, one thread per job, --jobs at once):
  so       phfa adapt --sources gta5 --no-adversarial --no-hierarchy     source-only
  oracle   phfa adapt --sources cityscapes --no-adversarial --no-hierarchy --tag oracle
then evaluates source-only on its own source: a held-out gta5 set generated with another
generator seed (`phfa data synth --seed HELDOUT_SEED`, same domain style, other scenes), at
the source size the model was trained at. Prints the calibration figures and whether each
target holds:
  oracle (target val)                  >= 40 mIoU
  source-only on held-out source       >= 40 mIoU
  source-only / oracle (target val)    0.4 - 0.7   (real GTA5 -> Cityscapes: 36.6 / ~65)
  seed std of source-only and oracle   <= 1.0 mIoU
and appends one JSON line (settings, per-seed figures, wall times) to --record.
No adaptation row runs here: the calibration is decided on these figures alone.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ablation import VARIANTS, finished, run_variants

TARGETS = {"oracle": 40.0, "so_source": 40.0, "ratio": (0.4, 0.7), "std": 1.0}


def heldout_source(phfa: str, data: Path, out: Path, seed: int, count: int) -> Path:
    """A held-out gta5 set: same domain style, scenes from another generator seed."""
    held = out / f"heldout-gta5-seed{seed}-n{count}"
    if not (held / "phfa-data.toml").is_file():
        subprocess.run([phfa, "data", "synth", "--out", str(held), "--seed", str(seed), "--count", "unity=0",
                        "--count", f"gta5={count}", "--count", "cityscapes_train=1", "--count", "cityscapes_val=1"],
                       check=True, stdout=subprocess.DEVNULL)
    return held / "phfa-data.toml"


def source_miou(run: Path, held_cfg: Path) -> dict:
    """Source-only evaluated on the held-out source set, inputs at the stage's source size."""
    out = run / "adapt-noadv-nohier" / "eval-heldout-gta5" / "metrics.json"
    if out.is_file():
        return json.loads(out.read_text())
    import torch

    from pipeline import inference, metrics
    from pipeline.config import from_dict
    from pipeline.data.dataconfig import load_data_config
    from pipeline.models.segmentor import load_segmentor
    from pipeline.runtime.atomic import write_json

    model, ck = load_segmentor(run / "adapt-noadv-nohier" / "final.pt", "--stage")
    tcfg = from_dict(ck.get("config", {}))
    spec = load_data_config(held_cfg).domain("gta5")
    conf = inference.evaluate(model, spec, "all", tcfg.source_size, torch.device("cpu"), False)
    m = metrics.summarize(conf, 19)
    write_json(out, m)
    return m


def stats(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/toytown")
    ap.add_argument("--out", default="runs/calib")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--iters", type=int, default=None, help="override the preset's iterations")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra --set KEY=VALUE for both rows")
    ap.add_argument("--heldout-seed", type=int, default=1000, help="generator seed of the held-out source set")
    ap.add_argument("--heldout-count", type=int, default=100, help="images in the held-out source set")
    ap.add_argument("--record", default="bench/results/calibration.jsonl", help="JSON line appended per call")
    ap.add_argument("--label", default="", help="a name for this setting in the record")
    a = ap.parse_args()
    data, out = Path(a.data), Path(a.out)
    cfg = data / "phfa-data.toml"
    if not cfg.is_file():
        sys.exit(f"{cfg} missing: run `phfa data synth --out {data}` first")
    phfa = str(Path(sys.executable).with_name("phfa"))
    out.mkdir(parents=True, exist_ok=True)
    held = heldout_source(phfa, data, out, a.heldout_seed, a.heldout_count)

    t0 = time.time()
    run_variants(phfa, cfg, out, a.seeds, ["so", "oracle"], a.jobs, a.sets, a.iters)
    wall = time.time() - t0

    rows = {"oracle": [], "so_target": [], "so_source": []}
    per_class = []
    for s in a.seeds:
        run = out / f"s{s}"
        if not (finished(run, VARIANTS["so"][0]) and finished(run, VARIANTS["oracle"][0])):
            sys.exit(f"seed {s}: a stage did not finish (see {run}/*.log)")
        orc = json.loads((run / VARIANTS["oracle"][0] / "metrics.json").read_text())
        rows["oracle"].append(orc["miou"])
        per_class.append(orc["iou"])
        rows["so_target"].append(json.loads((run / VARIANTS["so"][0] / "metrics.json").read_text())["miou"])
        rows["so_source"].append(source_miou(run, held)["miou"])

    om, osd = stats(rows["oracle"])
    tm, tsd = stats(rows["so_target"])
    sm, ssd = stats(rows["so_source"])
    ratio = tm / om if om else float("nan")
    names = list(per_class[0])  # classes absent from target val (None) count as 0 here
    cls = [statistics.mean(c[n] or 0.0 for c in per_class) for n in names]
    print(f"\ntoytown {data} · training seeds {a.seeds} · settings {a.sets or 'toy preset'}"
          f"{f' · iters {a.iters}' if a.iters else ''} · {wall / 60:.1f} min for {2 * len(a.seeds)} runs")
    checks = [
        ("oracle (target val)", om, osd, om >= TARGETS["oracle"] and osd <= TARGETS["std"], ">= 40, std <= 1"),
        ("source-only, held-out source", sm, ssd, sm >= TARGETS["so_source"], ">= 40"),
        ("source-only (target val)", tm, tsd, tsd <= TARGETS["std"], "std <= 1"),
    ]
    for name, m, sd, ok, goal in checks:
        print(f"  {name:30s} {m:6.2f} ± {sd:4.2f}  ({' '.join(f'{x:.2f}' for x in rows[_key(name)])})"
              f"   goal {goal}: {'ok' if ok else 'MISSED'}")
    lo, hi = TARGETS["ratio"]
    print(f"  {'source-only / oracle':30s} {ratio:6.2f}          goal {lo}-{hi}: {'ok' if lo <= ratio <= hi else 'MISSED'}")
    print("  oracle per-class IoU (mean over seeds): " + ", ".join(f"{n} {v:.0f}" for n, v in zip(names, cls)))
    rec = {"date": time.strftime("%Y-%m-%d %H:%M"), "label": a.label, "data": str(data), "seeds": a.seeds,
           "sets": a.sets, "iters": a.iters, "wall_s": round(wall), "jobs": a.jobs, **rows, "ratio": ratio,
           "oracle_class_iou": dict(zip(names, cls))}
    Path(a.record).parent.mkdir(parents=True, exist_ok=True)
    with open(a.record, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _key(name: str) -> str:
    return {"oracle (target val)": "oracle", "source-only, held-out source": "so_source",
            "source-only (target val)": "so_target"}[name]


if __name__ == "__main__":
    main()
