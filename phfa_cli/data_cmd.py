"""`phfa data synth` and `phfa data check`: generate toytown, or inspect a dataset (pipeline.data)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from phfa_cli.common import ConfigOpt, err, guarded, out
from pipeline import classes as C


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


@guarded
def data_synth(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write toytown into.")],
    seed: Annotated[int, typer.Option(help="Generator seed (same seed: the same labels on any machine, images within 1 grey level).")] = 0,
    count: Annotated[Optional[list[str]], typer.Option("--count", metavar="NAME=N", help="Images per set, e.g. gta5=1000 (unity, gta5, cityscapes_train, cityscapes_val).")] = None,
    thicken: Annotated[float, typer.Option(help="Widen poles, lights, signs, people and two-wheelers this many times (1-8), in every domain; 1 = as drawn, 3 = calibrated default.")] = 3.0,
):
    """Generate the toytown benchmark (unity/SYNTHIA, gta5/GTA5, cityscapes layouts + phfa-data.toml).

    \b
    Example:
        phfa data synth --out data/toytown --seed 0
        phfa data synth --out data/tiny --count gta5=24 --count cityscapes_train=32
    """
    from pipeline.data import toytown
    from pipeline.errors import PhfaError

    counts = {}
    for c in count or []:
        k, _, v = c.partition("=")
        if not v.strip().isdigit():
            raise PhfaError(f"--count {c!r}: expected NAME=N, e.g. gta5=1000")
        counts[k.strip()] = int(v)

    tasks: dict[str, int] = {}
    with _progress() as prog:
        def cb(name, done, total):
            if name not in tasks:
                tasks[name] = prog.add_task(name, total=total)
            prog.update(tasks[name], completed=done)
        summary = toytown.generate(out_dir, seed=seed, counts=counts or None, progress=cb, thicken=thicken)
    t = Table(title=f"toytown (seed {escape(str(seed))}) written to {escape(str(out_dir))}", title_justify="left")
    t.add_column("domain/split")
    t.add_column("images", justify="right")
    for k, v in summary.items():
        t.add_row(k, str(v))
    out.print(t)
    out.print(f"data config: {escape(str(out_dir / 'phfa-data.toml'))}")


@guarded
def data_check(
    domains: Annotated[list[str], typer.Argument(metavar="DOMAIN", help="Domain names from the data config.")],
    config: ConfigOpt = None,
    split: Annotated[Optional[list[str]], typer.Option("--split", metavar="SPLIT", help="Only these splits (default: all on disk).")] = None,
):
    """Dataset doctor: counts, sizes, class frequencies, unreadable files, size mismatches, unknown ids.

    \b
    Example:
        phfa data check --config data/toytown/phfa-data.toml gta5 cityscapes
    """
    from pipeline.data.check import check_domain
    from pipeline.data.dataconfig import load_data_config

    cfg = load_data_config(config)
    for d in domains:
        cfg.domain(d, option="DOMAIN")  # unknown names fail before any work
    usable = True
    reports = []
    with _progress() as prog:
        tasks: dict[str, int] = {}

        def cb(name, done, total):
            if name not in tasks:
                tasks[name] = prog.add_task(name, total=total)
            prog.update(tasks[name], completed=done)
        for d in domains:
            reports.append(check_domain(cfg, d, split, progress=cb))
    for rep in reports:
        if rep.error:
            err.print(f"[red]{escape(str(rep.domain))}:[/] {escape(str(rep.error))}")
            usable = False
            continue
        t = Table(title=f"{escape(str(rep.domain))} ({escape(str(cfg.domains[rep.domain].format))}, {escape(str(cfg.domains[rep.domain].root))})",
                  title_justify="left")
        t.add_column("class")
        for s in rep.splits:
            t.add_column(f"{s.split} %", justify="right")
        tots = [max(int(s.class_pixels.sum()), 1) for s in rep.splits]
        for c, name in enumerate(C.CLASS_NAMES):
            t.add_row(name, *[("—" if s.class_pixels[c] == 0 else f"{100 * s.class_pixels[c] / tot:.2f}")
                              for s, tot in zip(rep.splits, tots)])
        t.add_section()
        t.add_row("images (labelled)", *[f"{s.images} ({s.labelled})" for s in rep.splits])
        t.add_row("sizes", *[", ".join(f"{w}x{h}:{n}" for (w, h), n in s.sizes.most_common(3)) for s in rep.splits])
        t.add_row("ignored px %", *[f"{100 * s.ignored_pixels / max(tot + s.ignored_pixels, 1):.1f}"
                                    for s, tot in zip(rep.splits, tots)])
        t.add_row("classes present", *[str(int((s.class_pixels > 0).sum())) + "/19" for s in rep.splits])
        out.print(t)
        for s in rep.splits:
            for u in s.unreadable:
                err.print(f"[red]unreadable[/] {escape(str(u))}")
            for m in s.size_mismatch[:10]:
                err.print(f"[yellow]size mismatch[/] {escape(str(m))} (resized, nearest, when read)")
            if len(s.size_mismatch) > 10:
                err.print(f"[yellow]… {escape(str(len(s.size_mismatch) - 10))} more size mismatches[/]")
            if s.unknown_ids:
                err.print(f"[yellow]{escape(str(rep.domain))}/{escape(str(s.split))}:[/] {escape(str(s.unknown_ids))} pixels in {escape(str(s.files_with_unknown))} "
                          "files have ids outside the label map (read as 255, ignored)")
            for k in s.known_bad:
                err.print(f"[yellow]known issue[/] {escape(str(k))}")
        usable &= rep.usable
    if not usable:
        err.print("[red]not usable:[/] fix the problems named above")
        raise typer.Exit(2)
    out.print("[green]usable[/]")


def register(data_app: typer.Typer) -> None:
    data_app.command("synth")(data_synth)
    data_app.command("check")(data_check)
