"""The benchmark scripts keep working: run their CPU smoke mode (they measure only on CUDA)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["train_step.py", "translate_step.py", "toy_speed.py", "cpu_memory_format.py"])
def test_bench_smoke(script):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ratio" in r.stdout or "fp32 step rate" in r.stdout or "b/a" in r.stdout or "speed-up" in r.stdout


def test_pseudolabel_memory_bench_smoke():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "pseudolabel_memory.py"), "--smoke"], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ours MiB" in r.stdout and "0.0e+00" in r.stdout


def test_gpu_report_smoke(tmp_path):
    """Every section of the one-command GPU report runs (CPU, tiny sizes) and lands in the JSON."""
    import json

    out = tmp_path / "report.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_report.py"), "--smoke", "--compile", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(out.read_text())
    assert not d["skipped"] and not d["errors"], (d["skipped"], d["errors"])
    secs = d["sections"]
    assert set(secs) >= {"train", "profile", "infer", "cyclegan", "loader", "batch2", "compile"}
    assert [row["kind"] for row in secs["train"]["rows"]] == ["ref", "adapt", "retrain"]
    assert all(row["ms"] > 0 and row["flops"] > 0 for row in secs["train"]["rows"] + secs["batch2"]["rows"])
    assert secs["train"]["rows"][0]["ratio_to_ref"] == 1.0
    assert len(secs["profile"]["top_ops"]) == 15 and "host_syncs_per_step" in secs["profile"]
    assert [row["prepared"] for row in secs["loader"]["rows"]] == [False, True]
    assert len(secs["cyclegan"]["rows"]) == 2 and secs["infer"]["summary"]
    assert "ref AdaptSegNet" in r.stdout and "MFU" in r.stdout


def test_gpu_report_without_gpu_measures_nothing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_report.py"), "--out", str(tmp_path / "x.json")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0 and "needs a CUDA GPU" in r.stdout
    assert not (tmp_path / "x.json").exists()


def test_gpu_report_peak_table():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_report
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert gpu_report.peak_tflops("NVIDIA H100 80GB HBM3") == 989
    assert gpu_report.peak_tflops("NVIDIA H200") == 989
    assert gpu_report.peak_tflops("NVIDIA A100-SXM4-80GB") == 312
    assert gpu_report.peak_tflops("NVIDIA L40S") == 362 and gpu_report.peak_tflops("NVIDIA L4") == 121
    assert gpu_report.peak_tflops("Some Future GPU") is None


def test_loader_speed_smoke():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "loader_speed.py"), "--smoke"], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "prepared" in r.stdout and "pairs/s" in r.stdout


def test_class_widths_runs_by_hand(monkeypatch):
    import numpy as np

    monkeypatch.syspath_prepend(str(ROOT / "bench" / "diagnostics"))
    from class_widths import run_widths

    m = np.array([[1, 1, 0, 1], [0, 1, 1, 1], [0, 0, 0, 0]], bool)
    assert sorted(run_widths(m).tolist()) == [1, 2, 3]   # runs never join across rows
    assert run_widths(np.ones((2, 5), bool)).tolist() == [5, 5]


@pytest.mark.slow
def test_calibrate_smoke(tmp_path):
    """bench/calibrate.py runs source-only and oracle, evaluates on a held-out source made with the
    data's generator options and records a line (with the short trunk, end to end)."""
    import json

    phfa = str(Path(sys.executable).with_name("phfa"))
    subprocess.run([phfa, "data", "synth", "--out", str(tmp_path / "t"), "--count", "unity=1", "--count", "gta5=4",
                    "--count", "cityscapes_train=4", "--count", "cityscapes_val=2", "--thicken", "2"],
                   check=True, capture_output=True)
    rec = tmp_path / "rec.jsonl"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "calibrate.py"), "--data", str(tmp_path / "t"),
                        "--out", str(tmp_path / "c"), "--seeds", "0", "--jobs", "1", "--iters", "1",
                        "--heldout-count", "3", "--record", str(rec), "--label", "smoke",
                        "--set", "backbone=resnet18-l3", "--set", "pretrained=none"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "source-only, held-out source" in r.stdout and "MISSED" in r.stdout  # 1 iteration misses the goals
    line = json.loads(rec.read_text())
    assert line["label"] == "smoke" and len(line["oracle"]) == len(line["so_source"]) == 1
    assert line["generator"] == ["--thicken", "2"] and line["sets"] == ["backbone=resnet18-l3", "pretrained=none"]
    held = list((tmp_path / "c").glob("heldout-gta5-*/phfa-data.toml"))   # made with the data's --thicken
    assert len(held) == 1 and "--thicken 2" in held[0].read_text()
    assert (tmp_path / "c" / "s0" / "adapt-noadv-nohier" / "eval-heldout-gta5" / "metrics.json").is_file()


def test_image_stats_tells_identity_from_a_translation(tmp_path):
    """bench/image_stats.py: a translation that is the source itself changes nothing; an inverted
    source changes every pixel, and its mean moves to 1 - the source's."""
    import re

    import numpy as np
    from PIL import Image

    from pipeline.data import datasets, pngio
    from pipeline.data.dataconfig import load_data_config

    phfa = str(Path(sys.executable).with_name("phfa"))
    subprocess.run([phfa, "data", "synth", "--out", str(tmp_path / "t"), "--count", "unity=1", "--count", "gta5=3",
                    "--count", "cityscapes_train=4", "--count", "cityscapes_val=1"], check=True, capture_output=True)
    cfg_path = tmp_path / "t" / "phfa-data.toml"
    cfg = load_data_config(cfg_path)
    run = tmp_path / "r"
    datasets.few_shot_names(cfg.domain("cityscapes"), 0, run / "fewshot-cityscapes.txt")
    for stage, fn in (("translate-gta5", lambda a: a), ("translate-gta5-fda", lambda a: 255 - a)):
        d = run / stage / "domain" / "images"
        for s in datasets.samples(cfg.domain("gta5"), "all"):
            im = np.asarray(Image.fromarray(pngio.read_rgb(s.image)).resize((40, 22), Image.BICUBIC))
            pngio.write_png(d / s.image.name, fn(im))
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "image_stats.py"), "--run", str(run),
                        "--config", str(cfg_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:]}
    assert float(rows["translate-gta5"].split()[-2]) == 0.0                 # mean |change|
    assert float(rows["translate-gta5-fda"].split()[-2]) > 0.2
    w1 = {k: float(v.split()[-1]) for k, v in rows.items()}                 # W1 to the target, grey levels
    assert w1["cityscapes"] == 0.0 and abs(w1["translate-gta5"] - w1["gta5"]) < 3 < w1["gta5"]
    assert w1["translate-gta5-fda"] != w1["gta5"]
    mean = lambda ln: [float(x) for x in re.findall(r"\(([0-9., ]+)\)", ln)[0].split(",")]  # noqa: E731
    src, inv = mean(rows["gta5"]), mean(rows["translate-gta5-fda"])
    assert all(abs(a + b - 1) < 0.02 for a, b in zip(src, inv))   # source read at its own size, copies resized
    assert rows["cityscapes"].split()[3] == "4"


@pytest.mark.slow
def test_bn_stats_stored_column_is_phfa_eval(tmp_path):
    """bench/diagnostics/bn_stats.py: its stored-statistics column reproduces the stage's own metrics.json, and
    re-estimating BN on the few-shot images (and, with --source, on source images) gives valid figures;
    bench/diagnostics/val_noise.py reproduces the same figure."""
    import json

    phfa = str(Path(sys.executable).with_name("phfa"))
    t, r = tmp_path / "t", tmp_path / "r"
    subprocess.run([phfa, "data", "synth", "--out", str(t), "--count", "unity=1", "--count", "gta5=4",
                    "--count", "cityscapes_train=4", "--count", "cityscapes_val=2"], check=True, capture_output=True)
    tiny = ["--preset", "toy", "--set", "source_size=64,32", "--set", "target_size=64,32", "--set", "batch_size=2",
            "--set", "backbone=resnet18-l3", "--set", "pretrained=none", "--set", "init_stage="]
    subprocess.run([phfa, "adapt", "--config", str(t / "phfa-data.toml"), "--run", str(r), "--sources", "gta5",
                    "--no-hierarchy", "--iters", "2", *tiny], check=True, capture_output=True)
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "diagnostics" / "bn_stats.py"), "--run", str(r), "--config",
                          str(t / "phfa-data.toml"), "--stages", "adapt-nohier", "--source", "gta5", "--source-count", "2"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    row = [ln for ln in out.stdout.splitlines() if ln.startswith("adapt-nohier")][0].split()
    stored = json.loads((r / "adapt-nohier" / "metrics.json").read_text())["miou"]
    assert float(row[1]) == pytest.approx(stored, abs=0.006)
    assert 0.0 <= float(row[2]) <= 100.0
    assert len(row) == 4 and 0.0 <= float(row[3]) <= 100.0   # --source: statistics from gta5's images
    # bench/diagnostics/val_noise.py on the same stage: its mIoU is the stage's own, its val noise a valid std
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "diagnostics" / "val_noise.py"), "--config", str(t / "phfa-data.toml"),
                          "--runs", str(r), "--stage", "adapt-nohier", "--boot", "50"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    row = [ln for ln in out.stdout.splitlines() if ln.startswith(str(r))][0].split()
    assert float(row[1]) == pytest.approx(stored, abs=0.006) and float(row[2]) >= 0.0


def test_ablation_table_means_stds_and_gap_share(tmp_path):
    """bench/ablation.py --table-only: mean ± std over the seeds that finished a row, the share of
    the oracle gap recovered, and per-class means; values checked by hand."""
    import json

    def put(seed, stage, miou, road):
        d = tmp_path / f"s{seed}" / stage
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"miou": miou, "iou": {"road": road, "train": None}}))

    put(0, "adapt-noadv-nohier", 10.0, 50.0)
    put(1, "adapt-noadv-nohier", 12.0, 60.0)
    put(0, "adapt-nohier", 14.0, 70.0)
    put(1, "adapt-nohier", 18.0, 80.0)
    put(0, "adapt-oracle", 40.0, 90.0)   # seed 1's oracle did not finish: its mean is over seed 0
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "ablation.py"), "--out", str(tmp_path),
                        "--data", str(tmp_path / "absent"), "--seeds", "0", "1", "--table-iv", "--table-only",
                        "--per-class"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line.strip()}
    assert rows["so"][2:4] == ["11.00", "1.41"]                      # mean 11, sample std sqrt(2)
    assert rows["aa"][2:4] == ["16.00", "2.83"] and rows["aa"][-2:] == ["17.2", "%"]  # (16-11)/(40-11)
    assert rows["oracle"][2:4] == ["40.00", "0.00"]
    assert "aa-it" not in rows                                        # no seed finished it: no row
    assert rows["road"][1:] == ["55.0", "75.0", "90.0"]               # per-class means: so, aa, oracle
    assert rows["train"][1:] == []                                    # absent from val: blank
    pairs = [line for line in r.stdout.splitlines() if line.startswith("AA ")]
    assert len(pairs) == 1 and pairs[0].split()[1:6] == ["aa", "-", "so", "+5.00", "1.41"]  # +4, +6 paired
    assert "seeds 0,1" in pairs[0]
    assert "full over" not in r.stdout                               # no seed finished `full`: no pair


def test_val_noise_bootstrap_by_hand():
    """bench/diagnostics/val_noise.py resamples images with replacement. Image a alone: mIoU 100 (class 0
    right); b alone: 0 (class 0 called class 1); a + b: IoU 1/2 and 0, mIoU 25. Resamples aa, ab,
    bb come with probabilities 1/4, 1/2, 1/4: mean 37.5, std sqrt(2812.5 - 37.5^2) = 37.5."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "bench" / "diagnostics"))
    try:
        from val_noise import bootstrap_miou
    finally:
        sys.path.remove(str(ROOT / "bench" / "diagnostics"))
    a, b = np.zeros((19, 20), np.int64), np.zeros((19, 20), np.int64)
    a[0, 0], b[0, 1] = 1, 1
    m = bootstrap_miou(np.stack([a, b]), 20000)
    assert set(np.round(m, 6)) == {0.0, 25.0, 100.0}
    assert abs(m.mean() - 37.5) < 1.0 and abs(m.std(ddof=1) - 37.5) < 1.0
    assert bootstrap_miou(np.stack([a, a, a]), 100).std() == 0.0     # identical images: no val noise


def test_ablation_variants_name_their_own_stage_folders():
    """Every variant's stage folder is the one its command writes (adapt-TAG for --tag TAG, the
    ablation's name otherwise), so a finished stage is found and skipped; diagnostics stay out
    of the default run."""
    sys.path.insert(0, str(ROOT / "bench"))
    import ablation

    for name, (stage, args, deps) in ablation.VARIANTS.items():
        if "--tag" in args:
            assert stage == f"{args[0]}-{args[args.index('--tag') + 1]}", name
        assert all(d in ablation.VARIANTS for d in deps), name
    assert set(ablation.DIAGNOSTIC) <= set(ablation.ROWS)
    assert not set(ablation.DIAGNOSTIC) & set(ablation.needed(ablation.TABLE_IV))


@pytest.mark.parametrize("with_fda", [True, False])
def test_translation_grid_leaves_out_a_missing_fda_column(tiny_data, tmp_path, with_fda):
    """The grid has one column per stage the run holds: no black FDA column when there is no FDA stage."""
    import shutil

    import numpy as np

    from pipeline.data import datasets, pngio
    from pipeline.data.dataconfig import load_data_config

    cfg_path, _ = tiny_data
    cfg = load_data_config(cfg_path)
    run = tmp_path / "run"
    src = datasets.samples(cfg.domain("gta5"), "all")[:2]
    stages = ["translate-gta5"] + (["translate-gta5-fda"] if with_fda else [])
    for st in stages:
        (run / st / "domain" / "images").mkdir(parents=True)
        for s in src:
            shutil.copy(s.image, run / st / "domain" / "images" / s.image.name)
    names = [s.name for s in datasets.samples(cfg.domain("cityscapes"), "train")[:2]]
    (run / "fewshot-cityscapes.txt").write_text("# few-shot\n" + "\n".join(names) + "\n")
    out = tmp_path / "grid.png"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "diagnostics" / "translation_grid.py"), "--run", str(run),
                        "--config", str(cfg_path), "--out", str(out), "--rows", "2"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    grid = pngio.read_rgb(out)
    w, h = pngio.read_rgb(src[0].image).shape[1], pngio.read_rgb(src[0].image).shape[0]
    cols = 4 if with_fda else 3
    assert grid.shape[:2] == (2 * 2 * (h + 4), 2 * cols * (w + 4))
    assert ("FDA |" in r.stdout) == with_fda
    # no all-black cell: every cell of the first row has some non-zero pixel
    cell_w = 2 * (w + 4)
    assert all(np.asarray(grid[: 2 * (h + 4), c * cell_w:(c + 1) * cell_w]).max() > 0 for c in range(cols))


def test_stage_diagnostics_reads_shares_memories_and_warm_start(tmp_path, monkeypatch):
    """bench/diagnostics/stage_diagnostics.py: the loss shares and thing-memory counts behind the ablation's reading."""
    import json

    monkeypatch.syspath_prepend(str(ROOT / "bench" / "diagnostics"))
    import stage_diagnostics as sd

    st = tmp_path / "s0" / "adapt-it"
    st.mkdir(parents=True)
    counts = [50] * 19
    for i, n in zip((5, 6, 7, 11, 12, 13, 14, 15, 16, 17, 18), (500, 10, 0, 3, 0, 500, 500, 7, 0, 0, 1)):
        counts[i] = n
    (st / "manifest.json").write_text(json.dumps({
        "status": "finished", "config": {"lambda_adv": 0.01, "lambda_obj": 0.1, "lambda_class": 0.5, "lambda_back": 0.2},
        "phases_done": [{"name": "1-unity", "memory_counts": None}, {"name": "2-gta5", "memory_counts": counts}]}))
    rows = [{"phase": "1-unity", "iter": 10, "seg": 4.0}, {"phase": "1-unity", "iter": 50, "seg": 2.0},
            {"phase": "1-unity", "iter": 60, "seg": 9.0},
            {"phase": "2-gta5", "iter": 10, "seg": 1.0, "adv": 2.0, "obj": 1.0, "class": -0.8, "back": 2.0, "d": 1.2,
             "total": 2.0}]
    (st / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    row = sd.stage_row(st)
    assert row["seg@50"] == "3.00/1.00"  # the first 50 iterations of each phase
    assert row["adv share"] == "0.010"  # 0.01 * 2.0 / 2.0
    assert row["hier share"] == "0.050"  # (0.1 * 1 + 0.5 * -0.8 + 0.2 * 2) / 2
    assert row["things"].startswith("3 of 11: pole 500")  # pole, car, truck full
    (st / "manifest.json").write_text(json.dumps({"status": "running"}))
    assert sd.stage_row(st) is None


def test_train_step_cpu_mode_runs_each_side_in_its_own_process():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "train_step.py"), "--cpu", "--smoke"], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("peak RSS") == 2 and "ratio b/a: time" in r.stdout and "1 timed steps" in r.stdout
