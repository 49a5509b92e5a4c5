"""Export stage: a segmentor checkpoint as one ONNX or TorchScript file, checked before it is kept.

`phfa export` takes a checkpoint (a file, or a run's stage `final.pt`; by default the run's final
model, chosen as `phfa predict` chooses it) and writes a graph with one input and one output:

    image   float32 N x 3 x H x W, RGB, `(pixel / 255 - mean) / std` with the ImageNet mean/std
            of `pipeline.data.transforms.to_tensor` (the training code's input convention)
    logits  float32 N x 19 x H x W, the model's logits upsampled (bilinear, align_corners=True,
            as `inference.predict_logits` does) to the input size; argmax over dim 1 = trainId

The upsampling is part of the graph. The model was trained on images resized (bicubic) to the
stage's `target_size`; inputs of that size give the model's accuracy, other sizes run too.

ONNX (legacy TorchScript-based exporter, opset 17): batch, height and width are dynamic axes,
unless `size` (--size W H) fixes height and width. TorchScript (`torch.jit.trace`): the traced
graph takes any batch and size; `size` only sets the size it is traced and checked at.

Metadata. Both formats carry the same JSON document: ONNX as the `metadata_props` entry `phfa`
(also `sess.get_modelmeta().custom_metadata_map["phfa"]` in onnxruntime), TorchScript as the
extra file `phfa.json` (`torch.jit.load(path, _extra_files={"phfa.json": ""})`):

    format, version   "phfa-export", 1
    classes           names, train_ids (channel i of the logits is train_ids[i]), colors (RGB palette)
    input             name "image", dtype, layout "NCHW", channel_order "RGB", value_range [0, 255]
                      of the pixels before normalisation, scale 1/255, mean, std (after scaling),
                      size [W, H] (the training target_size), resize "bicubic", dynamic (axes
                      left free), shape (as exported; strings for free axes)
    output            name "logits", classes 19, upsampling "bilinear, align_corners=True"
    model             backbone, variant, bn
    source            run, stage (null for a bare --checkpoint without a manifest beside it),
                      checkpoint, checkpoint_sha256, target (domain), phfa_version, exported (UTC)

Check. Every export is loaded back before it is kept (onnxruntime on the CPU, or `torch.jit.load`)
and run on a few target images of the run's data (the data config the stage's manifest records,
its target domain, split val else the training split; a deterministic random image when none
can be read), resized to the export size, and the first of them at 3/4 of that size (the free
axes). Its logits must match the PyTorch model's within ATOL + RTOL x max |logit| (1e-3 + 1e-5 x
the largest logit of the PyTorch model on those images) and its argmax agree on at least
MIN_AGREEMENT % of the pixels, else the export fails (PhfaError) and nothing is written. The
file is written atomically (a temp file beside it, checked, then moved into place); nothing
else is written.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from pipeline import __version__
from pipeline import classes as C
from pipeline import inference
from pipeline.config import MAX_SIDE, check_range, from_dict
from pipeline.data import datasets, pngio
from pipeline.data.dataconfig import load_data_config
from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_tensor
from pipeline.errors import PhfaError
from pipeline.models.segmentor import load_segmentor
from pipeline.runtime import layout
from pipeline.runtime.atomic import atomic_path
from pipeline.runtime.run import sha256
from pipeline.textfiles import read_json_object

FORMATS = {"onnx": (".onnx",), "torchscript": (".ts", ".pt")}   # format -> accepted --out suffixes
# max |logit difference| allowed between the export and the PyTorch model: ATOL + RTOL x the largest
# |logit| of the PyTorch model on the check images (logits reach ~170 on trained toy models, where
# onnxruntime differs by ~2e-4, about 1.3e-6 of the largest; TorchScript matches exactly)
ATOL, RTOL = 1e-3, 1e-5
MIN_AGREEMENT = 99.9    # % of pixels whose argmax must agree
CHECK_IMAGES = 3        # target images the check runs on
OPSET = 17
METADATA_KEY = "phfa"          # the ONNX metadata_props entry
EXTRA_FILE = "phfa.json"       # the TorchScript extra file
INPUT_NAME, OUTPUT_NAME = "image", "logits"
MIN_SIDE = 16

# the exporters' own deprecation notices (expected: the legacy ONNX exporter and TorchScript are
# what this module uses on purpose); every other warning still reaches the user
_EXPECTED_WARNINGS = (
    (DeprecationWarning, r"You are using the legacy TorchScript-based ONNX export", ""),
    (DeprecationWarning, r"The feature will be removed", r"torch\.onnx"),
    (FutureWarning, r"`torch\.jit\.\w+` is deprecated", r"torch\.jit"),
)


class Logits(nn.Module):
    """The exported graph: a segmentor whose logits come back at the input's own size."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        _, logits = self.model(image)
        return inference.upsample(logits, image.shape[-2:])


@contextmanager
def _quiet_exporters() -> Iterator[None]:
    with warnings.catch_warnings():
        for category, message, module in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        yield


# --------------------------------------------------------------------------- checks of the options


def check_out(out: Path, fmt: str, overwrite: bool, checkpoint: Path | None = None) -> Path:
    """The --out file for `fmt`: its folder exists, its suffix fits, it is no folder, and an
    existing file is replaced only with overwrite (never the checkpoint being exported)."""
    out = Path(out)
    suffixes = FORMATS[fmt]
    if out.is_dir():
        raise PhfaError(f"--out: {out} is a folder; give a file name ending in {suffixes[0]}")
    if out.suffix.lower() not in suffixes:
        raise PhfaError(f"--out: {out} must end in {' or '.join(suffixes)} for --format {fmt}")
    if not out.parent.is_dir():
        raise PhfaError(f"--out: the folder {out.parent} does not exist; create it first")
    if checkpoint is not None and out.exists() and out.resolve() == Path(checkpoint).resolve():
        raise PhfaError(f"--out: {out} is the checkpoint being exported; choose another file")
    if out.exists() and not overwrite:
        raise PhfaError(f"--out: {out} exists; pass --overwrite to replace it")
    return out


def check_format(fmt: str) -> str:
    f = str(fmt).lower()
    if f not in FORMATS:
        raise PhfaError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    return f


def check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    w, h = (int(v) for v in size)
    for v in (w, h):
        check_range("--size", v, at_least=MIN_SIDE, at_most=MAX_SIDE)
    return w, h


# --------------------------------------------------------------------------- metadata


def _manifest(checkpoint: Path) -> dict:
    """The manifest of the stage that wrote `checkpoint` ({} when there is none or it is damaged)."""
    man = Path(checkpoint).parent / layout.MANIFEST
    try:
        return read_json_object(man, "manifest") if man.is_file() else {}
    except PhfaError:
        return {}


def metadata(ck: dict, checkpoint: Path, run: Path | None, stage: str | None, size: tuple[int, int],
             dynamic: list[str], shape: list) -> dict:
    """The JSON document every export carries (see the module docstring)."""
    man = _manifest(checkpoint)
    arch = ck.get("arch") or {}
    return {
        "format": "phfa-export", "version": 1,
        "classes": {"names": list(C.CLASS_NAMES), "train_ids": [l.train_id for l in C.TRAIN_LABELS],
                    "colors": C.PALETTE.tolist()},
        "input": {"name": INPUT_NAME, "dtype": "float32", "layout": "NCHW", "channel_order": "RGB",
                  "value_range": [0, 255], "scale": 1 / 255, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                  "normalization": "(pixel / 255 - mean) / std", "size": list(size), "resize": "bicubic",
                  "dynamic": dynamic, "shape": shape},
        "output": {"name": OUTPUT_NAME, "classes": C.NUM_CLASSES, "upsampling": "bilinear, align_corners=True",
                   "shape": [shape[0], C.NUM_CLASSES, *shape[2:]]},
        "model": {"backbone": arch.get("backbone"), "variant": arch.get("variant", "torchvision"), "bn": arch.get("bn")},
        "source": {"run": str(run) if run is not None else None,
                   "stage": stage or man.get("stage") or None,
                   "checkpoint": str(checkpoint), "checkpoint_sha256": sha256(Path(checkpoint)),
                   "target": man.get("target") or ck.get("target"), "phfa_version": __version__,
                   "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
    }


def read_metadata(path: Path | str) -> dict:
    """The phfa document of an exported file (.onnx or TorchScript)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        import onnx
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if METADATA_KEY not in props:
            raise PhfaError(f"{path} carries no '{METADATA_KEY}' metadata; it was not written by phfa export")
        return json.loads(props[METADATA_KEY])
    extra = {EXTRA_FILE: ""}
    with _quiet_exporters():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra[EXTRA_FILE]:
        raise PhfaError(f"{path} carries no {EXTRA_FILE}; it was not written by phfa export")
    return json.loads(extra[EXTRA_FILE])


# --------------------------------------------------------------------------- check images


def check_images(checkpoint: Path, n: int = CHECK_IMAGES) -> tuple[list[np.ndarray], str]:
    """Up to `n` target images (uint8 H x W x 3) of the data the stage was trained with, and where
    they come from; a deterministic random image when the data cannot be read."""
    man = _manifest(checkpoint)
    cfg = (man.get("inputs") or {}).get("data_config")
    target = man.get("target")
    why = "no data config recorded beside the checkpoint"
    if isinstance(cfg, str) and isinstance(target, str):
        try:
            spec = load_data_config(cfg).domain(target)
            for split in dict.fromkeys(("val", datasets.train_split(spec))):
                try:
                    items = datasets.samples(spec, split)[:n]
                except PhfaError:
                    continue
                if items:
                    return [pngio.read_rgb(s.image) for s in items], f"{len(items)} image(s) of {target}/{split}"
            why = f"no image found in {target}"
        except PhfaError as e:
            why = str(e)
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (128, 256, 3), dtype=np.uint8)], f"1 random image ({why})"


def _batch(images: list[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """The images resized (bicubic) to size (W, H) and normalised, as N x 3 x H x W."""
    out = []
    for img in images:
        pil = Image.fromarray(img)
        if pil.size != tuple(size):
            pil = pil.resize(tuple(size), Image.BICUBIC)
        out.append(to_tensor(np.asarray(pil)))
    return torch.stack(out)


def compare(want: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(max |logit difference|, % of pixels whose argmax agrees) of two N x C x H x W arrays."""
    if got.shape != want.shape:
        raise PhfaError(f"the exported model returned logits of shape {list(got.shape)}, expected {list(want.shape)}")
    diff = float(np.abs(got.astype(np.float64) - want).max()) if want.size else 0.0
    if not np.isfinite(got).all():
        diff = float("inf")
    agree = 100.0 * float((got.argmax(1) == want.argmax(1)).mean())
    return diff, agree


# --------------------------------------------------------------------------- writers


def _write_onnx(wrapped: nn.Module, example: torch.Tensor, tmp: Path, meta: dict, dynamic: bool) -> None:
    import onnx

    axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
    buf = io.BytesIO()
    with _quiet_exporters(), torch.no_grad():
        torch.onnx.export(wrapped, (example,), buf, dynamo=False, opset_version=OPSET, do_constant_folding=True,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes})
    model = onnx.load_from_string(buf.getvalue())
    model.producer_name, model.producer_version = "phfa", __version__
    model.doc_string = (f"phfa segmentor: {INPUT_NAME} float32 NCHW RGB normalised (pixel/255 - mean)/std -> "
                        f"{OUTPUT_NAME} N x {C.NUM_CLASSES} x H x W; metadata_props['{METADATA_KEY}'] has the details")
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(model, str(tmp))


def _run_onnx(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]


def _write_torchscript(wrapped: nn.Module, example: torch.Tensor, tmp: Path, meta: dict) -> None:
    with _quiet_exporters(), torch.no_grad():
        traced = torch.jit.trace(wrapped, (example,), check_trace=False)
        torch.jit.save(traced, str(tmp), _extra_files={EXTRA_FILE: json.dumps(meta)})


def _run_torchscript(path: Path):
    with _quiet_exporters():
        loaded = torch.jit.load(str(path), map_location="cpu")
    loaded.eval()

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded(x).numpy()
    return run


# --------------------------------------------------------------------------- export


def export(checkpoint: Path, out: Path, fmt: str, *, run: Path | None = None, stage: str | None = None,
           size: tuple[int, int] | None = None, overwrite: bool = False, images: int = CHECK_IMAGES) -> dict:
    """Export the segmentor in `checkpoint` to `out` as `fmt` (onnx | torchscript), checked
    (see the module docstring); `run` and `stage` are recorded as its source. Returns a summary:
    out, format, bytes, size_mb, input_shape, dynamic, size, checkpoint, run, stage, check
    {input, sizes, max_abs_diff, argmax_agreement, tolerance (ATOL + RTOL x max |logit|), atol, rtol,
    min_agreement}, seconds."""
    t0 = time.time()
    fmt = check_format(fmt)
    fixed = check_size(size)
    out = check_out(out, fmt, overwrite, checkpoint)
    model, ck = load_segmentor(checkpoint, "--checkpoint", expect_classes=C.NUM_CLASSES)
    model.float().eval()
    tcfg = from_dict(ck.get("config") or {})
    train_size = tuple(int(v) for v in tcfg.target_size)
    size = fixed or train_size
    dynamic = fmt == "torchscript" or fixed is None
    free = ["batch", "height", "width"] if dynamic else ["batch"]
    shape = ["batch", 3, "height", "width"] if dynamic else ["batch", 3, size[1], size[0]]
    meta = metadata(ck, checkpoint, run, stage, train_size, free, shape)
    wrapped = Logits(model).eval()

    pictures, where = check_images(checkpoint, images)
    sizes = [size]
    inputs = [_batch(pictures, size)]
    if dynamic:  # the free axes are checked at another size too, on one image
        sizes.append((max(MIN_SIDE, round(size[0] * 3 / 4)), max(MIN_SIDE, round(size[1] * 3 / 4))))
        inputs.append(_batch(pictures[:1], sizes[-1]))
    with torch.no_grad():
        wants = [wrapped(x).numpy() for x in inputs]
    tolerance = ATOL + RTOL * max(float(np.abs(w).max()) for w in wants)

    with atomic_path(out, suffix=out.suffix) as tmp:
        if fmt == "onnx":
            _write_onnx(wrapped, inputs[0][:1], tmp, meta, dynamic)
            forward = _run_onnx(tmp)
        else:
            _write_torchscript(wrapped, inputs[0][:1], tmp, meta)
            forward = _run_torchscript(tmp)
        diffs, agrees = zip(*(compare(w, forward(x)) for w, x in zip(wants, inputs)))
        diff, agree = max(diffs), min(agrees)
        if not (diff <= tolerance) or agree < MIN_AGREEMENT:
            raise PhfaError(f"the exported model does not reproduce {checkpoint} on {where}: max |logit difference| "
                            f"{diff:.3g} (tolerance {tolerance:.3g}), argmax agreement {agree:.3f} % (at least "
                            f"{MIN_AGREEMENT} % needed); nothing was written to {out}")
        nbytes = tmp.stat().st_size
    return {"out": str(out), "format": fmt, "bytes": nbytes, "size_mb": round(nbytes / 2**20, 2),
            "input_shape": shape, "dynamic": free, "size": list(size), "train_size": list(train_size),
            "checkpoint": str(checkpoint), "run": str(run) if run is not None else None, "stage": meta["source"]["stage"],
            "check": {"input": where, "sizes": [list(s) for s in sizes], "max_abs_diff": diff,
                      "argmax_agreement": agree, "tolerance": tolerance, "atol": ATOL, "rtol": RTOL,
                      "min_agreement": MIN_AGREEMENT},
            "seconds": round(time.time() - t0, 3)}
