"""Run folders: `runs/<name>/<stage>/` with a manifest.json each.

A stage is refused when it already finished (unless --force) and when an earlier,
interrupted attempt exists (unless --resume or --force). Its manifest records the phfa
version, git commit, resolved config, inputs (with sha256 of checkpoints), outputs,
timings and metrics.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline import __version__
from pipeline.errors import PhfaError
from pipeline.runtime.atomic import write_json


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                           capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class StageDir:
    def __init__(self, run: Path, name: str):
        self.run = Path(run)
        self.name = name
        self.path = self.run / name

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def manifest(self) -> dict | None:
        if not self.manifest_path.is_file():
            return None
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError:
            return None

    def finished(self) -> bool:
        m = self.manifest()
        return bool(m) and m.get("status") == "finished"

    def begin(self, force: bool, resume: bool, command: str) -> bool:
        """Prepare the folder; returns True when resuming an interrupted attempt.

        Call it only after every input has been checked. With --force an existing stage is
        moved aside (RUN/.NAME.replaced) and deleted by `finish()` once the new one is
        written, or put back by `restore()` if the new attempt fails."""
        m = self.manifest()
        if m and m.get("status") == "finished" and not force:
            raise PhfaError(f"stage {self.path} already finished; pass --force to run it again "
                            "(its outputs will be replaced) or use another --run/--tag")
        if resume:
            if m is None:
                raise PhfaError(f"--resume: nothing to resume in {self.path}; run without --resume")
            return True
        if self.path.exists() and any(self.path.iterdir()):
            if not force:
                raise PhfaError(f"{self.path} holds an unfinished attempt; pass --resume to continue it "
                                f"or --force to start over")
            aside = self.aside_path
            if aside.exists():
                shutil.rmtree(aside)
            self.path.rename(aside)
        self.path.mkdir(parents=True, exist_ok=True)
        self.write(status="running", stage=self.name, command=command, started=now())
        return False

    @property
    def aside_path(self) -> Path:
        return self.run / f".{self.name}.replaced"

    def finish(self, **fields) -> dict:
        """Mark the stage finished and drop the version it replaced (if any)."""
        m = self.write(status="finished", finished=now(), **fields)
        if self.aside_path.exists():
            shutil.rmtree(self.aside_path, ignore_errors=True)
        return m

    def restore(self) -> bool:
        """Put back the stage that --force moved aside (after a failed new attempt)."""
        if not self.aside_path.exists():
            return False
        if self.path.exists():
            shutil.rmtree(self.path)
        self.aside_path.rename(self.path)
        return True

    def write(self, **fields) -> dict:
        m = self.manifest() or {}
        m.setdefault("stage", self.name)
        m.setdefault("phfa_version", __version__)
        m.setdefault("git_commit", git_commit())
        m.setdefault("python", sys.version.split()[0])
        m.update(fields)
        write_json(self.manifest_path, m)
        return m


def finished_stages(run: Path) -> list[str]:
    run = Path(run)
    if not run.is_dir():
        return []
    return sorted(p.name for p in run.iterdir() if p.is_dir() and StageDir(run, p.name).finished())
