"""`phfa data prepare DOMAIN --size WxH`: pre-resized images and trainId labels, written once.

Registered on the `data` group by `register(app)`; heavy imports stay inside the command so
`phfa --help` does not pay for them.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from phfa_cli.common import guarded, out


def _parse_size(text: str) -> tuple[int, int]:
    from pipeline.errors import PhfaError

    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise PhfaError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720")
    return int(parts[0]), int(parts[1])


@guarded
def data_prepare(
    domain: Annotated[str, typer.Argument(help="Domain name from the data config.")],
    size: Annotated[str, typer.Option("--size", help="WxH the stage trains at: source_size (paper 1280x720) or target_size (1024x512).")],
    config: Annotated[Optional[Path], typer.Option("--config", help="Data config (TOML); default ./phfa-data.toml.")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Split to prepare (default: the one the domain trains on).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Decoding threads (default: CPU cores, at most 8).")] = None,
):
    """Write pre-resized images (bicubic) and trainId labels (nearest) once, so training reads
    small PNGs instead of decoding full-size ones. Stored in ROOT/.phfa-cache/WxH/SPLIT (or under
    $PHFA_CACHE); used automatically while the source files are unchanged (size + mtime).

    \b
    Example:
        phfa data prepare gta5 --size 1280x720 --config data/phfa-data.toml
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from phfa_cli.common import err
    from pipeline.data import datasets, prepare
    from pipeline.data.dataconfig import load_data_config

    wh = _parse_size(size)
    spec = load_data_config(config).domain(domain, option="DOMAIN")
    split = split or datasets.train_split(spec)
    items = datasets.samples(spec, split)
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as prog:
        task = prog.add_task(f"prepare {domain}/{split} {wh[0]}x{wh[1]}", total=len(items))
        res = prepare.prepare_split(spec, split, wh, items, datasets.load_pair, workers=workers,
                                    progress=lambda done, total: prog.update(task, completed=done, total=total))
    dt = time.perf_counter() - t0
    out.print(f"[green]prepared[/] {domain}/{split} at {wh[0]}x{wh[1]}: {res['written']} written, "
              f"{res['kept']} already up to date ({res['total']} images, {dt:.1f} s)")
    out.print(f"cache: {res['folder']}")
    out.print("training at this size reads it while the source files are unchanged")


def register(app: typer.Typer) -> None:
    """Add `prepare` to the `data` group of the root app."""
    for g in app.registered_groups:
        if g.name == "data" and g.typer_instance is not None:
            g.typer_instance.command("prepare")(data_prepare)
            return
    raise RuntimeError("phfa_cli.prepare_cmd.register: the app has no 'data' group")
