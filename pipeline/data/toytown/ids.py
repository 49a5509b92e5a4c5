"""Class codes scenes are drawn in, and their encodings in each dataset layout.

Scenes are drawn in Cityscapes trainIds (0-18) plus a few internal codes for void regions
(255 in evaluation); each layout's label ids are looked up from those codes here.
"""
from __future__ import annotations

import numpy as np

from pipeline import classes as C

# trainIds
(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY,
 PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTO, BIKE) = range(19)
# internal codes for void regions (255 in evaluation); converted to each dataset's own ids
UNLABELED, EGO, STATIC, LANE, RAIL, PARKING = 255, 240, 241, 242, 243, 244
THINGS = (PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTO, BIKE)   # get instance ids
GROUND = (ROAD, SIDEWALK, TERRAIN, LANE, RAIL, PARKING, UNLABELED)


def _luts() -> tuple[np.ndarray, np.ndarray]:
    to_label = np.zeros(256, np.uint8)          # Cityscapes label ids (GTA5 and Cityscapes)
    to_label[:19] = C.TRAIN_ID_TO_LABEL_ID
    to_label[[EGO, STATIC, LANE, RAIL, PARKING]] = [1, 4, 7, 10, 9]  # ego vehicle, static, road, rail track, parking
    to_syn = np.zeros(256, np.uint16)           # SYNTHIA class ids (0 = void)
    for t, s in C.TRAIN_ID_TO_SYNTHIA_ID.items():
        to_syn[t] = s
    to_syn[LANE], to_syn[PARKING] = 22, 13      # lanemarking, parking-slot
    return to_label, to_syn


TO_LABEL_ID, TO_SYNTHIA_ID = _luts()


def synthia_label(code: np.ndarray, inst: np.ndarray) -> np.ndarray:
    """SYNTHIA GT/LABELS: H x W x 3 uint16, class id in R, instance id in G, B zero."""
    lab = np.zeros(code.shape + (3,), np.uint16)
    lab[..., 0] = TO_SYNTHIA_ID[code]
    lab[..., 1] = inst
    return lab


def cityscapes_label_ids(code: np.ndarray) -> np.ndarray:
    """GTA5 labels and Cityscapes gtFine labelIds: H x W uint8 Cityscapes label ids."""
    return TO_LABEL_ID[code]
