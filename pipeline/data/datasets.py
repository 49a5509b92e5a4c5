"""Datasets over any layout: (image tensor, trainId label tensor, name), resized per preset.

Images are resized bicubic, labels nearest; a label whose size differs from its image
is resized to the image first, with a warning (GTA5 ships two such files). Images are
normalised by `pipeline.data.transforms` (ImageNet mean/std, the segmentor's convention), or,
with ``raw=True`` (the training loaders), returned as uint8 for the step to normalise on the device.
"""
from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pipeline import classes as C
from pipeline.data import formats, pngio, prepare
from pipeline.data.dataconfig import DomainSpec
from pipeline.data.transforms import PHOTOMETRIC_RANGE, photometric, to_tensor, to_uint8_tensor
from pipeline.errors import PhfaError
from pipeline.textfiles import read_text
from pipeline.runtime.atomic import write_text


def train_split(spec: DomainSpec) -> str:
    """The split a domain trains on: Cityscapes 'train', single-split datasets 'all'."""
    if spec.format == "cityscapes":
        return "train"
    if spec.format == "folder" and (spec.root / "images" / "train").is_dir():
        return "train"
    return "all"


def samples(spec: DomainSpec, split: str) -> list[formats.Sample]:
    return formats.list_samples(spec.format, spec.root, split, spec.lists.get(split))


def load_pair(spec: DomainSpec, s: formats.Sample, size: tuple[int, int] | None,
              with_label: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode one sample; resize to size=(W, H) if given. Returns uint8 HxWx3, uint8 HxW trainIds."""
    img = Image.fromarray(pngio.read_rgb(s.image))
    lab = None
    if with_label and s.label is not None:
        lab = formats.decode_label(spec.format, s.label).train_ids
        if lab.shape != (img.height, img.width):
            warnings.warn(f"label {s.label} is {lab.shape[1]}x{lab.shape[0]} but its image is "
                          f"{img.width}x{img.height}: label resized (nearest)", stacklevel=2)
            lab = np.asarray(Image.fromarray(lab).resize(img.size, Image.NEAREST))
    if size is not None and img.size != tuple(size):
        img = img.resize(tuple(size), Image.BICUBIC)
        if lab is not None:
            lab = np.asarray(Image.fromarray(lab).resize(tuple(size), Image.NEAREST))
    return np.asarray(img), lab


class SegDataset(Dataset):
    """One split of one domain. Unlabelled samples (or labels=False) give an all-255 label."""

    def __init__(self, spec: DomainSpec, split: str, size: tuple[int, int] | None = None,
                 labels: bool = True, names: list[str] | None = None, hflip: bool = False,
                 cache: bool = False, photometric: bool = False, photometric_range: float = PHOTOMETRIC_RANGE,
                 raw: bool = False):
        self.spec, self.split, self.size, self.labels, self.hflip = spec, split, size, labels, hflip
        self.raw = raw  # images as uint8 CxHxW (normalised later, on the device: transforms.normalize)
        self.photometric, self.photometric_range = photometric, photometric_range
        items = samples(spec, split)
        if names is not None:
            by = {s.name: s for s in items}
            missing = [n for n in names if n not in by]
            if missing:
                raise PhfaError(f"{len(missing)} listed image(s) of domain '{spec.name}' are not on disk, e.g. {missing[0]}")
            items = [by[n] for n in names]
        self.items = items
        # pre-resized copies written by `phfa data prepare` (pipeline/data/prepare.py), used when fresh
        self._prepared = prepare.open_index(spec, split, size, items)
        self.prepared = self._prepared is not None and self._prepared.covers_all()
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, i: int):
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        pair = self._prepared.get(self.items[i], self.labels) if self._prepared is not None else None
        if pair is None:
            pair = load_pair(self.spec, self.items[i], self.size, with_label=self.labels)
        if self._cache is not None:
            self._cache[i] = pair
        return pair

    def __getitem__(self, key):
        # key = index, or (index, flip[, augmentation seed]) from pipeline.train.StreamSampler:
        # flips and photometric changes are decided by the sampler, so that the data stream is a
        # function of (seed, iteration) alone.
        i, flip, aug = (*key, None)[:3] if isinstance(key, tuple) else (key, False, None)
        img, lab = self._load(i)
        if self.photometric and aug is not None:
            img = photometric(img, aug, self.photometric_range)
        if lab is None:
            lab = np.full(img.shape[:2], C.IGNORE, dtype=np.uint8)
        if flip and self.hflip:
            img, lab = img[:, ::-1], lab[:, ::-1]
        image = to_uint8_tensor(img) if self.raw else to_tensor(img)
        return image, torch.from_numpy(np.array(lab, dtype=np.uint8, copy=True)).long(), self.items[i].name


def select_few_shot(names: list[str], k: int, seed: int) -> list[str]:
    """Deterministic few-shot subset: sort the names, draw k with a seeded RNG, return sorted."""
    names = sorted(names)
    if k > len(names):
        raise PhfaError(f"few_shot = {k} but only {len(names)} images are available")
    return sorted(random.Random(seed).sample(names, k))


def few_shot_names(spec: DomainSpec, seed: int, listfile: Path) -> list[str]:
    """The target's few-shot list for a run: read `listfile` if an earlier stage wrote it, else draw
    and write it, so every stage of a run adapts on the same images."""
    if listfile.is_file():
        text = read_text(listfile, "the run's few-shot list", fix="delete it to draw the list again")
        names = [l.strip() for l in text.splitlines() if l.strip() and not l.startswith("#")]
        if names:
            return names
    if not spec.few_shot:
        raise PhfaError(f"target domain '{spec.name}' has no few_shot count in the data config")
    split = train_split(spec)
    names = select_few_shot([s.name for s in samples(spec, split)], spec.few_shot, seed)
    write_text(listfile, f"# few-shot target images of domain '{spec.name}', split '{split}', seed {seed}\n"
               + "\n".join(names) + "\n")
    return names
