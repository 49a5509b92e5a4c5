"""Shared fixtures: tiny datasets written in the real encodings of each layout."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import classes as C
from pipeline.data import pngio

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True, scope="session")
def _terminal_sigint():
    """The tests that press Ctrl-C (`os.kill(os.getpid(), SIGINT)`) expect SIGINT as a terminal
    delivers it. A suite started as a background job (`make test &`, `nohup`) inherits SIGINT
    ignored, and phfa then rightly installs no handler, so those tests would see no Ctrl-C:
    give the test process a terminal's default handler."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


GTA_PAL = C.label_id_palette()


def rand_train_ids(rng, h, w):
    return rng.integers(0, C.NUM_CLASSES, (h, w)).astype(np.uint8)


def write_gta5(root: Path, n: int, size=(24, 12), seed=0):
    rng = np.random.default_rng(seed)
    w, h = size
    truth = {}
    for i in range(n):
        tid = rand_train_ids(rng, h, w)
        pngio.write_png(root / "images" / f"{i:05d}.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        pngio.write_png(root / "labels" / f"{i:05d}.png", C.TRAIN_ID_TO_LABEL_ID[tid], palette=GTA_PAL)
        truth[f"{i:05d}"] = tid
    return truth


def write_synthia(root: Path, n: int, size=(20, 10), seed=0):
    rng = np.random.default_rng(seed)
    w, h = size
    truth = {}
    inv = np.array([C.TRAIN_ID_TO_SYNTHIA_ID[t] for t in range(19)], np.uint16)
    for i in range(n):
        tid = rand_train_ids(rng, h, w)
        lab = np.zeros((h, w, 3), np.uint16)
        lab[..., 0] = inv[tid]
        lab[..., 1] = rng.integers(256, 60000, (h, w))  # instance ids > 255: readers must take R
        lab[..., 2] = 1000 + tid.astype(np.uint16)
        pngio.write_png(root / "RGB" / f"{i:07d}.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        pngio.write_png16(root / "GT" / "LABELS" / f"{i:07d}.png", lab)
        truth[f"{i:07d}"] = tid
    return truth


def write_cityscapes(root: Path, n_train: int, n_val: int, size=(32, 16), seed=0):
    rng = np.random.default_rng(seed)
    w, h = size
    truth = {}
    for split, n, city in (("train", n_train, "alpha"), ("val", n_val, "beta")):
        for i in range(n):
            name = f"{city}_{i:06d}_000019"
            tid = rand_train_ids(rng, h, w)
            ids = C.TRAIN_ID_TO_LABEL_ID[tid].copy()
            ids[0, 0] = 0  # a void pixel (unlabeled) -> 255
            pngio.write_png(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png",
                            rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            pngio.write_png(root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png", ids)
            t = tid.copy()
            t[0, 0] = 255
            truth[(split, name)] = t
    return truth


def write_folder(root: Path, n: int, size=(16, 16), seed=0):
    rng = np.random.default_rng(seed)
    w, h = size
    truth = {}
    for i in range(n):
        tid = rand_train_ids(rng, h, w)
        tid[0, :2] = 255
        pngio.write_png(root / "images" / f"img{i}.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        pngio.write_png(root / "labels" / f"img{i}.png", tid)
        truth[f"img{i}"] = tid
    return truth


@pytest.fixture
def tiny_data(tmp_path):
    """All four layouts plus a phfa-data.toml; returns (config path, truth dicts)."""
    truth = {
        "gta5": write_gta5(tmp_path / "gta5", 5),
        "unity": write_synthia(tmp_path / "unity", 4),
        "cityscapes": write_cityscapes(tmp_path / "cityscapes", 12, 4),
        "mine": write_folder(tmp_path / "mine", 3),
    }
    cfg = tmp_path / "phfa-data.toml"
    cfg.write_text(
        '[domains.gta5]\nformat = "gta5"\nroot = "gta5"\n'
        '[domains.unity]\nformat = "synthia"\nroot = "unity"\n'
        '[domains.cityscapes]\nformat = "cityscapes"\nroot = "cityscapes"\nfew_shot = 5\n'
        '[domains.mine]\nformat = "folder"\nroot = "mine"\n')
    return cfg, truth


def write_tiny_domains(root: Path, few_shot: int = 4) -> Path:
    """gta5, unity (SYNTHIA) and cityscapes at 64x32 in their real layouts, and their data config."""
    write_gta5(root / "gta5", 6, size=(64, 32))
    write_synthia(root / "unity", 6, size=(64, 32))
    write_cityscapes(root / "cityscapes", 10, 3, size=(64, 32))
    cfg = root / "d.toml"
    cfg.write_text('[domains.gta5]\nformat = "gta5"\nroot = "gta5"\n[domains.unity]\nformat = "synthia"\nroot = "unity"\n'
                   f'[domains.cityscapes]\nformat = "cityscapes"\nroot = "cityscapes"\nfew_shot = {few_shot}\n')
    return cfg
