"""Pre-resized copies of a split (`phfa data prepare`), so a training step never waits for
full-size PNG decoding.

Decoding a 1914x1052 GTA5 PNG pair and resizing it to 1280x720 costs ~85 ms of one CPU core,
a 2048x1024 Cityscapes image as much again; a prepared 1280x720 pair decodes in a fraction of
that. `phfa data prepare DOMAIN --size WxH` writes, once, exactly what
`pipeline.data.datasets.load_pair(spec, sample, (W, H))` returns:

    images: RGB PNG, resized bicubic (lossless, so bit-identical to the on-the-fly result)
    labels: trainId PNG (uint8, 255 = ignore), resized nearest

Where: `<domain root>/.phfa-cache/<W>x<H>/<split>/{images,labels}/<name>.png`, plus
`index.json` there. With the environment variable PHFA_CACHE set (a read-only dataset
root), `$PHFA_CACHE/<domain format>-<hash of the root path>/<W>x<H>/<split>/` instead;
`phfa data prepare` and training must then see the same PHFA_CACHE.

Invalidation: index.json records, per sample, the source image and label paths with their
byte size and mtime (ns). An entry is used only while both still match (size + mtime, as
make and rsync decide); any other sample falls back to decoding the full-size files.
`SegDataset` opens the index once (`open_index`) and serves the fresh entries from it.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from pipeline.config import MAX_SIDE, check_range
from pipeline.data import formats, pngio
from pipeline.data.dataconfig import DomainSpec
from pipeline.errors import PhfaError
from pipeline.runtime.atomic import write_json

CACHE_DIR = ".phfa-cache"
INDEX = "index.json"
VERSION = 1
ENV = "PHFA_CACHE"

# load(spec, sample, size) -> (uint8 HxWx3, uint8 HxW trainIds or None): datasets.load_pair
Loader = Callable[[DomainSpec, formats.Sample, tuple[int, int]], tuple[np.ndarray, np.ndarray | None]]


def cache_dir(spec: DomainSpec, split: str, size: tuple[int, int]) -> Path:
    """Folder holding the prepared copies of (domain, split, size)."""
    w, h = size
    env = os.environ.get(ENV)
    if env:
        key = hashlib.sha1(str(Path(spec.root).resolve()).encode()).hexdigest()[:12]
        base = Path(env).expanduser() / f"{spec.format}-{key}"
    else:
        base = Path(spec.root) / CACHE_DIR
    return base / f"{w}x{h}" / split


def _stat(p: Path | None) -> list[int] | None:
    if p is None:
        return None
    st = os.stat(p)
    return [st.st_size, st.st_mtime_ns]


def _source_key(s: formats.Sample) -> dict:
    """What a prepared entry was made from: paths, byte sizes and mtimes of image and label."""
    return {"image": str(s.image), "image_stat": _stat(s.image),
            "label": None if s.label is None else str(s.label), "label_stat": _stat(s.label)}


def _fresh(entry: dict | None, s: formats.Sample) -> bool:
    if entry is None:
        return False
    try:
        return {k: entry.get(k) for k in ("image", "image_stat", "label", "label_stat")} == _source_key(s)
    except OSError:  # the source vanished
        return False


def _read_index(d: Path, size: tuple[int, int]) -> dict:
    p = d / INDEX
    try:
        idx = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    if idx.get("version") != VERSION or tuple(idx.get("size", ())) != tuple(size):
        return {}
    return idx.get("entries", {})


class PreparedIndex:
    """The fresh prepared entries of one (domain, split, size) for a list of samples."""

    def __init__(self, folder: Path, fresh: dict[str, bool]):
        self.folder = folder
        self.fresh = fresh                   # sample name -> entry usable (label present too)

    def covers_all(self) -> bool:
        return bool(self.fresh) and all(self.fresh.values())

    def count(self) -> int:
        return sum(self.fresh.values())

    def get(self, s: formats.Sample, with_label: bool = True) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The prepared (image, trainIds) of `s`, or None (not prepared, stale, or unreadable)."""
        if not self.fresh.get(s.name):
            return None
        try:
            img = pngio.read_rgb(self.folder / "images" / f"{s.name}.png")
            lab = None
            if with_label and s.label is not None:
                lab = pngio.read_index(self.folder / "labels" / f"{s.name}.png")
        except PhfaError:
            return None
        return img, lab


def open_index(spec: DomainSpec, split: str, size: tuple[int, int] | None,
               items: list[formats.Sample]) -> PreparedIndex | None:
    """The prepared copies usable for `items`, or None when nothing is prepared for this size."""
    if size is None:
        return None
    d = cache_dir(spec, split, tuple(size))
    entries = _read_index(d, tuple(size))
    if not entries:
        return None
    fresh = {s.name: _fresh(entries.get(s.name), s) for s in items}
    return PreparedIndex(d, fresh) if any(fresh.values()) else None


def prepare_split(spec: DomainSpec, split: str, size: tuple[int, int], items: list[formats.Sample],
                  load: Loader, workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the prepared copies of `items` (skipping fresh ones) and the index.

    `load` is `pipeline.data.datasets.load_pair` (passed in: datasets imports this module).
    Returns {"folder", "written", "kept", "total"}. The index is saved every 200 samples and
    at the end, so an interrupted run keeps what it wrote.
    """
    size = (int(size[0]), int(size[1]))
    if min(size) < 1 or max(size) > MAX_SIDE:
        raise PhfaError(f"--size {size[0]}x{size[1]}: each side must lie in 1-{MAX_SIDE} pixels")
    if workers is not None:
        check_range("--workers", workers, at_least=1, at_most=256)
    d = cache_dir(spec, split, size)
    old = _read_index(d, size)
    entries: dict[str, dict] = {s.name: old[s.name] for s in items if _fresh(old.get(s.name), s)}
    todo = [s for s in items if s.name not in entries]
    lock = threading.Lock()

    def save_index():
        write_json(d / INDEX, {"version": VERSION, "size": list(size), "domain": spec.name,
                               "format": spec.format, "root": str(spec.root), "split": split,
                               "entries": dict(sorted(entries.items()))})

    def one(s: formats.Sample) -> None:
        key = _source_key(s)  # before decoding: a file changed meanwhile makes the entry stale
        img, lab = load(spec, s, size)
        pngio.write_png(d / "images" / f"{s.name}.png", img)
        if lab is not None:
            pngio.write_png(d / "labels" / f"{s.name}.png", lab)
        with lock:
            entries[s.name] = key

    done = 0
    total = len(todo)
    if progress:
        progress(0, total)
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as ex:
        for _ in ex.map(one, todo):  # PIL decodes, resizes and encodes without the GIL
            done += 1
            if progress:
                progress(done, total)
            if done % 200 == 0:
                with lock:
                    save_index()
    save_index()
    return {"folder": str(d), "written": total, "kept": len(items) - total, "total": len(items)}
