"""Folders the user names with --out (`phfa predict`, `eval`, `report`): phfa never replaces a file
it did not write there, and never writes into a dataset.

Every such folder gets a record, `.phfa-out`, of the names phfa wrote into it (written before the
files themselves, so an interrupted command still owns what it started). A later command may
replace those; anything else in the folder is the user's: a non-empty folder without a record, or
a file of a name phfa would write that the record does not list, is refused unless
`overwrite=True` (`--overwrite`). A folder inside a domain root of a data config is refused always.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from pipeline.data.dataconfig import DEFAULT_CONFIG, DataConfig, load_data_config
from pipeline.errors import PhfaError
from pipeline.runtime.atomic import write_text
from pipeline.textfiles import read_text

RECORD = ".phfa-out"


def dataset_roots(data: DataConfig | None = None, near: Path | None = None) -> list[Path]:
    """The domain roots of `data`, and of every data config in `near` or a folder above it."""
    roots = [d.root for d in data.domains.values()] if data is not None else []
    if near is not None:
        for folder in [Path(near).resolve(), *Path(near).resolve().parents]:
            cfg = folder / DEFAULT_CONFIG
            if cfg.is_file():
                try:
                    roots += [d.root for d in load_data_config(cfg).domains.values()]
                except PhfaError:
                    continue   # not readable as a data config: it protects nothing
    return roots


def _written_before(out: Path) -> set[str] | None:
    rec = out / RECORD
    if not rec.is_file():
        return None
    return {line for line in read_text(rec, "the output record", fix="delete it").splitlines() if line}


def open_out(out: str | Path, names: Iterable[str], *, overwrite: bool = False, protected: Iterable[Path] = (),
             option: str = "--out") -> Path:
    """Check that `out` may receive files `names` (paths relative to it), create it and record them."""
    out = Path(out)
    names = sorted(set(names))
    if out.exists() and not out.is_dir():
        raise PhfaError(f"{option}: {out} is a file, not a folder")
    where = out.resolve()
    for root in protected:
        r = Path(root).resolve()
        if where == r or r in where.parents:
            raise PhfaError(f"{option}: {out} lies inside the dataset {r}; phfa never writes into a dataset, "
                            "choose another folder")
    ours = _written_before(out) if out.is_dir() else None
    if out.is_dir() and not overwrite:
        if ours is None:
            other = next((p.name for p in sorted(out.iterdir()) if p.name != RECORD), None)
            if other is not None:
                raise PhfaError(f"{option}: {out} is not empty and phfa did not write it (it holds {other}); "
                                "choose a new or empty folder, or pass --overwrite to write there anyway")
        clash = [n for n in names if (out / n).exists() and n not in (ours or set())]
        if clash:
            raise PhfaError(f"{option}: {out / clash[0]} exists and phfa did not write it"
                            + (f" ({len(clash)} such files)" if len(clash) > 1 else "")
                            + "; choose another folder, or pass --overwrite to replace them")
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / RECORD, "".join(n + "\n" for n in sorted((ours or set()) | set(names))))
    except OSError as e:
        raise PhfaError(f"{option}: cannot write to {out} ({(e.strerror or str(e)).lower()}); "
                        "make it writable or choose another folder") from e
    return out
