"""Prediction stage: a segmentor checkpoint labels any images, written as PNGs at their own size.

`phfa predict` runs a checkpoint (a file, or a run's stage `final.pt`) on image files, folders
(recursive: .png/.jpg/.jpeg) and glob patterns (`**` allowed). Every image is resized (bicubic)
to the checkpoint's `target_size`, normalised (`to_tensor`) and batched with the others (all
inputs share that size); each image's logits are upsampled (bilinear, align_corners=True, as
`inference.predict_logits` does) to its original size and arg-maxed, in bands of rows so that a
large photo costs a few bytes a pixel (`inference.upsampled_argmax`). Per image, OUT gets

    <stem>.png          trainIds 0-18, 8-bit grey ('L')
    <stem>_color.png    the Cityscapes palette (RGB)
    <stem>_overlay.png  the image blended 50/50 with the colours (with overlay=True)

so `phfa eval --pred-dir OUT` can score them. OUT follows `outdir.open_out`: a file there that phfa
did not write is replaced only with `--overwrite`, and a dataset is never written into. Inputs
whose output names would clash (same stem in different folders, `x.png` beside `x.jpg`, `a.png`
beside `a_color.png`) are written under their sub-folders relative to their common folder, then
with a suffix: nothing is overwritten silently, and the summary lists every renamed output. An unreadable file is skipped, with the
reason, and the others are still written. Decoding and PNG encoding run in threads (both release
the GIL) while the model runs; all writes are atomic.
"""
from __future__ import annotations

import glob
import os
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from pipeline import classes as C
from pipeline import inference
from pipeline.config import check_range, from_dict
from pipeline.data import pngio
from pipeline.data.dataconfig import load_data_config
from pipeline.data.transforms import to_tensor
from pipeline.errors import PhfaError
from pipeline.models.segmentor import load_segmentor
from pipeline.runtime import layout
from pipeline.runtime.run import StageDir
from pipeline.runtime.runindex import RunIndex
from pipeline.stages.outdir import dataset_roots, open_out
from pipeline.textfiles import read_json_object

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
PRECISIONS = ("auto", "bf16", "fp32")
OUTPUT_SUFFIXES = ("", "_color", "_overlay")
_GLOB_CHARS = set("*?[")

Progress = Callable[[int, int], None]


@dataclass
class Source:
    """One input image and where its outputs go (`key`: OUT-relative path without suffix)."""
    path: Path
    base: Path          # the folder the name is taken relative to when names clash
    key: str = ""


# --------------------------------------------------------------------------- checkpoint


def final_stage(run: Path) -> str:
    """The run's final model, as the run index names it (the last retrain round of the PHFA chain,
    else the PHFA stage, ...; see pipeline/runtime/runindex.py)."""
    final = RunIndex(run).final()
    if final is None:
        raise PhfaError(f"--run: {run} has no finished stage with a final.pt; run `phfa adapt --run {run} ...` "
                        "first, or pass --checkpoint")
    return final


def resolve_checkpoint(checkpoint: Path | None, run: Path | None, stage: str | None) -> tuple[Path, str | None]:
    """(checkpoint path, stage name picked automatically or None) from --checkpoint | --run [--stage]."""
    if checkpoint is not None and run is not None:
        raise PhfaError("give --checkpoint or --run, not both")
    if checkpoint is None and run is None:
        raise PhfaError("give the model: --checkpoint PATH or --run RUN (with --stage NAME to choose a stage)")
    if checkpoint is not None:
        if stage is not None:
            raise PhfaError("--stage needs --run (it names a stage folder of the run)")
        if not Path(checkpoint).is_file():
            raise PhfaError(f"--checkpoint: {checkpoint} does not exist")
        return Path(checkpoint), None
    run = Path(run)
    if stage is None:
        picked = final_stage(run)
        return StageDir(run, picked).model("--run"), picked
    layout.plain_name(stage, "--stage")
    if not run.is_dir():
        raise PhfaError(f"--run: {run} does not exist")
    sd = StageDir(run, stage)
    if not sd.finished() or not (sd.path / layout.FINAL).is_file():
        done = RunIndex(run).models()
        raise PhfaError(f"--stage: {sd.path} is missing or unfinished (no final.pt)" +
                        (f"; stages with a model: {', '.join(done)}" if done else "; run that stage first"))
    return sd.model("--stage"), None


# --------------------------------------------------------------------------- inputs


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTS


def _within(p: Path, folder: Path | None) -> bool:
    return folder is not None and (p == folder or folder in p.parents)


def collect(images: Sequence[str | Path], exclude: Path | None = None) -> tuple[list[Source], list[dict]]:
    """Expand IMAGES into sources (argument order, each argument sorted; duplicates dropped) and
    skipped entries. Folders give their images recursively, leaving out anything under `exclude`
    (the output folder); files are attempted whatever their extension; globs expand like a shell
    (`**` recursive) and keep the image files, or every match when the pattern names an extension
    (`scans/*.tif`)."""
    exclude = exclude.resolve() if exclude is not None else None
    found: list[Source] = []
    skipped: list[dict] = []
    seen: set[Path] = set()

    def add(p: Path, base: Path):
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            found.append(Source(p, base))

    def add_folder(d: Path) -> int:
        n = 0
        for p in sorted(d.rglob("*")):
            if p.is_file() and _is_image(p) and not _within(p.resolve(), exclude):
                add(p, d)
                n += 1
        return n

    for arg in images:
        text = str(arg)
        p = Path(text)
        if p.is_dir():
            if add_folder(p) == 0:
                where = " outside --out" if _within(exclude, p.resolve()) else ""
                skipped.append({"path": text, "reason": f"folder holds no {'/'.join(IMAGE_EXTS)} image{where}"})
        elif p.is_file():
            add(p, p.parent)
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            last = Path(text).name
            any_ext = "." in last and not (_GLOB_CHARS & set(last.rsplit(".", 1)[1]))  # e.g. '*.webp'
            n = 0
            for m in map(Path, matches):
                if m.is_file():
                    if (any_ext or _is_image(m)) and not _within(m.resolve(), exclude):
                        add(m, m.parent)
                        n += 1
                elif m.is_dir() and not text.endswith("**"):  # `dir/**` lists the files too
                    n += add_folder(m)
            if n == 0:
                skipped.append({"path": text, "reason": "pattern matches no image"})
        else:
            skipped.append({"path": text, "reason": "no such file or folder"})
    return found, skipped


def assign_names(sources: list[Source]) -> list[dict]:
    """Give every source a unique output key; returns [{image, output}] for keys other than its stem.

    Names are compared case-insensitively (macOS and Windows folders), over all three outputs."""
    by_stem: dict[str, list[Source]] = defaultdict(list)
    for s in sources:
        by_stem[s.path.stem.lower()].append(s)
    for group in by_stem.values():
        if len(group) == 1:
            group[0].key = group[0].path.stem
            continue
        common = Path(os.path.commonpath([str(s.path.resolve().parent) for s in group]))
        for s in group:
            s.key = s.path.resolve().with_suffix("").relative_to(common).as_posix()
        keys = defaultdict(list)
        for s in group:
            keys[s.key.lower()].append(s)
        for same in keys.values():
            if len(same) > 1:  # x.png beside x.jpg
                for s in same:
                    s.key = f"{s.key}_{s.path.suffix.lstrip('.').lower() or 'noext'}"
    taken: set[str] = set()
    for s in sources:  # last resort: a clash across groups (e.g. a.png beside a_color.png)
        base, n = s.key, 1
        while any(f"{s.key}{suf}".lower() in taken for suf in OUTPUT_SUFFIXES):
            n += 1
            s.key = f"{base}-{n}"
        taken.update(f"{s.key}{suf}".lower() for suf in OUTPUT_SUFFIXES)
    return [{"image": str(s.path), "output": f"{s.key}.png"} for s in sources if s.key != s.path.stem]


def output_paths(out: Path, key: str, overlay: bool) -> list[Path]:
    sufs = OUTPUT_SUFFIXES if overlay else OUTPUT_SUFFIXES[:2]
    return [Path(out) / f"{key}{suf}.png" for suf in sufs]


# --------------------------------------------------------------------------- prediction


def _load(path: Path, size: tuple[int, int], keep: bool):
    """(resized model input tensor, original H x W, original image if `keep`) or an error reason."""
    try:
        img = pngio.read_rgb(path)
    except PhfaError as e:
        cause = e.__cause__ or e
        return f"not a readable image ({type(cause).__name__}: {cause})"
    h, w = img.shape[:2]
    pil = Image.fromarray(img)
    if pil.size != tuple(size):
        pil = pil.resize(tuple(size), Image.BICUBIC)
    return to_tensor(np.asarray(pil)), (h, w), (img if keep else None)


def _write(out: Path, key: str, pred: np.ndarray, img: np.ndarray | None) -> None:
    color = C.colorize(pred)
    try:
        pngio.write_png(Path(out) / f"{key}.png", pred)
        pngio.write_png(Path(out) / f"{key}_color.png", color)
        if img is not None:  # (img + color + 1) // 2 in uint8: no 16-bit copies of a large photo
            blend = (img >> 1) + (color >> 1) + ((img | color) & 1)
            pngio.write_png(Path(out) / f"{key}_overlay.png", blend)
    except OSError as e:
        raise PhfaError(f"--out: cannot write {Path(out) / key}.png: {e.strerror or e}") from e


@torch.no_grad()
def _forward(model: torch.nn.Module, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    """The model's logits at its output stride (what `inference.predict_logits` upsamples)."""
    with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext():
        _, logits = model(x)
    return logits.float()


def recorded_dataset_roots(checkpoint: Path) -> list[Path]:
    """The domain roots of the data config recorded by the stage that wrote `checkpoint` (if any)."""
    man = Path(checkpoint).parent / layout.MANIFEST
    try:
        cfg = (read_json_object(man, "manifest").get("inputs") or {}).get("data_config") if man.is_file() else None
        return dataset_roots(load_data_config(cfg)) if isinstance(cfg, str) and Path(cfg).is_file() else []
    except PhfaError:
        return []


def predict(images: Sequence[str | Path], out: Path, checkpoint: Path, overlay: bool = False,
            batch_size: int | None = None, precision: str | None = None, device: str | torch.device | None = None,
            progress: Progress | None = None, workers: int | None = None, overwrite: bool = False,
            size: tuple[int, int] | None = None) -> dict:
    """Label `images` with the segmentor in `checkpoint`, writing PNGs into `out` (see module doc).

    Every image goes through the network at `size` (W, H), default the checkpoint's `target_size`
    (the size it was trained on); predictions come back at each image's own size.
    precision None follows the checkpoint's config (auto = bf16 autocast on CUDA); batch_size None
    is 8 on CUDA, 4 on CPU. `out` follows `outdir.open_out`: files phfa did not write there are
    replaced only with overwrite=True, and a dataset is never written into. Returns a summary:
    written, skipped [{path, reason}], renamed [{image, output}], checkpoint, device, precision,
    batch_size, target_size, seconds, images_per_s.
    """
    t0 = time.time()
    out = Path(out)
    if precision is not None and precision not in PRECISIONS:
        raise PhfaError(f"--precision must be one of {', '.join(PRECISIONS)}, not '{precision}'")
    if batch_size is not None:
        check_range("--batch-size", batch_size, at_least=1, at_most=1024)
    if out.exists() and not out.is_dir():
        raise PhfaError(f"--out: {out} is a file, not a folder")

    sources, skipped = collect(images, exclude=out)
    if not sources:
        first = skipped[0] if skipped else {"path": "IMAGES", "reason": "nothing given"}
        raise PhfaError(f"no image to predict: {first['path']}: {first['reason']}")
    renamed = assign_names(sources)
    inputs = {s.path.resolve() for s in sources}
    for s in sources:
        for p in output_paths(out, s.key, overlay):
            if p.resolve() in inputs:
                raise PhfaError(f"--out: writing {p} would overwrite an input image; choose another --out")

    model, ck = load_segmentor(checkpoint, "--checkpoint", expect_classes=C.NUM_CLASSES)
    tcfg = from_dict(ck.get("config") or {})
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    prec = precision or getattr(tcfg, "precision", "auto")
    bf16 = inference.use_bf16(prec, dev)
    batch = batch_size or (8 if dev.type == "cuda" else 4)
    if size is not None:
        if len(size) != 2:
            raise PhfaError(f"--size takes W,H (e.g. 1024,512), not {','.join(map(str, size))}")
        for v in size:
            check_range("--size", v, at_least=16, at_most=8192)
    size = tuple(size) if size is not None else tuple(tcfg.target_size)
    model.to(dev).eval()
    names = [p.relative_to(out).as_posix() for s in sources for p in output_paths(out, s.key, overlay)]
    open_out(out, names, overwrite=overwrite,
             protected=recorded_dataset_roots(checkpoint) + dataset_roots(near=out))

    total, done, written = len(sources), 0, 0
    if progress is not None:
        progress(0, total)
    nthreads = workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(nthreads) as readers, ThreadPoolExecutor(nthreads) as writers:
        def submit(chunk):
            return [readers.submit(_load, s.path, size, overlay) for s in chunk]

        chunks = [sources[i:i + batch] for i in range(0, total, batch)]
        pending: list[Future] = []
        nxt = submit(chunks[0])
        for ci, chunk in enumerate(chunks):
            loaded = [f.result() for f in nxt]
            nxt = submit(chunks[ci + 1]) if ci + 1 < len(chunks) else []  # decode ahead while the model runs
            good = []
            for s, r in zip(chunk, loaded):
                if isinstance(r, str):
                    skipped.append({"path": str(s.path), "reason": r})
                else:
                    good.append((s, r))
            if good:
                x = torch.stack([r[0] for _, r in good]).to(dev)
                logits = _forward(model, x, bf16)
                for i, (s, (_, hw, img)) in enumerate(good):
                    pred = inference.upsampled_argmax(logits[i:i + 1], hw).cpu().numpy()
                    pending.append((writers.submit(_write, out, s.key, pred, img), pred.size * (7 if overlay else 4)))
                del x, logits
            # bound what queued writes hold: a few images, or ~512 MB of large ones
            while len(pending) > 2 * batch * nthreads or (len(pending) > 1 and sum(n for _, n in pending) > 512 << 20):
                pending.pop(0)[0].result()
                written += 1
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        for f, _ in pending:
            f.result()
            written += 1
    seconds = time.time() - t0
    return {"written": written, "skipped": skipped, "renamed": renamed, "out": str(out),
            "checkpoint": str(checkpoint), "device": str(dev), "precision": "bf16" if bf16 else "fp32",
            "batch_size": batch, "target_size": list(size), "overlay": overlay,
            "seconds": round(seconds, 3), "images_per_s": round(written / max(seconds, 1e-9), 3)}
