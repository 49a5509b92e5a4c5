"""Label tables: Cityscapes ids/trainIds/colours, GTA5 and SYNTHIA id->trainId maps.

The 19 evaluation classes of Table II (GTA5 -> Cityscapes), and the 16- and
13-class subsets of Table III (SYNTHIA -> Cityscapes) are defined here and only
here; every other module imports them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE = 255  # trainId of pixels that are not evaluated (and not trained on)
NUM_CLASSES = 19


@dataclass(frozen=True)
class Label:
    name: str
    id: int
    train_id: int
    category: str
    color: tuple[int, int, int]


# Cityscapes label definition (labels.py of cityscapesScripts, restated as data).
LABELS: tuple[Label, ...] = (
    Label("unlabeled", 0, 255, "void", (0, 0, 0)),
    Label("ego vehicle", 1, 255, "void", (0, 0, 0)),
    Label("rectification border", 2, 255, "void", (0, 0, 0)),
    Label("out of roi", 3, 255, "void", (0, 0, 0)),
    Label("static", 4, 255, "void", (0, 0, 0)),
    Label("dynamic", 5, 255, "void", (111, 74, 0)),
    Label("ground", 6, 255, "void", (81, 0, 81)),
    Label("road", 7, 0, "flat", (128, 64, 128)),
    Label("sidewalk", 8, 1, "flat", (244, 35, 232)),
    Label("parking", 9, 255, "flat", (250, 170, 160)),
    Label("rail track", 10, 255, "flat", (230, 150, 140)),
    Label("building", 11, 2, "construction", (70, 70, 70)),
    Label("wall", 12, 3, "construction", (102, 102, 156)),
    Label("fence", 13, 4, "construction", (190, 153, 153)),
    Label("guard rail", 14, 255, "construction", (180, 165, 180)),
    Label("bridge", 15, 255, "construction", (150, 100, 100)),
    Label("tunnel", 16, 255, "construction", (150, 120, 90)),
    Label("pole", 17, 5, "object", (153, 153, 153)),
    Label("polegroup", 18, 255, "object", (153, 153, 153)),
    Label("traffic light", 19, 6, "object", (250, 170, 30)),
    Label("traffic sign", 20, 7, "object", (220, 220, 0)),
    Label("vegetation", 21, 8, "nature", (107, 142, 35)),
    Label("terrain", 22, 9, "nature", (152, 251, 152)),
    Label("sky", 23, 10, "sky", (70, 130, 180)),
    Label("person", 24, 11, "human", (220, 20, 60)),
    Label("rider", 25, 12, "human", (255, 0, 0)),
    Label("car", 26, 13, "vehicle", (0, 0, 142)),
    Label("truck", 27, 14, "vehicle", (0, 0, 70)),
    Label("bus", 28, 15, "vehicle", (0, 60, 100)),
    Label("caravan", 29, 255, "vehicle", (0, 0, 90)),
    Label("trailer", 30, 255, "vehicle", (0, 0, 110)),
    Label("train", 31, 16, "vehicle", (0, 80, 100)),
    Label("motorcycle", 32, 17, "vehicle", (0, 0, 230)),
    Label("bicycle", 33, 18, "vehicle", (119, 11, 32)),
)

TRAIN_LABELS: tuple[Label, ...] = tuple(sorted((l for l in LABELS if l.train_id != IGNORE), key=lambda l: l.train_id))
CLASS_NAMES: tuple[str, ...] = tuple(l.name for l in TRAIN_LABELS)  # index = trainId, Table II row order
TRAIN_ID_TO_LABEL_ID = np.array([l.id for l in TRAIN_LABELS], dtype=np.uint8)
PALETTE = np.array([l.color for l in TRAIN_LABELS], dtype=np.uint8)  # trainId -> RGB

CITYSCAPES_ID_TO_TRAIN_ID = {l.id: l.train_id for l in LABELS}
# GTA5 label PNGs are palette images whose indices are Cityscapes label ids.
GTA5_ID_TO_TRAIN_ID = {l.id: l.train_id for l in TRAIN_LABELS}
# SYNTHIA-RAND-CITYSCAPES class ids (R channel of the 16-bit label) -> trainId.
SYNTHIA_ID_TO_TRAIN_ID = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9,
                          1: 10, 10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
TRAIN_ID_TO_SYNTHIA_ID = {v: k for k, v in SYNTHIA_ID_TO_TRAIN_ID.items()}

# Evaluation subsets (trainIds). 16: SYNTHIA's classes; 13: 16 minus wall, fence, pole.
SUBSETS: dict[int, tuple[int, ...]] = {
    19: tuple(range(19)),
    16: (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18),
    13: (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18),
}

# Thing classes (object level, Eq. 1) and stuff classes (background, Eq. 4-6), trainIds.
THING_CLASSES: tuple[int, ...] = (5, 6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
STUFF_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4, 8, 9, 10)


def label_id_palette() -> np.ndarray:
    """256 x 3 uint8: the Cityscapes colour of each label id (black elsewhere); GTA5 label palette."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for l in LABELS:
        pal[l.id] = l.color
    return pal


def lookup_table(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    """A uint8 array lut with lut[id] = trainId, 255 for ids outside the mapping."""
    lut = np.full(size, IGNORE, dtype=np.uint8)
    for k, v in mapping.items():
        if 0 <= k < size:
            lut[k] = v
    return lut


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """H x W trainIds -> H x W x 3 uint8 Cityscapes colours (255 -> black)."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    pal[: len(PALETTE)] = PALETTE
    return pal[train_ids]
