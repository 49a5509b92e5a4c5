"""Inference shared by eval (Eq. 12), pseudolabel (Eq. 8) and predict: the segmentor's logits
for an image, upsampled (bilinear, align_corners=True) to the size the caller needs.

Images go in at the stage's `target_size` (the size the model was trained on for the
target), and logits come out at the label's or the original image's size.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from pipeline import classes as C
from pipeline import metrics
from pipeline.data import datasets, formats, pngio
from pipeline.data.transforms import to_tensor
from pipeline.errors import PhfaError
from pipeline.runtime.progress import Reporter


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast (with channels_last in training) on CUDA unless --precision fp32."""
    return device.type == "cuda" and precision in ("auto", "bf16")


def use_channels_last(precision: str, device: torch.device) -> bool:
    """Channels-last tensors in training: with bf16 on CUDA (tensor cores), and under `auto` on the
    CPU too, where the toy training step runs 1.2-1.5x faster in that layout (whole steps measured
    by bench/cpu_memory_format.py). Same maths, another summation order: a seed's trajectory differs
    from `--precision fp32` (contiguous, the layout of figures measured before 2026-12-06) as a
    thread count does."""
    return use_bf16(precision, device) or (device.type == "cpu" and precision == "auto")


def describe_precision(precision: str, device: torch.device) -> str:
    """The manifest's name for what training runs: bf16+channels_last, fp32+channels_last or fp32."""
    dtype = "bf16" if use_bf16(precision, device) else "fp32"
    return dtype + ("+channels_last" if use_channels_last(precision, device) else "")


def upsample(logits: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)


@torch.no_grad()
def upsampled_argmax(logits: torch.Tensor, size, max_bytes: int = 16 << 20) -> torch.Tensor:
    """argmax over classes of `upsample(logits, size)` for one image ([1, C, h, w] -> H x W uint8),
    in bands of output rows so that memory stays ~`max_bytes` whatever the size (an 8000 x 6000
    photo's full-size logits would take 3.6 GB). Separable, as the bilinear kernel is: the width is
    upsampled first (C x h x W), then each band of rows is blended from its two source rows with
    align_corners=True weights."""
    (H, W), (_, c, h, _) = tuple(size), logits.shape
    wide = F.interpolate(logits.float(), size=(h, W), mode="bilinear", align_corners=True)[0]   # C x h x W
    out = torch.empty(H, W, dtype=torch.uint8, device=logits.device)
    scale = (h - 1) / (H - 1) if H > 1 else 0.0
    band = max(1, max_bytes // max(1, 4 * c * W))
    for y0 in range(0, H, band):
        src = torch.arange(y0, min(H, y0 + band), device=logits.device, dtype=torch.float32) * scale
        i0 = src.floor().long().clamp(max=h - 1)
        i1 = (i0 + 1).clamp(max=h - 1)
        t = (src - i0).view(1, -1, 1)
        rows = wide[:, i0].mul_(1 - t).add_(wide[:, i1].mul_(t))     # C x band x W, two buffers
        out[y0:y0 + len(src)] = rows.argmax(0).to(torch.uint8)
    return out


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, size, bf16: bool = False) -> torch.Tensor:
    """Logits [B, C, H, W] upsampled to `size` (H, W), float32."""
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
    with amp:
        _, logits = model(x)
    return upsample(logits.float(), size)


@torch.no_grad()
def evaluate(model: torch.nn.Module, spec, split: str, size: tuple[int, int], device: torch.device,
             bf16: bool = False, reporter: Reporter | None = None, color_dir=None, per_image: list | None = None,
             on_image: Callable | None = None):
    """Confusion matrix (numpy, 19 x 20) of `model` on a labelled split: inputs resized to `size`,
    logits upsampled to each label's native size. Accumulates on the device; one sync at the end
    (and one per image when `color_dir` asks for colourised predictions, written there, or when
    `per_image` asks for each image's own confusion matrix, appended to it in split order).
    `on_image(i, sample, image, prediction, ground_truth)` sees each image as it is evaluated (the
    resized input, the prediction on the device and the trainIds at the label's size)."""
    was_training = model.training
    model.eval()
    items = datasets.samples(spec, split)
    conf = torch.zeros(C.NUM_CLASSES, C.NUM_CLASSES + 1, dtype=torch.long, device=device)
    if reporter is not None:
        reporter.phase(f"eval {spec.name}/{split}", 0, len(items), unit="images")
    for i, s in enumerate(items):
        if s.label is None:
            raise PhfaError(f"{spec.name}/{split}: {s.image} has no label; evaluation needs a labelled split")
        img, _ = datasets.load_pair(spec, s, size, with_label=False)
        gt = formats.decode_label(spec.format, s.label).train_ids
        x = to_tensor(img)[None].to(device)
        logits = predict_logits(model, x, gt.shape, bf16)
        pred = logits.argmax(1)[0]
        one = metrics.confusion_torch(pred, torch.from_numpy(gt).to(device))
        conf += one
        if per_image is not None:
            per_image.append(one.cpu().numpy())
        if on_image is not None:
            on_image(i, s, img, pred, gt)
        if color_dir is not None:
            pngio.write_png(Path(color_dir) / f"{s.name}.png", C.colorize(pred.to(torch.uint8).cpu().numpy()))
        if reporter is not None:
            reporter.step(i + 1)
    model.train(was_training)
    return conf.cpu().numpy()
