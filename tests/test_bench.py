"""The benchmark scripts keep working: run their CPU smoke mode (they measure only on CUDA)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["train_step.py", "translate_step.py"])
def test_bench_smoke(script):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ratio" in r.stdout or "fp32 step rate" in r.stdout


def test_pseudolabel_memory_bench_smoke():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "pseudolabel_memory.py"), "--smoke"], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ours MiB" in r.stdout and "0.0e+00" in r.stdout
