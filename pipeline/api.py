"""The Python API: a trained phfa model as an object that labels images.

    from pipeline import Segmenter
    seg = Segmenter.from_run("runs/demo")              # the run's final model (as `phfa predict`)
    mask = seg.predict("street.jpg")                   # H x W uint8 trainIds at the image's size
    mask, prob = seg.predict(array, probabilities=True)  # prob: 19 x H x W float32 softmax

`predict` takes a file path, a PIL image or an H x W x 3 uint8 RGB array of any size. As
`phfa predict` does, the image is resized (bicubic) to the size the model was trained on (the
stage's `target_size`, `Segmenter.size`), normalised as in training, and the logits are
upsampled (bilinear) back to the image's own size before the argmax; `size=(W, H)` in
`from_run`/`from_checkpoint` runs the network at another size. Class names are in
`Segmenter.classes` (index = trainId); `pipeline.classes.colorize(mask)` gives the Cityscapes
colours. Anything that is not such an image is refused with a ``PhfaError`` that says why.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline import classes as C
from pipeline import inference
from pipeline.config import from_dict
from pipeline.data import pngio
from pipeline.data.transforms import to_tensor
from pipeline.errors import PhfaError
from pipeline.models.segmentor import load_segmentor
from pipeline.stages.predict import resolve_checkpoint

__all__ = ["Segmenter"]


class Segmenter:
    """A segmentation model from a phfa checkpoint, ready to label single images."""

    def __init__(self, model: torch.nn.Module, size: tuple[int, int], checkpoint: Path,
                 stage: str | None = None, device: str | torch.device | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.size = (int(size[0]), int(size[1]))   # (W, H) the network sees
        self.checkpoint = Path(checkpoint)
        self.stage = stage
        self.classes = list(C.CLASS_NAMES)

    @classmethod
    def from_checkpoint(cls, path: str | Path, size: tuple[int, int] | None = None,
                        device: str | torch.device | None = None) -> "Segmenter":
        """A stage's ``final.pt`` (or any segmentor checkpoint phfa wrote)."""
        path, _ = resolve_checkpoint(Path(path), None, None)
        return cls._load(path, None, size, device)

    @classmethod
    def from_run(cls, run: str | Path, stage: str | None = None, size: tuple[int, int] | None = None,
                 device: str | torch.device | None = None) -> "Segmenter":
        """A run's stage (default: the run's final model, the one `phfa predict --run` uses)."""
        path, picked = resolve_checkpoint(None, Path(run), stage)
        return cls._load(path, stage or picked, size, device)

    @classmethod
    def _load(cls, path: Path, stage: str | None, size, device) -> "Segmenter":
        model, ck = load_segmentor(path, "checkpoint", expect_classes=C.NUM_CLASSES)
        trained = tuple(from_dict(ck.get("config", {})).target_size)
        if size is not None and (len(size) != 2 or min(int(v) for v in size) < 8):
            raise PhfaError(f"size must be (width, height) of at least 8 pixels each, not {size!r}")
        return cls(model, tuple(size) if size is not None else trained, path, stage, device)

    def __repr__(self) -> str:
        return (f"Segmenter({self.checkpoint}, stage={self.stage!r}, size={self.size}, device={self.device.type}, "
                f"{len(self.classes)} classes)")

    @staticmethod
    def _as_rgb(image: Any) -> np.ndarray:
        """H x W x 3 uint8 from a path, a PIL image or an array; one sentence for anything else."""
        if isinstance(image, (str, Path)):
            if not Path(image).is_file():
                raise PhfaError(f"image {image} does not exist")
            return pngio.read_rgb(Path(image))
        if isinstance(image, Image.Image):
            return np.asarray(image.convert("RGB"))
        if isinstance(image, np.ndarray):
            if image.ndim == 3 and image.shape[2] == 4:
                image = image[..., :3]
            if image.ndim != 3 or image.shape[2] != 3:
                raise PhfaError(f"image array must be H x W x 3 (RGB), not of shape {image.shape}")
            if image.dtype != np.uint8:
                raise PhfaError(f"image array must be uint8 (0-255), not {image.dtype}; for floats in [0, 1] "
                                "pass (a * 255).round().astype(np.uint8)")
            if min(image.shape[:2]) < 1:
                raise PhfaError(f"image array is empty (shape {image.shape})")
            return np.ascontiguousarray(image)
        raise PhfaError(f"cannot read an image from a {type(image).__name__}: pass a file path, a PIL image or an "
                        "H x W x 3 uint8 array")

    @torch.no_grad()
    def predict(self, image: Any, probabilities: bool = False):
        """trainIds (H x W uint8, the input's size); with ``probabilities`` also the softmax (19 x H x W float32)."""
        rgb = self._as_rgb(image)
        h, w = rgb.shape[:2]
        pil = Image.fromarray(rgb)
        if pil.size != self.size:
            pil = pil.resize(self.size, Image.BICUBIC)
        x = to_tensor(np.asarray(pil))[None].to(self.device)
        _, logits = self.model(x)
        if probabilities:
            prob = torch.softmax(inference.upsample(logits.float(), (h, w)), dim=1)[0]
            return prob.argmax(0).to(torch.uint8).cpu().numpy(), prob.cpu().numpy()
        return inference.upsampled_argmax(logits.float(), (h, w)).cpu().numpy()
