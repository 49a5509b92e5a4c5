"""A built wheel works outside the checkout: the dataset manifests travel inside the package."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    wheels = tmp_path / "w"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                        "-w", str(wheels)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    whl = next(wheels.glob("phfa-*.whl"))
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(whl)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (site / "pipeline" / "data_manifests" / "gta5.toml").is_file()
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    out = tmp_path / "elsewhere"
    out.mkdir()

    def phfa(*args):
        return subprocess.run([sys.executable, "-m", "phfa_cli", *args], cwd=out, env=env, capture_output=True,
                              text=True)
    r = phfa("data", "synth", "--out", "tt", "--seed", "2", "--count", "gta5=3", "--count", "unity=3",
             "--count", "cityscapes_train=32", "--count", "cityscapes_val=2")
    assert r.returncode == 0, r.stderr[-2000:]
    r = phfa("data", "check", "--config", "tt/phfa-data.toml", "gta5", "unity", "cityscapes")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"], cwd=out, env=env,
                       capture_output=True, text=True)
    assert r.stdout.strip().startswith(str(site)), r.stdout
