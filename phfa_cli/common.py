"""What every command shares: consoles, the error boundary (exit 2, one sentence), tables."""
from __future__ import annotations

import errno
import functools
import os
import traceback
import warnings

import contextvars
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.errors import PhfaError

# Under torchrun every rank runs the command: rank 0 alone prints (RANK is set before any import);
# an error still ends in its sentence on whichever rank meets it.
_QUIET = os.environ.get("RANK", "0") != "0"
out = Console(highlight=False, soft_wrap=True, quiet=_QUIET)
err = Console(stderr=True, highlight=False, soft_wrap=True, quiet=_QUIET)  # never break file names
_fail = Console(stderr=True, highlight=False, soft_wrap=True)


# Set by the root callback on every invocation (`phfa --debug ...`).
DEBUG: contextvars.ContextVar[bool] = contextvars.ContextVar("phfa_debug", default=False)


def _debug() -> bool:
    return DEBUG.get()


def guarded(fn):
    """User mistakes (PhfaError) end in one sentence and exit code 2; --debug shows the traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return fn(*args, **kwargs)
            except (PhfaError, PermissionError, OSError, MemoryError, RuntimeError) as e:
                sentence = str(e) if isinstance(e, PhfaError) else _environment_sentence(e)
                if sentence is None:
                    raise
                if _debug():
                    traceback.print_exc()
                _fail.print(f"[red]error:[/] {escape(sentence)}", soft_wrap=True)
                raise typer.Exit(2)
            except KeyboardInterrupt:
                err.print("interrupted")
                raise typer.Exit(130)
    return wrapper


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line on stderr (rank 0 alone, as `err`); the names behind it with --debug."""
    err.print(f"[yellow]warning:[/] {escape(str(message))}")
    names = getattr(message, "names", None)
    if names and _debug():
        err.print("  " + escape(", ".join(names)))


def _environment_sentence(e: BaseException) -> str | None:
    """One sentence for what the machine refused (permissions, a read-only disk, memory), or None
    for a genuine fault, which keeps its traceback."""
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        where = f" {e.filename}" if e.filename else ""
        return (f"cannot write or read{where}: {(e.strerror or 'permission denied').lower()}; make it writable "
                "or choose another --run/--out")
    text = str(e)
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or (
            isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)):
        first = text.strip().splitlines()[0][:160] if text.strip() else type(e).__name__
        return (f"out of memory ({first}); lower the sizes in --set (source_size, target_size, batch_size, "
                "memory_size, d_ndf) or use a machine with more memory")
    return None


def run_data(run: Path | None, config: Path | None):
    """The data config of a command on `run`: --config, else the run's recorded one (said), else ./phfa-data.toml."""
    from pipeline.stages.runconfig import data_config
    return data_config(run, config, note=lambda s: err.print(f"note: {escape(s)}"))


def parse_size(text: str | None, option: str = "--size") -> tuple[int, int] | None:
    """`W,H` (or `WxH`) in pixels, as every --size option takes it."""
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise PhfaError(f"{option} takes W,H in pixels (e.g. 1024,512), not '{text}'") from None
    return w, h


def metrics_table(m: dict, title: str) -> Table:
    """Per-class IoU in the row order of the paper's Table II, then mIoU and pixel accuracy."""
    t = Table(title=title, title_justify="left", min_width=max(30, min(len(title), 100)))
    t.add_column("class")
    t.add_column("IoU %", justify="right")
    for name, v in m["iou"].items():
        t.add_row(name, "—" if v is None else f"{v:.1f}")
    t.add_section()
    t.add_row(f"[bold]mIoU ({m['classes']})[/]", f"[bold]{m['miou']:.2f}[/]")
    t.add_row("pixel acc.", f"{m['pixel_acc']:.2f}")
    return t


def stages_table(results: list[dict], title: str) -> Table:
    """Per-class IoU of several stages side by side (Table II style), best value per row in bold."""
    t = Table(title=title, title_justify="left")
    t.add_column("class")
    for m in results:
        t.add_column(m.get("stage", "?"), justify="right")
    names = list(results[0]["iou"])
    for name in names:
        vals = [m["iou"].get(name) for m in results]
        best = max((v for v in vals if v is not None), default=None)
        t.add_row(name, *["—" if v is None else (f"[bold]{v:.1f}[/]" if v == best and len(vals) > 1 else f"{v:.1f}")
                          for v in vals])
    t.add_section()
    t.add_row(f"[bold]mIoU ({results[0]['classes']})[/]", *[f"[bold]{m['miou']:.2f}[/]" for m in results])
    t.add_row("pixel acc.", *[f"{m['pixel_acc']:.2f}" for m in results])
    return t


# options several commands share
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="Data config (TOML); default: the one the run's stages recorded, else ./phfa-data.toml.")]
RunOpt = Annotated[Path, typer.Option("--run", help="Run folder: runs/<name>.")]
PresetOpt = Annotated[str, typer.Option("--preset", help="auto (paper on a CUDA machine, toy on a CPU-only one) | paper (Table I, GPU) | toy (CPU, toytown).")]
PretrainedOpt = Annotated[Optional[str], typer.Option("--pretrained", help="Initial weights: imagenet | none | PATH to a local state dict (default: the preset's; the toy preset starts aligning stages from the run's source-only stage).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Override a preset field: key=value (repeatable).")]
