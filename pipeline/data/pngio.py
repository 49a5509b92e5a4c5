"""PNG reading and writing that names the file on failure.

8-bit images and labels go through Pillow; SYNTHIA's 16-bit 3-channel labels go
through OpenCV (`IMREAD_UNCHANGED`), because Pillow keeps only 8 bits of them.
All writes are atomic (temp file in the same folder, then `os.replace`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import PhfaError
from pipeline.runtime.atomic import atomic_path


def read_rgb(path: str | Path) -> np.ndarray:
    """H x W x 3 uint8 RGB."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises many kinds for truncated/garbage files
        raise PhfaError(f"cannot read image {path}: {type(e).__name__}: {e}") from e


def read_index(path: str | Path) -> np.ndarray:
    """H x W uint8 of the stored indices (palette 'P' and grey 'L' PNGs; never converted via RGB).

    A 16- or 32-bit grey label is read as it is when every id fits in 8 bits; an id above 255
    would wrap modulo 256 into a valid class, so such a file is refused by name."""
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I"):
                ids = np.asarray(im)
            else:
                if im.mode not in ("P", "L"):
                    if im.mode in ("RGB", "RGBA"):
                        return np.asarray(im)[..., 0].copy()
                    im = im.convert("L")
                return np.asarray(im).astype(np.uint8, copy=False)
    except Exception as e:
        raise PhfaError(f"cannot read label {path}: {type(e).__name__}: {e}") from e
    top = int(ids.max()) if ids.size else 0
    if top > 255 or (ids.size and int(ids.min()) < 0):
        raise PhfaError(f"label {path} is a {16 if top < 65536 else 32}-bit image holding id {top}, which an 8-bit "
                        "label map cannot hold; store the ids as an 8-bit grey or palette PNG")
    return ids.astype(np.uint8)


def read_prediction(path: str | Path) -> np.ndarray:
    """H x W uint8 of a prediction PNG, which must be an 8-bit single-channel label map ('L' or 'P').

    16-bit maps would wrap modulo 256 and colour (RGB) images are not label maps: both are refused
    with a sentence naming the file."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("L", "P"):
                return np.asarray(im).astype(np.uint8, copy=False)
    except Exception as e:
        raise PhfaError(f"cannot read prediction {path}: {type(e).__name__}: {e}") from e
    what = {"I;16": "a 16-bit", "I": "a 32-bit", "RGB": "an RGB (colour)", "RGBA": "an RGBA (colour)"}.get(mode, f"a '{mode}'")
    raise PhfaError(f"prediction {path} is {what} image, not an 8-bit single-channel label map; write trainIds "
                    "(or label ids with --pred-format labelid) as 8-bit grey PNGs, not phfa's _color output")


def read_synthia_label(path: str | Path) -> np.ndarray:
    """SYNTHIA 16-bit 3-channel label -> H x W uint16 class ids (the R channel)."""
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise PhfaError(f"cannot read label {path}: not a readable PNG")
    if arr.ndim == 2:
        return arr.astype(np.uint16)
    return arr[..., 2].astype(np.uint16)  # OpenCV gives BGR(A): R is channel 2


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header only."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:
        raise PhfaError(f"cannot read {path}: {type(e).__name__}: {e}") from e


def write_png(path: str | Path, array: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write uint8 H x W (optionally palette 'P') or H x W x 3 RGB atomically."""
    im = Image.fromarray(np.ascontiguousarray(array))
    if palette is not None:
        im = im.convert("P") if im.mode != "P" else im
        im.putpalette(palette.astype(np.uint8).reshape(-1).tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def write_png16(path: str | Path, array: np.ndarray) -> None:
    """Write an H x W x 3 uint16 array given in RGB order as a 16-bit PNG, atomically."""
    import cv2

    arr = np.ascontiguousarray(array.astype(np.uint16)[..., ::-1])  # RGB -> BGR for OpenCV
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), arr):
            raise PhfaError(f"cannot write {path}")
