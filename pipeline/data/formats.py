"""One reader per dataset layout (gta5, synthia, cityscapes, folder).

A reader lists the samples of a split (name, image path, label path) and decodes a
label file into trainIds. What differs between datasets (folders, suffixes, native
size, valid ids, known-bad files) is read from `data_manifests/<format>.toml`, not
scattered through the code.
"""
from __future__ import annotations

import functools
from importlib import resources
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline import classes as C
from pipeline.data import pngio
from pipeline.errors import PhfaError
from pipeline.textfiles import read_text

IMAGE_EXTS = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Sample:
    name: str                # unique within the split; predictions are matched by it
    image: Path
    label: Path | None       # None when the split has no labels


@dataclass(frozen=True)
class DecodedLabel:
    train_ids: np.ndarray    # H x W uint8, 255 = ignore
    unknown: int             # pixels whose id is outside the dataset's id range


@functools.lru_cache(maxsize=None)
def dataset_manifest(fmt: str) -> dict:
    """The shipped description of a layout (data_manifests/<fmt>.toml, inside the installed package)."""
    p = resources.files("pipeline.data_manifests") / f"{fmt}.toml"
    if not p.is_file():
        raise PhfaError(f"no dataset description {fmt}.toml in pipeline.data_manifests for format '{fmt}' "
                        "(is the installation complete?)")
    return tomllib.loads(p.read_text())


def _lut(fmt: str) -> np.ndarray:
    if fmt == "synthia":
        return C.lookup_table(C.SYNTHIA_ID_TO_TRAIN_ID, size=65536)
    if fmt == "folder":
        return C.lookup_table({i: i for i in range(C.NUM_CLASSES)})
    return C.lookup_table(C.GTA5_ID_TO_TRAIN_ID)


_LUTS: dict[str, np.ndarray] = {}


def read_label_ids(fmt: str, path: Path) -> np.ndarray:
    """The raw ids of a label file (uint8, or uint16 for SYNTHIA), before mapping."""
    return pngio.read_synthia_label(path) if fmt == "synthia" else pngio.read_index(path)


def id_lut(fmt: str) -> np.ndarray:
    """raw id -> trainId (255 for void and unknown ids)."""
    lut = _LUTS.get(fmt)
    if lut is None:
        lut = _LUTS[fmt] = _lut(fmt)
    return lut


def valid_ids(fmt: str, ids: np.ndarray) -> np.ndarray:
    """Boolean mask of ids inside the dataset's id range (others are counted as unknown)."""
    lo, hi = dataset_manifest(fmt)["valid_label_ids"]
    valid = (ids >= lo) & (ids <= hi)
    if fmt == "folder":
        valid |= ids == C.IGNORE
    return valid


def decode_label(fmt: str, path: Path) -> DecodedLabel:
    """Read a label file in the format's encoding and map it to trainIds."""
    ids = read_label_ids(fmt, path)
    unknown = int(ids.size - np.count_nonzero(valid_ids(fmt, ids)))
    return DecodedLabel(id_lut(fmt)[ids], unknown)


def _safe_relpath(line: str, root: Path, listfile: Path, lineno: int) -> Path:
    """A list-file line is a path inside the dataset root: absolute paths and '..' are refused."""
    p = PurePosixPath(line.replace("\\", "/"))
    if p.is_absolute() or line.startswith(("/", "~")) or ".." in p.parts or (len(line) > 1 and line[1] == ":"):
        raise PhfaError(f"{listfile} line {lineno}: '{line}' escapes the dataset root {root}; "
                        "list paths must be relative and stay inside the root")
    return root / p


def _read_list(listfile: Path, root: Path) -> list[Path]:
    if not listfile.is_file():
        raise PhfaError(f"list file {listfile} does not exist")
    out = []
    for i, raw in enumerate(read_text(listfile, "list file").splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(_safe_relpath(line, root, listfile, i))
    return out


def _split_dir(base: Path, split: str) -> Path:
    return base / split if split not in ("all", "train") or (base / split).is_dir() else base


def list_samples(fmt: str, root: Path, split: str, listfile: Path | None = None) -> list[Sample]:
    """All samples of one split, sorted by name. Raises PhfaError for a missing/empty root."""
    if not root.is_dir():
        raise PhfaError(f"dataset root {root} does not exist (check `root` in the data config)")
    m = dataset_manifest(fmt)
    images_dir, labels_dir = root / m["images"], root / m["labels"]
    if fmt == "cityscapes":
        isuf, lsuf = m["image_suffix"], m["label_suffix"]
        if listfile is not None:
            imgs = _read_list(listfile, root)
        else:
            imgs = sorted((images_dir / split).glob(f"*/*{isuf}"))
        out = []
        for ip in imgs:
            name = ip.name[: -len(isuf)] if ip.name.endswith(isuf) else ip.stem
            city = ip.parent.name
            lp = labels_dir / ip.parent.parent.name / city / f"{name}{lsuf}"
            out.append(Sample(name, ip, lp if lp.is_file() else None))
    else:
        if listfile is not None:
            imgs = _read_list(listfile, root)
            idir = images_dir
        else:
            idir = _split_dir(images_dir, split) if fmt == "folder" else images_dir
            imgs = sorted(p for p in idir.iterdir() if p.suffix.lower() in IMAGE_EXTS) if idir.is_dir() else []
        ldir = (_split_dir(labels_dir, split) if fmt == "folder" else labels_dir)
        out = []
        for ip in imgs:
            lp = (ldir / ip.relative_to(idir)).with_suffix(".png") if listfile is None else \
                labels_dir / ip.relative_to(images_dir).with_suffix(".png")
            out.append(Sample(ip.stem, ip, lp if lp.is_file() else None))
    if not out:
        where = listfile if listfile is not None else (images_dir / split if fmt == "cityscapes" else images_dir)
        raise PhfaError(f"no images found for split '{split}' under {where} (format '{fmt}')")
    out.sort(key=lambda s: s.name)
    return out


def splits_of(fmt: str, root: Path) -> list[str]:
    """Splits present on disk."""
    m = dataset_manifest(fmt)
    if fmt == "cityscapes":
        return [s for s in m["splits"] if (root / m["images"] / s).is_dir()]
    if fmt == "folder":
        subs = [p.name for p in sorted((root / m["images"]).glob("*")) if p.is_dir()]
        return subs or ["all"]
    return ["all"]
