"""Toytown ablation (paper Table IV on the embedded benchmark): every variant, several seeds.

    .venv/bin/python bench/ablation.py --data data/toytown --out runs/ablation --seeds 0 1 2 [--jobs 2]
    .venv/bin/python bench/ablation.py --only single phfa --phfa /other/checkout/phfa --out runs/ablation-other

Runs, per seed, in RUN = OUT/s<seed> (toy preset, CPU, one thread per job, --jobs at once):
  so        phfa adapt --sources gta5 --no-adversarial --no-hierarchy           (FCN row)
  aa        phfa adapt --sources gta5 --no-hierarchy                            (+AA)
  single    phfa adapt --sources gta5 --tag single                              (+AA +HFA, one source)
  phfa      phfa adapt --sources unity,gta5                                     (+AA +HFA, progressive)
  oracle    phfa adapt --sources cityscapes --no-adversarial --no-hierarchy --tag oracle (target labels)
  it, fda   phfa translate --source gta5 [--method fda]  (CycleGAN with Eq. 7 from `so`)
  so-it, so-fda, aa-it, aa-fda: source-only / +AA on the translated sources
  aa-it-sg, full: pseudolabel + retrain (Eq. 8-11) from aa-it / the progressive PHFA on translated sources
Diagnostics, only with --only: single-noback / single-noclass (`single` without Eq. 6 / Eq. 3),
  bnonly (+AA at lambda_adv 0: what target batches through the trainable BN give alone).
`--table-iv` runs only the paper's Table IV rows: FCN, +AA, +IT, +SG, +HFA, oracle.
Stages that already finished are skipped, so the script can be re-run to complete a table.
Then prints mean ± std of target-val mIoU per variant and the share of the oracle gap
recovered: (variant - so) / (oracle - so); `--per-class` adds each row's per-class IoU, mean over
the seeds; then each component as a paired difference (the same training seed on both sides),
mean ± std over the seeds that finished both rows; `--table-only` prints the tables of what has
finished and runs nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pipeline.runtime import layout

# name: (stage folder, phfa arguments, depends on). Every aligning row depends on `so`: the toy
# preset starts it from the source-only model (its init_stage).
VARIANTS = {
    "so": ("adapt-noadv-nohier", ["adapt", "--sources", "gta5", "--no-adversarial", "--no-hierarchy"], []),
    "aa": ("adapt-nohier", ["adapt", "--sources", "gta5", "--no-hierarchy"], ["so"]),
    "single": ("adapt-single", ["adapt", "--sources", "gta5", "--tag", "single"], ["so"]),
    "phfa": ("adapt", ["adapt", "--sources", "unity,gta5"], ["so"]),
    "oracle": ("adapt-oracle", ["adapt", "--sources", "cityscapes", "--no-adversarial", "--no-hierarchy",
                                "--tag", "oracle"], []),
    "it": ("translate-gta5", ["translate", "--source", "gta5", "--seg-from", "adapt-noadv-nohier"], ["so"]),
    "fda": ("translate-gta5-fda", ["translate", "--source", "gta5", "--method", "fda"], []),
    "so-it": ("adapt-it-noadv-nohier", ["adapt", "--sources", "gta5", "--source-style", "translated",
                                        "--no-adversarial", "--no-hierarchy"], ["it"]),
    "so-fda": ("adapt-fda-noadv-nohier", ["adapt", "--sources", "gta5", "--source-style", "fda",
                                          "--no-adversarial", "--no-hierarchy"], ["fda"]),
    "aa-it": ("adapt-it-nohier", ["adapt", "--sources", "gta5", "--source-style", "translated", "--no-hierarchy"], ["it"]),
    "aa-fda": ("adapt-fda-nohier", ["adapt", "--sources", "gta5", "--source-style", "fda", "--no-hierarchy"], ["fda", "so"]),
    # self-guidance (Eq. 8-11): pseudo-labels from a stage, then retrain from the initial weights
    "pl-aa-it": ("pseudolabel-adapt-it-nohier", ["pseudolabel", "--from", "adapt-it-nohier"], ["aa-it"]),
    "aa-it-sg": ("retrain-adapt-it-nohier", ["retrain", "--labels", "pseudolabel-adapt-it-nohier"], ["pl-aa-it"]),
    "full-it": ("adapt-it", ["adapt", "--sources", "unity,gta5", "--source-style", "translated"], ["it"]),
    "pl-full": ("pseudolabel-adapt-it", ["pseudolabel", "--from", "adapt-it"], ["full-it"]),
    "full": ("retrain-adapt-it", ["retrain", "--labels", "pseudolabel-adapt-it"], ["pl-full"]),
    # diagnostics, run only when named with --only: one hierarchy term off (single source), and
    # +AA with lambda_adv = 0 (target batches still pass the trainable BN in train mode)
    "single-noback": ("adapt-single-noback", ["adapt", "--sources", "gta5", "--tag", "single-noback",
                                              "--set", "lambda_back=0"], ["so"]),
    "single-noclass": ("adapt-single-noclass", ["adapt", "--sources", "gta5", "--tag", "single-noclass",
                                                "--set", "lambda_class=0"], ["so"]),
    "bnonly": ("adapt-bnonly", ["adapt", "--sources", "gta5", "--no-hierarchy", "--tag", "bnonly",
                                "--set", "lambda_adv=0"], ["so"]),
}
DIAGNOSTIC = ["single-noback", "single-noclass", "bnonly"]
ROWS = ["so", "aa", "single", "phfa", "so-fda", "so-it", "aa-fda", "aa-it", "aa-it-sg", "full-it", "full", "oracle",
        *DIAGNOSTIC]
# the paper's Table IV: FCN, +AA, +IT, +SG, +HFA (the full method), and the oracle as the ceiling
TABLE_IV = ["so", "aa", "aa-it", "aa-it-sg", "full", "oracle"]
# components read as paired differences: (what it measures, row with it, row without it)
PAIRS = [
    ("AA", "aa", "so"),
    ("AA's adversarial gradient", "aa", "bnonly"),
    ("HFA, single source", "single", "aa"),
    ("HFA's background term Eq. 6", "single", "single-noback"),
    ("HFA's category term Eq. 3", "single", "single-noclass"),
    ("progressive unity phase", "phfa", "single"),
    ("IT alone", "so-it", "so"),
    ("IT under AA", "aa-it", "aa"),
    ("FDA alone", "so-fda", "so"),
    ("FDA under AA", "aa-fda", "aa"),
    ("SG on +AA +IT", "aa-it-sg", "aa-it"),
    ("SG on PHFA", "full", "full-it"),
    ("PHFA over +AA +IT", "full-it", "aa-it"),
    ("full over +AA +IT +SG", "full", "aa-it-sg"),
    # each Table IV row over source-only, as the README's Δ column reads
    ("λ_adv = 0 over source-only", "bnonly", "so"),
    ("+AA +IT over source-only", "aa-it", "so"),
    ("+AA +IT +SG over source-only", "aa-it-sg", "so"),
    ("PHFA over source-only", "full-it", "so"),
    ("full over source-only", "full", "so"),
]
NO_PRESET = {"pseudolabel"}  # stages that take no --preset/--seed (they inherit the model's)


def finished(run: Path, stage: str) -> bool:
    m = run / stage / layout.MANIFEST
    return m.is_file() and json.loads(m.read_text()).get("status") == "finished"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/toytown")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="variants to run (default: all)")
    ap.add_argument("--iters", type=int, default=None, help="override iterations of every stage (smoke runs)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra --set for adapt stages")
    ap.add_argument("--table-iv", action="store_true", help="only the paper's Table IV rows (and what they need)")
    ap.add_argument("--phfa", default=None,
                    help="the phfa executable to run (default: the one beside this Python); compare two "
                         "checkouts with the same commands by pointing it at the other's")
    ap.add_argument("--per-class", action="store_true", help="also print per-class IoU, mean over seeds")
    ap.add_argument("--table-only", action="store_true", help="run nothing; print the tables of finished stages")
    a = ap.parse_args()
    if a.table_iv and a.only is None:
        a.only = needed(TABLE_IV)
    cfg = Path(a.data) / "phfa-data.toml"
    if not cfg.is_file() and not a.table_only:
        sys.exit(f"{cfg} missing: run `phfa data synth --out {a.data}` first")
    phfa = a.phfa or str(Path(sys.executable).with_name("phfa"))
    names = a.only or [v for v in VARIANTS if v not in DIAGNOSTIC]
    if not a.table_only:
        run_variants(phfa, cfg, Path(a.out), a.seeds, names, a.jobs, a.sets, a.iters)
    rows = TABLE_IV if a.table_iv else ROWS
    table(Path(a.out), a.seeds, rows)
    paired_table(Path(a.out), a.seeds)
    if a.per_class:
        per_class_table(Path(a.out), a.seeds, rows)


def run_variants(phfa: str, cfg: Path, out: Path, seeds: list[int], names: list[str], jobs: int,
                 sets: list[str] = (), iters: int | None = None, preset: str = "toy") -> None:
    """Run each (seed, variant) in OUT/s<seed>, `jobs` at a time with one thread each, dependencies
    first; stages that already finished are skipped, a failed dependency skips its dependents."""
    todo = [(s, v) for s in seeds for v in names]
    running: dict[tuple, subprocess.Popen] = {}
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.time()
    while todo or running:
        for key, p in list(running.items()):
            if p.poll() is not None:
                del running[key]
                print(f"[{time.time() - t0:6.0f}s] done {key} rc={p.returncode}", flush=True)
        for s, v in list(todo):
            if len(running) >= jobs:
                break
            run = out / f"s{s}"
            stage, args, deps = VARIANTS[v]
            if finished(run, stage):
                todo.remove((s, v))
                continue
            if any((s, d) in running or (s, d) in todo for d in deps):
                continue
            if any(not finished(run, VARIANTS[d][0]) for d in deps):
                print(f"skip {v} seed {s}: dependency failed", flush=True)
                todo.remove((s, v))
                continue
            cmd = [phfa, *args, "--config", str(cfg), "--run", str(run)]
            if args[0] not in NO_PRESET:
                cmd += ["--preset", preset, "--seed", str(s)]
            if args[0] in ("adapt", "retrain"):
                cmd += [x for kv in sets for x in ("--set", kv)]
            if iters is not None and args[0] not in NO_PRESET:
                cmd += ["--iters", str(iters)]
            run.mkdir(parents=True, exist_ok=True)
            log = open(run / f"{v}.log", "w")
            print(f"[{time.time() - t0:6.0f}s] start {v} seed {s}: {' '.join(cmd[1:])}", flush=True)
            running[(s, v)] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            todo.remove((s, v))
        time.sleep(2)


def needed(rows: list[str]) -> list[str]:
    """The variants `rows` depend on, dependencies first."""
    out: list[str] = []

    def add(v):
        for d in VARIANTS[v][2]:
            add(d)
        if v not in out:
            out.append(v)
    for v in rows:
        add(v)
    return out


def metrics(out: Path, seeds: list[int], v: str) -> list[dict]:
    """metrics.json of variant `v` for each seed that finished it, in seed order."""
    return [json.loads(p.read_text()) for s in seeds
            if (p := out / f"s{s}" / VARIANTS[v][0] / layout.METRICS).is_file()]


def table(out: Path, seeds: list[int], rows: list[str]) -> None:
    res = {v: [m["miou"] for m in mets] for v in rows if (mets := metrics(out, seeds, v))}
    so = statistics.mean(res["so"]) if res.get("so") else None
    orc = statistics.mean(res["oracle"]) if res.get("oracle") else None
    print(f"\ntoytown target-val mIoU (19 classes), seeds {seeds}")
    print(f"{'variant':8s} {'stage':28s} {'mIoU mean':>9s} {'std':>5s}  {'per seed':24s} {'oracle gap recovered':>20s}")
    for v in rows:
        xs = res.get(v)
        if not xs:
            continue
        m = statistics.mean(xs)
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        share = f"{100 * (m - so) / (orc - so):6.1f} %" if (so is not None and orc is not None and orc != so
                                                            and v not in ("so", "oracle")) else ""
        print(f"{v:8s} {VARIANTS[v][0]:28s} {m:9.2f} {sd:5.2f}  {' '.join(f'{x:.2f}' for x in xs):24s} {share:>20s}")


def paired_table(out: Path, seeds: list[int]) -> None:
    """Each component of PAIRS as `with - without` per training seed, over the seeds that
    finished both rows: a seed-to-seed spread shared by both rows cancels out."""
    lines = []
    for name, a, b in PAIRS:
        ds = [(s, ma[0]["miou"] - mb[0]["miou"]) for s in seeds
              if (ma := metrics(out, [s], a)) and (mb := metrics(out, [s], b))]
        if not ds:
            continue
        xs = [d for _, d in ds]
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        per = " ".join(f"{d:+.2f}" for d in xs)
        lines.append(f"{name:28s} {a + ' - ' + b:22s} {statistics.mean(xs):+7.2f} {sd:5.2f}  {per:24s} "
                     f"seeds {','.join(str(s) for s, _ in ds)}")
    if lines:
        print("\npaired differences, mIoU (same training seed on both sides)")
        print(f"{'component':28s} {'rows':22s} {'mean':>7s} {'std':>5s}  {'per seed':24s}")
        print("\n".join(lines))


def per_class_table(out: Path, seeds: list[int], rows: list[str]) -> None:
    """Per-class IoU of each row, mean over the seeds that finished it (a class absent from the
    target val split, None in metrics.json, is left blank)."""
    cols: list[tuple[str, dict]] = []
    for v in rows:
        if mets := metrics(out, seeds, v):
            cols.append((f"{v} ({len(mets)})", {c: [m["iou"][c] for m in mets if m["iou"].get(c) is not None]
                                                for c in mets[0]["iou"]}))
    if not cols:
        return
    print("\nper-class IoU %, mean over seeds (seeds finished)")
    print(f"{'class':14s} " + " ".join(f"{name:>12s}" for name, _ in cols))
    for c in cols[0][1]:
        print(f"{c:14s} " + " ".join(f"{statistics.mean(col[c]):12.1f}" if col.get(c) else f"{'':12s}"
                                     for _, col in cols))


if __name__ == "__main__":
    main()
