"""Which data config a command reads: `--config` when given; else the one the run's stages
recorded in their manifests (so every command after a run's first stage needs no `--config`);
else ./phfa-data.toml."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from pipeline.data.dataconfig import DEFAULT_CONFIG, DataConfig, load_data_config
from pipeline.errors import PhfaError
from pipeline.runtime.runindex import RunIndex


def recorded(run: Path | None) -> Path | None:
    """The data config recorded by the run's stages, or None (no run, or nothing recorded)."""
    if run is None or not Path(run).is_dir():
        return None
    try:
        return RunIndex(Path(run)).data_config()
    except PhfaError:
        return None


def data_config(run: Path | None, config: Path | None, note: Callable[[str], None] | None = None) -> DataConfig:
    """The data config for a command on `run` (the rule in the module docstring). `note` hears
    which file was taken when it was not given on the command line."""
    if config is not None:
        return load_data_config(config)
    path = recorded(run)
    if path is not None:
        if note is not None:
            note(f"data config {path} (recorded in {run}; --config to choose another)")
        return load_data_config(path)
    if not Path(DEFAULT_CONFIG).is_file() and run is not None:
        raise PhfaError(f"--config: no data config given, {run} has no stage that recorded one and there is no "
                        f"./{DEFAULT_CONFIG}; pass --config data/toytown/phfa-data.toml (or where `phfa data synth "
                        f"--out DIR` wrote it)")
    return load_data_config(None)
