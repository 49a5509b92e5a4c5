"""Dataset doctor (`phfa data check`): counts, sizes, class frequencies, unreadable files,
image/label size mismatches and label ids outside the dataset's map, per domain and split."""
from __future__ import annotations

import os
import stat
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from pipeline import classes as C
from pipeline.data import formats, pngio
from pipeline.data.dataconfig import DataConfig
from pipeline.errors import PhfaError


@dataclass
class SplitReport:
    domain: str
    split: str
    images: int = 0
    labelled: int = 0
    sizes: Counter = field(default_factory=Counter)          # (w, h) of images
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(C.NUM_CLASSES, np.int64))
    ignored_pixels: int = 0
    unreadable: list[str] = field(default_factory=list)      # "path: reason"
    size_mismatch: list[str] = field(default_factory=list)
    unknown_ids: int = 0                                     # pixels, mapped to 255
    files_with_unknown: int = 0
    known_bad: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.images > 0 and not self.unreadable

    def to_dict(self) -> dict:
        tot = max(int(self.class_pixels.sum()), 1)
        return {
            "domain": self.domain, "split": self.split, "images": self.images, "labelled": self.labelled,
            "sizes": {f"{w}x{h}": n for (w, h), n in self.sizes.most_common()},
            "class_frequency": {C.CLASS_NAMES[c]: float(self.class_pixels[c] / tot) for c in range(C.NUM_CLASSES)},
            "unreadable": self.unreadable, "size_mismatch": self.size_mismatch,
            "unknown_id_pixels": self.unknown_ids, "files_with_unknown_ids": self.files_with_unknown,
            "usable": self.usable,
        }


@dataclass
class DomainReport:
    domain: str
    error: str | None = None
    splits: list[SplitReport] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.error is None and bool(self.splits) and all(s.usable for s in self.splits)


def _check_sample(fmt: str, s: formats.Sample):
    """-> (size, label info or None, problems)"""
    for p in (s.image, s.label):
        why = damaged(p) if p is not None else None
        if why:  # before any decoder opens it: a FIFO or device would block it
            return None, None, f"{p}: {why}"
    try:
        size = pngio.image_size(s.image)
        pngio.read_rgb(s.image)  # a truncated file only fails when decoded
    except PhfaError as e:
        return None, None, str(e)
    if s.label is None:
        return size, None, None
    try:
        dec = formats.decode_label(fmt, s.label)
    except PhfaError as e:
        return size, None, str(e)
    return size, dec, None


def check_domain(cfg: DataConfig, name: str, splits: list[str] | None = None,
                 progress=None, workers: int | None = None) -> DomainReport:
    spec = cfg.domain(name, option="DOMAIN")
    rep = DomainReport(name)
    if not spec.root.is_dir():
        rep.error = f"dataset root {spec.root} does not exist"
        return rep
    man = formats.dataset_manifest(spec.format)
    known_bad = {k["file"]: k["problem"] for k in man.get("known_bad", [])}
    try:
        todo = splits or formats.splits_of(spec.format, spec.root)
    except PhfaError as e:
        rep.error = str(e)
        return rep
    if not todo:
        rep.error = f"no splits found under {spec.root}"
        return rep
    for split in todo:
        sr = SplitReport(name, split)
        try:
            items = formats.list_samples(spec.format, spec.root, split, spec.lists.get(split))
        except PhfaError as e:
            rep.error = str(e)
            return rep
        sr.images = len(items)
        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as ex:
            for i, (s, (size, dec, problem)) in enumerate(zip(items, ex.map(lambda s: _check_sample(spec.format, s), items))):
                if progress:
                    progress(f"{name}/{split}", i + 1, len(items))
                if problem:
                    sr.unreadable.append(problem)
                    continue
                sr.sizes[size] += 1
                if s.image.name in known_bad:
                    sr.known_bad.append(f"{s.image.name}: {known_bad[s.image.name]}")
                if dec is None:
                    continue
                sr.labelled += 1
                lab = dec.train_ids
                if (lab.shape[1], lab.shape[0]) != size:
                    sr.size_mismatch.append(f"{s.label} is {lab.shape[1]}x{lab.shape[0]}, image {size[0]}x{size[1]}")
                if dec.unknown:
                    sr.unknown_ids += dec.unknown
                    sr.files_with_unknown += 1
                cnt = np.bincount(lab.reshape(-1), minlength=256)
                sr.class_pixels += cnt[: C.NUM_CLASSES]
                sr.ignored_pixels += int(cnt[C.IGNORE])
        rep.splits.append(sr)
    return rep


# ----------------------------------------------------------------------------- quick pre-training check

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"


def damaged(path) -> str | None:
    """Why a file cannot be a complete image, from its first and last bytes only (cheap: no decoding);
    None when it looks complete. Catches missing, empty and truncated PNG/JPEG files, the usual
    result of partial downloads."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file (a FIFO, device or socket named like an image)"
        size = st.st_size
        if size == 0:
            return "empty file"
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, size - 12))
            tail = f.read(12)
    except OSError as e:
        return f"cannot open ({e.strerror})"
    if head.startswith(_PNG_MAGIC):
        return None if tail.endswith(_PNG_END) else "truncated PNG (no IEND chunk at the end)"
    if head.startswith(b"\xff\xd8"):
        return None if tail.rstrip(b"\x00").endswith(b"\xff\xd9") else "truncated JPEG (no end marker)"
    return "not a PNG or JPEG file"


def check_files(items, what: str, workers: int | None = None) -> None:
    """Refuse training on data with damaged files: one sentence naming the first and the count.

    `items` are formats.Sample; images and labels are both checked before any stage folder exists."""
    paths = [p for s in items for p in (s.image, s.label) if p is not None]
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as ex:
        reasons = list(ex.map(damaged, paths))
    bad = [(p, r) for p, r in zip(paths, reasons) if r]
    if bad:
        p, r = bad[0]
        more = f" ({len(bad) - 1} more damaged files)" if len(bad) > 1 else ""
        raise PhfaError(f"{what}: {p} is damaged: {r}{more}; re-download or remove it "
                        f"(`phfa data check` lists every problem)")
