"""The description of one sampled street: rows of blocks, road, skyline, light, palette and the objects
placed on it. Sampled by scene.py, filled with objects by objects.py, drawn by raycast.py / raster.py."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .camera import Camera
from .styles import DomainStyle


@dataclass
class Row:
    """A row of blocks (or thin planes) along one side of the street, facing the road."""
    side: int                       # -1 left, +1 right
    x: float                        # |X| of the street-facing plane
    depth: float                    # block depth behind the plane (0: thin plane)
    z0: np.ndarray                  # segment starts, sorted, contiguous (z1[i] == z0[i+1])
    z1: np.ndarray
    code: np.ndarray                # 0 = empty, else BUILDING / VEG / WALL / FENCE / STATIC
    h: np.ndarray                   # height (m)
    hn: np.ndarray                  # amplitude of a noisy top (vegetation)
    col: np.ndarray                 # (n, 3) base colour
    wcol: np.ndarray                # (n, 3) window / detail colour
    win: np.ndarray                 # (n, 6) floor height, window spacing, wy0, wy1, wx0, wx1
    kind: np.ndarray                # facade / wall / fence kind (styles.FACADE_* etc.)
    gf: np.ndarray                  # shop-floor height (0 = none)
    role: str = "facade"            # facade | back | fence


@dataclass
class Scene:
    style: DomainStyle
    cam: Camera
    rw: float                       # road width
    sw: float                       # sidewalk width
    verge: tuple[int, int]          # ground code beyond the sidewalk (left, right)
    back_ground: int
    rows: list[Row]
    end_z: float
    end_x: np.ndarray               # breakpoints along X of the skyline at the end of the street
    end_code: np.ndarray
    end_h: np.ndarray
    end_col: np.ndarray
    cross: tuple[float, float] | None
    lanes: int
    lane_w: float
    lane0: float                    # X of the left edge of the driving lanes
    park: tuple[float, float]       # width of the parking lane on each side (0: none)
    tram_x: float | None
    sun: np.ndarray                 # unit vector towards the sun
    light: dict                     # amb, dir, shadow
    pal: dict                       # per-scene class colours
    objects: list = field(default_factory=list)
    hood: float | None = None       # ego hood height (fraction of the image height)
    cobbles: bool = False           # cobbled road
    cast: np.ndarray | None = None  # the city's colour cast
    lawn: tuple[float, float] = (0.0, 0.0)  # width of the grass strip along each curb (0: none)

    def shade(self, n) -> float:
        """Brightness of a surface with normal n: ambient plus direct sun."""
        lt = self.light
        s = self.sun
        # the dot product written out: np.dot goes through BLAS, whose summation order depends on the CPU
        cos = float(n[0]) * float(s[0]) + float(n[1]) * float(s[1]) + float(n[2]) * float(s[2])
        return lt["amb"] + lt["dir"] * max(0.0, cos)
