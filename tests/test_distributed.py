"""Multi-process training on CPU (gloo, 2 processes via torchrun) and the sharded data stream."""
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.train import StreamSampler


def test_stream_shards_interleave_the_single_process_stream():
    one = list(itertools.islice(iter(StreamSampler(10, 3, seed=5)), 24))
    r0 = list(itertools.islice(iter(StreamSampler(10, 3, seed=5, rank=0, world=2)), 12))
    r1 = list(itertools.islice(iter(StreamSampler(10, 3, seed=5, rank=1, world=2)), 12))
    batches = [one[i:i + 3] for i in range(0, 24, 3)]
    assert r0 == sum(batches[0::2], []) and r1 == sum(batches[1::2], [])
    # resuming at batch k continues each rank's stream
    assert list(itertools.islice(iter(StreamSampler(10, 3, 5, start_batch=2, rank=1, world=2)), 6)) == r1[6:12]


def test_torchrun_two_cpu_processes(tmp_path):
    from tests.conftest import write_cityscapes, write_gta5
    write_gta5(tmp_path / "gta5", 6, size=(64, 32))
    write_cityscapes(tmp_path / "cityscapes", 8, 2, size=(64, 32))
    cfg = tmp_path / "d.toml"
    cfg.write_text('[domains.gta5]\nformat = "gta5"\nroot = "gta5"\n'
                   '[domains.cityscapes]\nformat = "cityscapes"\nroot = "cityscapes"\nfew_shot = 4\n')
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "phfa_cli", "--", "adapt",
                        "--config", str(cfg), "--run", str(tmp_path / "r"), "--sources", "gta5", "--preset", "toy",
                        "--iters", "2", "--set", "source_size=64,32", "--set", "target_size=64,32",
                        "--set", "batch_size=2", "--set", "log_every=1", "--set", "init_stage="],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    man = json.loads((tmp_path / "r/adapt/manifest.json").read_text())
    assert man["status"] == "finished" and man["world_size"] == 2
    assert len((tmp_path / "r/adapt/metrics.jsonl").read_text().splitlines()) == 2  # rank 0 alone writes
