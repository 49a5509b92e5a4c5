"""Run folders: `runs/<name>/<stage>/` with a manifest.json each.

A stage is refused when it already finished (unless --force) and when an earlier,
interrupted attempt exists (unless --resume or --force). Its manifest records the phfa
version, git commit, resolved config, inputs (with sha256 of checkpoints), outputs,
timings and metrics.

One process writes a stage at a time: `begin()` takes an exclusive OS lock on
`RUN/.<stage>.lock` (released when the process ends, however it ends), and a second process
is told which one holds it. `--force` moves the finished stage aside to `RUN/.<stage>.replaced`
and deletes it only once the new attempt has finished; an attempt that fails, is interrupted
or is killed puts it back (a killed one, the next time anything opens the run).
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline import __version__
from pipeline.errors import PhfaError
from pipeline.runtime.atomic import remove_temp_files, write_json
from pipeline.textfiles import read_json_object
from pipeline.runtime import layout


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
        self._lock = None   # the open lock file while this process holds the stage

    @property
    def manifest_path(self) -> Path:
        return self.path / layout.MANIFEST

    @property
    def aside_path(self) -> Path:
        return self.run / f".{self.name}.replaced"

    @property
    def lock_path(self) -> Path:
        return self.run / f".{self.name}.lock"

    def manifest(self) -> dict | None:
        """The stage's manifest, None when it has none yet; a damaged one is a PhfaError."""
        if not self.manifest_path.is_file():
            return None
        return read_json_object(self.manifest_path, f"the manifest of stage {self.name}",
                                fix="run that stage again with --force")

    def finished(self) -> bool:
        recover(self.run, self.name)
        m = self.manifest()
        return bool(m) and m.get("status") == "finished"

    def model(self, option: str) -> Path:
        """The finished stage's final.pt, checked against the sha256 its manifest recorded."""
        recover(self.run, self.name)
        m = self.manifest()
        final = self.path / layout.FINAL
        if not m or m.get("status") != "finished" or not final.is_file():
            raise PhfaError(f"{option}: {self.path} is missing or unfinished (no final.pt); run that stage first")
        want = (m.get("outputs") or {}).get("final_sha256")
        if want and sha256(final) != want:
            raise PhfaError(f"{option}: {final} is damaged (its sha256 differs from the one recorded in "
                            f"{self.manifest_path}); run the stage again with --force")
        return final

    # --- one writer per stage
    def acquire(self, command: str = "phfa") -> None:
        """Take the stage's lock (idempotent); a second process gets a sentence naming the holder."""
        if self._lock is not None:
            return
        try:
            self.run.mkdir(parents=True, exist_ok=True)
            f = open(self.lock_path, "a+")
        except OSError as e:
            raise PhfaError(f"--run: cannot write to {self.run} ({e.strerror.lower()}); "
                            "make it writable or choose another --run") from e
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise PhfaError(f"stage {self.path} is being written by another phfa process ({holder}); wait for it "
                            "to end or stop it first") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}: {command}\n")
        f.flush()
        self._lock = f
        _recover_locked(self)
        remove_temp_files(self.path)  # left by a process killed while writing

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # --- an attempt: begin, then finish / interrupt / restore
    def begin(self, force: bool, resume: bool, command: str) -> bool:
        """Lock and prepare the folder; returns True when resuming an interrupted attempt.

        Call it only after every input has been checked. With --force an existing stage is
        moved aside (RUN/.NAME.replaced) and deleted by `finish()` once the new one is
        written, or put back by `restore()` if the new attempt fails or is interrupted."""
        self.acquire(command)
        try:
            return self._open(force, resume, command)
        except BaseException:
            self.release()
            raise

    def _open(self, force: bool, resume: bool, command: str) -> bool:
        try:
            m = self.manifest()
        except PhfaError:
            if not force:
                raise
            m = None  # a damaged manifest: --force replaces the stage like any unfinished one
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
            if m and m.get("status") == "finished":
                self.path.rename(self.aside_path)   # kept until the new attempt finishes
            else:
                shutil.rmtree(self.path)           # an unfinished attempt is what --force starts over
        self.path.mkdir(parents=True, exist_ok=True)
        self.write(status="running", stage=self.name, command=command, started=now())
        return False

    def finish(self, **fields) -> dict:
        """Mark the stage finished and drop the version it replaced (if any)."""
        m = self.write(status="finished", finished=now(), **fields)
        if self.aside_path.exists():
            shutil.rmtree(self.aside_path, ignore_errors=True)
        self.release()
        return m

    def interrupt(self, **fields) -> bool:
        """Ctrl-C: a --force attempt is dropped and the stage it replaced comes back (returns True);
        any other attempt is marked interrupted, to be continued with --resume."""
        if self.restore():
            return True
        self.write(status="interrupted", **fields)
        self.release()
        return False

    def restore(self) -> bool:
        """Put back the stage that --force moved aside (after a failed or interrupted new attempt)."""
        try:
            if not self.aside_path.exists():
                return False
            if self.path.exists():
                shutil.rmtree(self.path)
            self.aside_path.rename(self.path)
            return True
        finally:
            self.release()

    def write(self, **fields) -> dict:
        m = self.manifest() or {}
        m.setdefault("stage", self.name)
        m.setdefault("phfa_version", __version__)
        m.setdefault("git_commit", git_commit())
        m.setdefault("python", sys.version.split()[0])
        m.update(fields)
        write_json(self.manifest_path, m)
        return m


def _recover_locked(sd: StageDir) -> None:
    """Under the stage's lock: a stage left aside by a --force attempt that died comes back, unless
    that attempt got as far as finishing (then the aside copy is the one to drop)."""
    if not sd.aside_path.exists():
        return
    try:
        done = sd.manifest_path.is_file() and (sd.manifest() or {}).get("status") == "finished"
    except PhfaError:
        done = False
    if done:
        shutil.rmtree(sd.aside_path, ignore_errors=True)
        return
    if sd.path.exists():
        shutil.rmtree(sd.path)
    sd.aside_path.rename(sd.path)


def recover(run: Path, name: str | None = None) -> None:
    """Put back every stage (or `name`) that a killed --force attempt left aside, when no process
    holds it; a run folder this process cannot write is left as it is."""
    run = Path(run)
    names = [name] if name else [p.name[1:-len(".replaced")] for p in run.glob(".*.replaced")] if run.is_dir() else []
    for n in names:
        sd = StageDir(run, n)
        if not sd.aside_path.exists():
            continue
        try:
            sd.acquire("phfa (recovering a stage kept aside by --force)")
        except PhfaError:
            continue  # in use (its --force attempt is alive) or not writable
        sd.release()
