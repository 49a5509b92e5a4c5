"""toytown: the embedded multi-domain street-scene segmentation benchmark.

`generate(DIR, seed)` draws small street scenes procedurally and writes them in the
*real* dataset layouts, so the same readers serve toy and real data:

- ``DIR/unity``       SYNTHIA-RAND-CITYSCAPES layout (160x95; 16-bit 3-channel labels,
                      SYNTHIA class id in R, instance ids > 255 in G),
- ``DIR/gta5``        GTA5 layout (240x132; palette PNG labels holding Cityscapes label ids),
- ``DIR/cityscapes``  Cityscapes layout (256x128; train/val splits, cities, gtFine labelIds),
- ``DIR/phfa-data.toml`` naming the three domains (cityscapes is the target, few_shot = 30).

Every scene is a small ray-cast of a street seen in perspective: a road running to a
vanishing point with lane markings, sidewalks, rows of building blocks with windows and
roofs, walls, fences and hedges, trees, grass verges, a skyline at the end of the street,
sky; then things drawn as projected 3-D boxes and camera-facing polygons from far to near:
cars, trucks, buses, a rare tram (train), persons, riders on bicycles and motorcycles,
parked bicycles, street lamps, traffic lights and signs on poles, unlabelled street
furniture. Scenes are drawn in trainId space and converted to each dataset's ids.

The three domains differ the way simulators differ from cameras, in appearance *and* in
layout statistics:

- ``unity``: flat-shaded, saturated, simple per-object colours, no texture, no cast shadows;
  random viewpoints (camera 1.5-9 m high, pitched, yawed, anywhere across the street), wide
  lenses, crowded with pedestrians; like SYNTHIA no terrain, truck or train, and lane
  markings carry SYNTHIA's own lane-marking id (void in evaluation).
- ``gta5``: textured (asphalt noise, bricks, concrete slabs, window grids, glass towers),
  directional sun with lit/unlit facades and cast shadows of buildings and vehicles (a
  quarter of the days overcast, a tenth at sunset, like the game's weather), specular car
  paint, warm haze; vivid car colours, dry olive vegetation and grass, taller buildings,
  more trucks, fewer pedestrians; driving-height camera with a wide lens.
- ``cityscapes``: overcast light (white sky, no cast shadows), a different palette per class
  (lighter purple-grey roads, reddish pavers, plaster/sandstone facades with framed windows,
  grey/black/silver cars, dark green vegetation, dark clothes), low camera with a narrower
  lens, the ego car's hood at the bottom (void), more persons, bicycles and poles, fewer
  trucks, lower European buildings; then sensor effects: exposure, colour cast, lower
  contrast, vignetting, blur and noise.

Everything is derived from ``(seed, domain, index)`` with numpy's ``default_rng``, so the
output is byte-identical for a seed whatever the order or number of worker processes.
"""
from __future__ import annotations

import concurrent.futures as cf
import functools
import json
import math
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline import classes as C
from pipeline.errors import PhfaError

DEFAULT_COUNTS: dict[str, int] = {"unity": 200, "gta5": 300, "cityscapes_train": 150, "cityscapes_val": 50}
FEW_SHOT = 30
SIZES = {"unity": (160, 95), "gta5": (240, 132), "cityscapes": (256, 128)}  # (width, height)
CITIES = {"train": ("toyburg", "pixelton", "rastermund"), "val": ("valcity", "quadrille")}
CITY_FRAME = 19  # Cityscapes' annotated frame is the 20th of each snippet
_DOMAIN_SALT = {"unity": 1, "gta5": 2, "cityscapes_train": 3, "cityscapes_val": 4}
_MANIFEST = ".toytown-files.json"  # the files the last generation wrote (stale ones are removed)

# trainIds
(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY,
 PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTO, BIKE) = range(19)
# internal codes for void regions (255 in evaluation); converted to each dataset's own ids
UNLABELED, EGO, STATIC, LANE, RAIL, PARKING = 255, 240, 241, 242, 243, 244
_THINGS = (PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTO, BIKE)
_GROUND = (ROAD, SIDEWALK, TERRAIN, LANE, RAIL, PARKING, UNLABELED)


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


def cityscapes_palette() -> np.ndarray:
    """256 x 3 uint8: the Cityscapes colour of each label id (black elsewhere)."""
    return C.label_id_palette()


# ----------------------------------------------------------------------------- helpers

def _hsv(h: float, s: float, v: float) -> np.ndarray:
    h = (h % 1.0) * 6.0
    i, f = int(h) % 6, h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


def _grey(v: float, tint=(0.0, 0.0, 0.0)) -> np.ndarray:
    return np.clip(np.array([v + tint[0], v + tint[1], v + tint[2]], np.float32), 0, 1)


@functools.lru_cache(maxsize=8)
def _noise_bank(seed: int, salt: int) -> np.ndarray:
    """Four tileable 128x128 noise textures (std 1): smooth, medium, fine, white."""
    rng = np.random.default_rng([seed, salt, 99])
    n = 128
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    r = np.sqrt(fx * fx + fy * fy)
    r[0, 0] = 1.0
    out = []
    for beta in (3.0, 2.0, 1.2, 0.0):
        w = rng.standard_normal((n, n))
        spec = np.fft.fft2(w) / r ** (beta / 2)  # power spectrum ~ 1/f^beta
        spec[0, 0] = 0
        t = np.real(np.fft.ifft2(spec))
        out.append(((t - t.mean()) / (t.std() + 1e-9)).astype(np.float32))
    return np.stack(out)


def _tex(bank: np.ndarray, k: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bilinear sample of texture k at texel coordinates (a, b), wrapping."""
    a0 = np.floor(a)
    b0 = np.floor(b)
    fa = (a - a0).astype(np.float32)
    fb = (b - b0).astype(np.float32)
    a0 = a0.astype(np.int64) & 127
    b0 = b0.astype(np.int64) & 127
    a1 = (a0 + 1) & 127
    b1 = (b0 + 1) & 127
    t = bank[k]
    return ((t[a0, b0] * (1 - fb) + t[a0, b1] * fb) * (1 - fa)
            + (t[a1, b0] * (1 - fb) + t[a1, b1] * fb) * fa)


def _hash01(a: np.ndarray, b: np.ndarray, salt: int = 0) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer cell (a, b)."""
    x = (a.astype(np.int64) * 73856093) ^ (b.astype(np.int64) * 19349663) ^ (salt * 83492791)
    x = (x ^ (x >> 13)) * 1274126177
    x = x ^ (x >> 16)
    return ((x & 0xFFFF).astype(np.float32)) / 65536.0


# ----------------------------------------------------------------------------- camera

@dataclass
class Camera:
    W: int
    H: int
    f: float
    cx: float
    cy: float
    h: float        # height above the ground (m)
    pitch: float    # radians, positive looks down
    yaw: float      # radians, positive looks right
    x0: float       # lateral position (m), road centre at 0

    def rays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World direction of each pixel's ray, scaled so that camera depth grows by 1 per unit."""
        xc = ((np.arange(self.W, dtype=np.float32) + 0.5 - self.cx) / self.f)[None, :]
        yc = ((np.arange(self.H, dtype=np.float32) + 0.5 - self.cy) / self.f)[:, None]
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        cy_, sy_ = math.cos(self.yaw), math.sin(self.yaw)
        y1 = -cp * yc - sp
        z1 = -sp * yc + cp
        dX = cy_ * xc + sy_ * z1
        dZ = -sy_ * xc + cy_ * z1
        dY = np.broadcast_to(y1, (self.H, self.W))
        return (np.ascontiguousarray(np.broadcast_to(dX, (self.H, self.W))), np.ascontiguousarray(dY),
                np.ascontiguousarray(np.broadcast_to(dZ, (self.H, self.W))))

    def project(self, P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X = P[..., 0] - self.x0
        Y = P[..., 1] - self.h
        Z = P[..., 2]
        cy_, sy_ = math.cos(self.yaw), math.sin(self.yaw)
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        x1 = cy_ * X - sy_ * Z
        z1 = sy_ * X + cy_ * Z
        yc = -cp * Y - sp * z1
        zc = -sp * Y + cp * z1
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.cx + self.f * x1 / zc, self.cy + self.f * yc / zc, zc

    @property
    def pos(self) -> np.ndarray:
        return np.array([self.x0, self.h, 0.0])


# ----------------------------------------------------------------------------- scene description

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
    kind: np.ndarray                # facade / fence style
    gf: np.ndarray                  # shop-floor height (0 = none)
    role: str = "facade"            # facade | back | fence


@dataclass
class Scene:
    dom: str
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
    light: dict
    pal: dict                       # per-scene class colours
    objects: list = field(default_factory=list)


# ----------------------------------------------------------------------------- palettes

def _scene_palette(dom: str, rng: np.random.Generator, bias: dict | None = None) -> dict:
    u = rng.uniform
    if dom == "unity":
        return {
            "road": _hsv(u(0.6, 0.8), u(0.05, 0.2), u(0.3, 0.45)),
            "sidewalk": _hsv(u(-0.05, 0.12), u(0.2, 0.45), u(0.6, 0.8)),
            "lane": _grey(0.95),
            "veg": _hsv(u(0.27, 0.35), u(0.65, 0.9), u(0.45, 0.7)),
            "terrain": _hsv(u(0.25, 0.3), u(0.6, 0.8), u(0.5, 0.7)),
            "parking": _hsv(u(0.55, 0.7), u(0.1, 0.25), u(0.45, 0.55)),
            "sky0": _hsv(u(0.55, 0.62), u(0.55, 0.8), u(0.85, 1.0)),
            "sky1": _hsv(u(0.54, 0.6), u(0.2, 0.4), 1.0),
            "pole": _hsv(u(0, 1), u(0.0, 0.3), u(0.45, 0.7)),
            "haze": _grey(0.85, (0, 0.02, 0.05)),
        }
    if dom == "gta5":
        # the game's weather: mostly sun, some sunsets, some overcast days (grey sky, no cast shadows)
        w = rng.random()
        weather = "sun" if w < 0.65 else ("sunset" if w < 0.75 else "overcast")
        sunset = weather == "sunset"
        grey_sky = {"sky0": _hsv(u(0.55, 0.62), u(0.05, 0.15), u(0.6, 0.78)), "sky1": _grey(u(0.78, 0.9)),
                    "haze": _grey(0.75, (0, 0.01, 0.02))}
        pal = {
            "weather": weather,
            "road": _hsv(u(0.05, 0.12), u(0.05, 0.15), u(0.17, 0.3)),
            "sidewalk": _hsv(u(0.08, 0.14), u(0.05, 0.15), u(0.55, 0.72)),
            "lane": _hsv(0.13, 0.8, 0.85) if rng.random() < 0.5 else _grey(0.85),
            "veg": _hsv(u(0.16, 0.24), u(0.5, 0.75), u(0.3, 0.5)),
            "terrain": _hsv(u(0.09, 0.16), u(0.35, 0.6), u(0.42, 0.62)),
            "parking": _hsv(0.1, 0.1, u(0.3, 0.4)),
            "sky0": _hsv(u(0.57, 0.62), u(0.45, 0.7), u(0.7, 0.9)) if not sunset else _hsv(0.65, 0.4, 0.55),
            "sky1": _hsv(u(0.08, 0.12), u(0.1, 0.25), u(0.88, 0.98)) if not sunset else _hsv(0.07, 0.6, 0.95),
            "pole": _grey(u(0.22, 0.45), (0.02, 0.02, 0)),
            "haze": _hsv(0.1, 0.15, 0.85) if not sunset else _hsv(0.07, 0.4, 0.85),
        }
        if weather == "overcast":
            pal.update(grey_sky)
        return pal
    b = bias or {}
    pavers = rng.random() < 0.6
    return {
        "road": _hsv(u(0.66, 0.8), u(0.04, 0.12), u(0.36, 0.5) + b.get("road", 0.0)),
        "sidewalk": (_hsv(u(0.0, 0.06), u(0.15, 0.32), u(0.42, 0.55)) if pavers
                     else _hsv(u(0.55, 0.7), u(0.03, 0.08), u(0.5, 0.62))),
        "lane": _grey(u(0.7, 0.85)),
        "veg": _hsv(u(0.22, 0.32), u(0.35, 0.6), u(0.16, 0.3) + b.get("veg", 0.0)),
        "terrain": _hsv(u(0.18, 0.27), u(0.35, 0.6), u(0.3, 0.45)),
        "parking": _hsv(0.7, 0.06, u(0.4, 0.5)),
        "sky0": _grey(u(0.78, 0.9), (-0.04, -0.01, 0.02)),
        "sky1": _grey(u(0.88, 0.97)),
        "pole": (_grey(u(0.45, 0.62)) if rng.random() < 0.7 else _hsv(0.4, 0.25, u(0.25, 0.4))),
        "haze": _grey(0.8, (0, 0.01, 0.03)),
    }


def _building_style(dom: str, rng: np.random.Generator, bias: dict | None = None):
    """-> colour, window colour, [floor h, spacing, wy0, wy1, wx0, wx1], kind, shop-floor height."""
    u = rng.uniform
    fh = u(2.9, 3.6)
    if dom == "unity":
        col = _hsv(u(0, 1), u(0.1, 0.45), u(0.5, 0.9))
        has_win = rng.random() < 0.6
        win = [fh, u(2.0, 4.0), 0.3, 0.75, 0.25, 0.75] if has_win else [fh, 3.0, 0.0, 0.0, 0.0, 0.0]
        return col, _hsv(u(0.55, 0.65), u(0.2, 0.5), u(0.25, 0.5)), win, 0, 0.0
    if dom == "gta5":
        r = rng.random()
        if r < 0.3:    # brick
            col, kind = _hsv(u(0.0, 0.06), u(0.45, 0.7), u(0.35, 0.6)), 1
        elif r < 0.55:  # stucco
            col, kind = _hsv(u(0.05, 0.13), u(0.2, 0.45), u(0.6, 0.85)), 3
        elif r < 0.8:   # concrete
            col, kind = _grey(u(0.45, 0.7), (0.03, 0.02, 0)), 4
        else:           # glass tower
            col, kind = _hsv(u(0.45, 0.6), u(0.15, 0.4), u(0.35, 0.55)), 2
        wcol = _hsv(u(0.5, 0.62), u(0.2, 0.5), u(0.12, 0.35))
        if kind == 2:
            win = [u(3.3, 4.0), u(1.3, 2.0), 0.08, 0.92, 0.06, 0.94]
            wcol = _hsv(u(0.5, 0.6), u(0.3, 0.6), u(0.35, 0.6))
        else:
            win = [fh, u(2.2, 4.5), u(0.25, 0.35), u(0.7, 0.8), u(0.2, 0.35), u(0.65, 0.8)]
        return col, wcol, win, kind, (u(3.5, 4.5) if rng.random() < 0.4 else 0.0)
    b = bias or {}
    w = np.array(b.get("facade", [0.35, 0.15, 0.2, 0.1, 0.1, 0.1]), float)
    r = rng.choice(6, p=w / w.sum())
    col = [
        _hsv(u(0.09, 0.14), u(0.12, 0.3), u(0.62, 0.8)),   # plaster, cream
        _hsv(u(0.06, 0.1), u(0.25, 0.4), u(0.5, 0.62)),    # sandstone
        _grey(u(0.45, 0.62), (0, 0.01, 0.02)),             # grey render
        _grey(u(0.74, 0.84)),                              # white
        _grey(u(0.22, 0.33), (0, 0, 0.02)),                # dark modern
        _hsv(u(0, 1), u(0.12, 0.25), u(0.6, 0.75)),        # pastel
    ][r]
    win = [u(3.2, 3.9), u(1.8, 2.8), u(0.2, 0.28), u(0.72, 0.85), u(0.3, 0.42), u(0.58, 0.7)]
    return col, _hsv(u(0.55, 0.65), u(0.05, 0.2), u(0.1, 0.22)), win, 5, (u(3.6, 4.4) if rng.random() < 0.5 else 0.0)


def _car_color(dom: str, rng: np.random.Generator) -> np.ndarray:
    u = rng.uniform
    if dom == "unity":
        return _hsv(u(0, 1), u(0.6, 0.95), u(0.55, 0.95))
    r = rng.random()
    if dom == "gta5":
        if r < 0.45:
            return _hsv(rng.choice([0.0, 0.03, 0.09, 0.15, 0.33, 0.55, 0.62, 0.78]) + u(-0.01, 0.01), u(0.6, 0.9), u(0.5, 0.9))
        if r < 0.65:
            return _grey(u(0.85, 0.95))
        if r < 0.85:
            return _grey(u(0.05, 0.14))
        return _grey(u(0.5, 0.7))
    if r < 0.3:
        return _grey(u(0.45, 0.65), (0, 0.01, 0.03))
    if r < 0.55:
        return _grey(u(0.07, 0.2))
    if r < 0.7:
        return _grey(u(0.72, 0.84))
    if r < 0.82:
        return _hsv(u(0.6, 0.66), u(0.4, 0.6), u(0.2, 0.35))
    return _hsv(u(0, 1), u(0.3, 0.5), u(0.3, 0.5))


def _cloth(dom: str, rng: np.random.Generator) -> np.ndarray:
    u = rng.uniform
    if dom == "unity":
        return _hsv(u(0, 1), u(0.6, 1.0), u(0.5, 0.95))
    if dom == "gta5":
        return _hsv(u(0, 1), u(0.2, 0.75), u(0.25, 0.85))
    if rng.random() < 0.7:
        return _hsv(u(0, 1), u(0.0, 0.25), u(0.08, 0.4))
    return _hsv(u(0, 1), u(0.2, 0.5), u(0.3, 0.7))


def _skin(dom: str, rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng.uniform(0.04, 0.08), rng.uniform(0.3, 0.6), rng.uniform(0.35, 0.85))


# ----------------------------------------------------------------------------- scene sampling

def _make_row(rng, side, x, depth, z_from, z_to, gaps, pick) -> Row:
    """Segments from z_from to z_to; `gaps` are forced empty Z ranges; pick(rng) -> segment dict."""
    segs = []
    z = z_from
    while z < z_to:
        s = pick(rng)
        length = s.pop("len")
        z_end = z + length
        for g0, g1 in gaps:
            if z < g0 < z_end:
                z_end = g0
            if g0 <= z < g1:
                s = {"code": 0}
                z_end = g1
        if segs and segs[-1]["code"] == 0 and s["code"] == 0:
            segs[-1]["z1"] = z_end
        else:
            s["z0"], s["z1"] = z, z_end
            segs.append(s)
        z = z_end
    n = len(segs)
    g = lambda k, d: np.array([s.get(k, d) for s in segs], np.float32)  # noqa: E731
    return Row(side=side, x=x, depth=depth, z0=g("z0", 0), z1=g("z1", 0), code=np.array([s["code"] for s in segs], np.int32),
               h=g("h", 0), hn=g("hn", 0), col=np.array([s.get("col", np.zeros(3)) for s in segs], np.float32).reshape(n, 3),
               wcol=np.array([s.get("wcol", np.zeros(3)) for s in segs], np.float32).reshape(n, 3),
               win=np.array([s.get("win", [3, 3, 0, 0, 0, 0]) for s in segs], np.float32).reshape(n, 6),
               kind=np.array([s.get("kind", 0) for s in segs], np.int32), gf=g("gf", 0))


def _sample_scene(dom: str, rng: np.random.Generator, W: int, H: int, bias: dict | None = None) -> Scene:
    u = rng.uniform
    # --- camera
    if dom == "unity":
        high = rng.random() < 0.5
        h = u(3.0, 9.0) if high else u(1.5, 2.6)
        pitch = math.radians(u(4, 24) if high else u(-3, 6))
        yaw = math.radians(u(-35, 35))
        hfov = math.radians(u(60, 90))
        horizon_off = 0.0
    elif dom == "gta5":
        h = u(1.4, 2.8)
        pitch = math.radians(u(-1.5, 4.0))
        yaw = math.radians(rng.normal(0, 5))
        hfov = math.radians(u(62, 78))
        horizon_off = 0.0
    else:
        h = u(1.15, 1.3)
        pitch = math.radians(u(-0.5, 1.5))
        yaw = math.radians(rng.normal(0, 3))
        hfov = math.radians(u(46, 52))
        horizon_off = -u(0.04, 0.09) * H  # principal point above the middle: horizon at ~41-46% of the height
    f = (W / 2) / math.tan(hfov / 2)
    # --- street
    if dom == "cityscapes":
        lanes = int(rng.choice([2, 2, 2, 3, 4]))
        lane_w = u(2.9, 3.3)
        sw = u(2.5, 5.0)
    elif dom == "gta5":
        lanes = int(rng.choice([2, 2, 3, 4, 4, 5]))
        lane_w = u(3.3, 3.9)
        sw = u(2.0, 3.8)
    else:
        lanes = int(rng.choice([2, 2, 3, 4]))
        lane_w = u(3.0, 3.8)
        sw = u(2.0, 5.0)
    p_park = {"unity": 0.5, "gta5": 0.35, "cityscapes": 0.7}[dom]
    park = tuple(float(u(2.0, 2.4)) if rng.random() < p_park else 0.0 for _ in range(2))
    rw = lanes * lane_w + park[0] + park[1]
    lane0 = -rw / 2 + park[0]           # left edge of the driving lanes
    lanes_x = [lane0 + lane_w * (i + 0.5) for i in range(lanes)]
    if dom == "unity":
        x0 = u(-(rw / 2 + sw * 0.6), rw / 2 + sw * 0.6)
    else:
        x0 = lanes_x[-1 - int(rng.integers(0, max(1, lanes // 2)))] + rng.normal(0, 0.2)
    cam = Camera(W, H, f, W / 2 + u(-1, 1), H / 2 + horizon_off, h, pitch, yaw, x0)

    cross = None
    if rng.random() < (0.45 if dom != "gta5" else 0.35):
        c0 = u(12, 55)
        cross = (c0, c0 + u(8, 16))
    gaps = [cross] if cross else []
    far = 260.0
    pal = _scene_palette(dom, rng, bias)

    # --- rows of blocks
    rows: list[Row] = []
    verge = []
    for side in (-1, 1):
        if dom == "cityscapes":
            setback = 0.0 if rng.random() < 0.55 else u(2.0, 7.0)
        elif dom == "gta5":
            setback = 0.0 if rng.random() < 0.35 else u(3.0, 12.0)
        else:
            setback = 0.0 if rng.random() < 0.4 else u(2.0, 8.0)
        if setback > 0:
            vr = rng.random()
            if dom == "unity":
                vcode = SIDEWALK if vr < 0.55 else (PARKING if vr < 0.7 else VEG)
            elif dom == "gta5":
                vcode = TERRAIN if vr < 0.55 else (SIDEWALK if vr < 0.8 else PARKING)
            else:
                vcode = TERRAIN if vr < 0.4 else (SIDEWALK if vr < 0.8 else PARKING)
        else:
            vcode = SIDEWALK
        verge.append(vcode)
        xf = rw / 2 + sw + setback

        if dom == "cityscapes":
            hmin, hmax, skew, lmin, lmax, p_gap = 9.0, 22.0, 1.3, 9.0, 22.0, 0.18
        elif dom == "gta5":
            hmin, hmax, skew, lmin, lmax, p_gap = 4.0, 45.0, 2.2, 10.0, 35.0, 0.35
        else:
            hmin, hmax, skew, lmin, lmax, p_gap = 5.0, 35.0, 2.0, 8.0, 30.0, 0.35

        def pick_building(r, hmin=hmin, hmax=hmax, skew=skew, lmin=lmin, lmax=lmax, p_gap=p_gap):
            if r.random() < p_gap:
                return {"code": 0, "len": r.uniform(4, 14)}
            col, wcol, win, kind, gf = _building_style(dom, r, bias)
            hh = hmin + (hmax - hmin) * r.random() ** skew
            if kind == 5:
                hh = win[0] * round(hh / win[0]) + 0.8
            return {"code": BUILDING, "len": r.uniform(lmin, lmax), "h": hh, "col": col, "wcol": wcol, "win": win,
                    "kind": kind, "gf": gf}

        rows.append(_make_row(rng, side, xf, u(10, 16), -30.0, far, gaps, pick_building))

        # back row: taller buildings or a mass of trees
        p_veg = {"unity": 0.4, "gta5": 0.5, "cityscapes": 0.45}[dom]

        def pick_back(r, p_veg=p_veg, hmin=hmin, hmax=hmax):
            if r.random() < p_veg:
                return {"code": VEG, "len": r.uniform(10, 40), "h": r.uniform(6, 14), "hn": r.uniform(1.0, 3.0),
                        "col": pal["veg"] * r.uniform(0.8, 1.1)}
            col, wcol, win, kind, gf = _building_style(dom, r, bias)
            return {"code": BUILDING, "len": r.uniform(15, 40), "h": r.uniform(hmin, hmax * 1.3), "col": col, "wcol": wcol,
                    "win": win, "kind": kind}

        rows.append(_make_row(rng, side, xf + u(14, 26), 30.0, -30.0, far, [], pick_back))
        rows[-1].role = "back"

        # walls, fences and hedges at the outer edge of the sidewalk (only with a setback)
        if setback > 0.5:
            fx = rw / 2 + sw + 0.1
            p_none = 0.35

            def pick_fence(r, p_none=p_none):
                q = r.random()
                if q < p_none:
                    return {"code": 0, "len": r.uniform(5, 25)}
                if q < p_none + 0.25:
                    return {"code": WALL, "len": r.uniform(6, 30), "h": r.uniform(0.8, 2.6), "col": _wall_color(dom, r),
                            "kind": int(r.integers(0, 2))}
                if q < p_none + 0.5:
                    return {"code": FENCE, "len": r.uniform(6, 30), "h": r.uniform(1.0, 2.2), "col": _fence_color(dom, r),
                            "kind": int(r.integers(0, 2))}
                return {"code": VEG, "len": r.uniform(5, 20), "h": r.uniform(0.8, 1.8), "hn": 0.25,
                        "col": pal["veg"] * r.uniform(0.8, 1.15)}

            rows.append(_make_row(rng, side, fx, 0.8, 1.0, far, gaps, pick_fence))
            rows[-1].role = "fence"
        elif rng.random() < 0.3:  # a low wall / fence in front of a building (railings, garden walls)
            fx = rw / 2 + sw - 0.1

            def pick_low(r):
                q = r.random()
                if q < 0.6:
                    return {"code": 0, "len": r.uniform(10, 40)}
                if q < 0.8:
                    return {"code": WALL, "len": r.uniform(4, 12), "h": r.uniform(0.6, 1.3), "col": _wall_color(dom, r), "kind": 0}
                return {"code": FENCE, "len": r.uniform(4, 12), "h": r.uniform(0.8, 1.3), "col": _fence_color(dom, r), "kind": 1}

            rows.append(_make_row(rng, side, fx, 0.3, 2.0, far, gaps, pick_low))
            rows[-1].role = "fence"

    # --- skyline at the end of the street
    end_z = u(180, 250)
    xs = [-400.0]
    codes, hs, cols = [], [], []
    while xs[-1] < 400:
        xs.append(xs[-1] + u(8, 40))
        if rng.random() < 0.45:
            codes.append(VEG)
            hs.append(u(8, 18))
            cols.append(pal["veg"])
        else:
            codes.append(BUILDING)
            hs.append(u(10, 50) if dom != "cityscapes" else u(10, 28))
            cols.append(_building_style(dom, rng, bias)[0])

    tram_x = None
    p_tram = {"unity": 0.0, "gta5": 0.05, "cityscapes": 0.06}[dom]
    has_tram = rng.random() < p_tram
    if has_tram:
        tram_x = float(lanes_x[(lanes - 1) // 2] if rng.random() < 0.5 else lanes_x[lanes // 2])

    # light
    if dom == "gta5":
        el = math.radians(u(20, 60))
        az = u(-math.pi, math.pi)
        if pal["weather"] == "overcast":
            light = {"amb": u(0.75, 0.85), "dir": u(0.1, 0.2), "shadow": 1.0}
        else:
            light = {"amb": u(0.42, 0.55), "dir": u(0.6, 0.8), "shadow": u(0.45, 0.6)}
    elif dom == "cityscapes":
        el, az = math.radians(70), u(-math.pi, math.pi)
        light = {"amb": u(0.8, 0.9), "dir": 0.15, "shadow": 1.0}
    else:
        el, az = math.radians(60), math.radians(30)
        light = {"amb": 0.8, "dir": 0.25, "shadow": 1.0}
    sun = np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])

    sc = Scene(dom=dom, cam=cam, rw=rw, sw=sw, verge=(verge[0], verge[1]), back_ground=TERRAIN if dom != "unity" else SIDEWALK,
               rows=rows, end_z=end_z, end_x=np.array(xs, np.float32), end_code=np.array(codes, np.int32),
               end_h=np.array(hs, np.float32), end_col=np.array(cols, np.float32), cross=cross, lanes=lanes, lane_w=lane_w, lane0=lane0, park=park, tram_x=tram_x,
               sun=sun, light=light, pal=pal)
    _sample_objects(sc, rng, has_tram)
    return sc


def _wall_color(dom, r):
    if dom == "unity":
        return _hsv(r.uniform(0, 1), r.uniform(0.2, 0.5), r.uniform(0.45, 0.75))
    if dom == "gta5":
        return _hsv(r.uniform(0.07, 0.12), r.uniform(0.1, 0.3), r.uniform(0.5, 0.75))
    return _grey(r.uniform(0.35, 0.55), (0.01, 0.01, 0.0)) if r.random() < 0.7 else _hsv(0.05, 0.35, r.uniform(0.35, 0.5))


def _fence_color(dom, r):
    if dom == "unity":
        return _hsv(r.uniform(0, 1), r.uniform(0.4, 0.8), r.uniform(0.4, 0.8))
    if dom == "gta5":
        return _grey(r.uniform(0.5, 0.7)) if r.random() < 0.6 else _hsv(0.07, 0.5, r.uniform(0.35, 0.5))
    return _hsv(0.38, 0.3, r.uniform(0.2, 0.32)) if r.random() < 0.5 else _grey(r.uniform(0.3, 0.45))


# ----------------------------------------------------------------------------- objects

@dataclass
class Obj:
    z: float          # sort key (distance)
    prims: list       # [(points Nx3, code or None (erase), rgb, flag)]
    inst: int = 0


def _box(x0, x1, y0, y1, z0, z1, cam_pos):
    """Visible faces of an axis-aligned box -> list of (4x3 points, normal)."""
    faces = [
        (np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0]]), (0, 0, -1), z0),
        (np.array([[x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]]), (0, 0, 1), z1),
        (np.array([[x0, y0, z0], [x0, y0, z1], [x0, y1, z1], [x0, y1, z0]]), (-1, 0, 0), x0),
        (np.array([[x1, y0, z0], [x1, y0, z1], [x1, y1, z1], [x1, y1, z0]]), (1, 0, 0), x1),
        (np.array([[x0, y1, z0], [x1, y1, z0], [x1, y1, z1], [x0, y1, z1]]), (0, 1, 0), y1),
    ]
    out = []
    for pts, n, _ in faces:
        c = pts.mean(0)
        if np.dot(np.asarray(cam_pos) - c, n) > 1e-6:
            out.append((pts, np.array(n, float)))
    return out


def _shade(sc: Scene, n) -> float:
    lt = sc.light
    return lt["amb"] + lt["dir"] * max(0.0, float(np.dot(n, sc.sun)))


def _disc(cx, cy, z, rx, ry, k=10, plane="z", x=None):
    a = np.linspace(0, 2 * np.pi, k, endpoint=False)
    if plane == "z":
        return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a), np.full(k, z)], 1)
    return np.stack([np.full(k, x), cy + ry * np.sin(a), cx + rx * np.cos(a)], 1)  # disc in a plane X = x, cx along Z


def _quad_z(xa, xb, ya, yb, z):
    return np.array([[xa, ya, z], [xb, ya, z], [xb, yb, z], [xa, yb, z]], float)


def _vehicle(sc: Scene, rng, kind: str, X: float, Z: float, oncoming: bool, color=None) -> Obj:
    dom, cam = sc.dom, sc.cam
    cp = cam.pos
    prims = []
    if kind == "car":
        W_, L = rng.uniform(1.7, 1.9), rng.uniform(3.9, 4.7)
        hb, ht = rng.uniform(0.85, 1.0), rng.uniform(1.38, 1.6)
        c0, c1 = rng.uniform(0.18, 0.3), rng.uniform(0.7, 0.82)
    elif kind == "van":
        W_, L = rng.uniform(1.9, 2.05), rng.uniform(4.8, 5.6)
        hb, ht = 1.05, rng.uniform(1.9, 2.2)
        c0, c1 = 0.05, 0.95
    else:
        raise ValueError(kind)
    col = color if color is not None else _car_color(dom, rng)
    glass = _hsv(0.58, 0.25, 0.18) if dom != "unity" else _hsv(0.58, 0.5, 0.35)
    x0, x1 = X - W_ / 2, X + W_ / 2
    z0, z1 = Z, Z + L
    # body
    for pts, n in _box(x0, x1, 0.28, hb, z0, z1, cp):
        prims.append((pts, CAR, col * _shade(sc, n), 1))
        if n[2] < 0:  # rear (or front) face: lights and plate
            lc = _grey(0.95, (0, 0, -0.1)) if oncoming else _hsv(0.0, 0.85, 0.8)
            yl = 0.28 + (hb - 0.28) * 0.55
            prims.append((_quad_z(x0 + 0.08, x0 + 0.4, yl, yl + 0.15, z0 - 0.01), CAR, lc, 0))
            prims.append((_quad_z(x1 - 0.4, x1 - 0.08, yl, yl + 0.15, z0 - 0.01), CAR, lc, 0))
            if dom != "unity":
                prims.append((_quad_z(X - 0.25, X + 0.25, 0.35, 0.47, z0 - 0.01), CAR, _grey(0.85), 0))
    # wheels (the ground shows between them)
    for za, zb in ((z0 + 0.55, z0 + 1.1), (z1 - 1.1, z1 - 0.55)):
        for xa, xb in ((x0 + 0.02, x0 + 0.3), (x1 - 0.3, x1 - 0.02)):
            for pts, n in _box(xa, xb, 0.0, 0.3, za, zb, cp):
                prims.append((pts, CAR, _grey(0.06), 0))
    if cam.x0 < x0 or cam.x0 > x1:  # side wheels
        xs = x0 - 0.01 if cam.x0 < x0 else x1 + 0.01
        for zc in (z0 + 0.8, z1 - 0.8):
            prims.append((_disc(zc, 0.32, 0, 0.32, 0.32, k=10, plane="x", x=xs), CAR, _grey(0.05), 0))
            if dom != "unity":
                prims.append((_disc(zc, 0.32, 0, 0.15, 0.15, k=8, plane="x", x=xs - 0.005 * np.sign(xs - cam.x0)), CAR,
                              _grey(0.55), 0))
    # cabin
    ins = 0.12
    for pts, n in _box(x0 + ins, x1 - ins, hb, ht, z0 + c0 * L, z0 + c1 * L, cp):
        if n[1] > 0:
            prims.append((pts, CAR, col * _shade(sc, n), 1))
        else:
            prims.append((pts, CAR, glass, 2))
    return Obj(Z, prims)


def _big_vehicle(sc: Scene, rng, kind: str, X: float, Z: float) -> Obj:
    dom, cp = sc.dom, sc.cam.pos
    prims = []
    u = rng.uniform
    glass = _hsv(0.58, 0.25, 0.2) if dom != "unity" else _hsv(0.58, 0.5, 0.35)
    if kind == "bus":
        W_, L, Hh = 2.55, u(10.5, 12.5), u(3.0, 3.3)
        if dom == "unity":
            col = _hsv(u(0, 1), u(0.5, 0.9), u(0.5, 0.9))
        elif dom == "gta5":
            col = [_grey(0.9), _hsv(0.0, 0.7, 0.7), _hsv(0.6, 0.6, 0.6), _hsv(0.33, 0.6, 0.5)][int(rng.integers(0, 4))]
        else:
            col = [_hsv(0.13, 0.35, 0.85), _grey(0.85), _hsv(0.0, 0.6, 0.6)][int(rng.integers(0, 3))]
        boxes = [(X - W_ / 2, X + W_ / 2, 0.35, Hh, Z, Z + L, col, BUS)]
        band = (1.1, Hh - 0.35)
        code = BUS
    elif kind == "truck":
        W_, Lc, Lb, Hb = 2.45, u(2.0, 2.5), u(6.0, 9.0), u(3.2, 3.9)
        cab = (_hsv(u(0, 1), u(0.5, 0.9), u(0.5, 0.85)) if dom == "gta5" else
               (_grey(0.88) if rng.random() < 0.6 else _hsv(0.0, 0.7, 0.6)))
        box_col = _grey(u(0.75, 0.92)) if rng.random() < 0.6 else _hsv(u(0, 1), u(0.2, 0.6), u(0.4, 0.8))
        # seen from behind: cargo box first (near), cab further away
        boxes = [(X - 1.15, X + 1.15, 0.45, 2.9, Z + Lb + 0.2, Z + Lb + 0.2 + Lc, cab, TRUCK),
                 (X - W_ / 2, X + W_ / 2, 0.55, Hb, Z, Z + Lb, box_col, TRUCK)]
        band = None
        code = TRUCK
        L = Lb + Lc
    else:  # tram
        W_, L, Hh = 2.65, u(22, 32), 3.4
        if dom == "gta5":
            col = _grey(0.7, (0, 0.02, 0.06)) if rng.random() < 0.5 else _hsv(0.6, 0.5, 0.6)
        else:
            col = [_hsv(0.0, 0.75, 0.75), _hsv(0.13, 0.7, 0.85), _grey(0.88)][int(rng.integers(0, 3))]
        boxes = [(X - W_ / 2, X + W_ / 2, 0.3, Hh, Z, Z + L, col, TRAIN)]
        band = (1.1, 2.6)
        code = TRAIN
    for (bx0, bx1, by0, by1, bz0, bz1, bc, bcode) in boxes:
        for pts, n in _box(bx0, bx1, by0, by1, bz0, bz1, cp):
            prims.append((pts, bcode, bc * _shade(sc, n), 1 if kind != "tram" else 0))
            if band is not None and n[1] == 0:
                # window band on this face
                p = pts.copy()
                if n[2] != 0:
                    xa, xb = bx0 + 0.15, bx1 - 0.15
                    prims.append((_quad_z(xa, xb, band[0], band[1], p[0, 2] - 0.01 * (1 if n[2] < 0 else -1)), bcode, glass, 2))
                else:
                    xs = p[0, 0] + 0.01 * n[0]
                    prims.append((np.array([[xs, band[0], bz0 + 0.5], [xs, band[0], bz1 - 0.5], [xs, band[1], bz1 - 0.5],
                                            [xs, band[1], bz0 + 0.5]]), bcode, glass, 2))
                    if kind == "tram":  # door / segment joints
                        for zj in np.arange(bz0 + 6.0, bz1 - 1.0, 6.5):
                            prims.append((np.array([[xs, 0.3, zj], [xs, 0.3, zj + 0.25], [xs, Hh, zj + 0.25], [xs, Hh, zj]]),
                                          bcode, bc * 0.55, 0))
    # wheels
    zw = [Z + 1.2, Z + L - 2.0]
    for zc in zw:
        for pts, n in _box(X - W_ / 2 + 0.1, X + W_ / 2 - 0.1, 0.0, 0.5, zc - 0.5, zc + 0.5, cp):
            prims.append((pts, code, _grey(0.07), 0))
    if kind == "tram":  # pantograph
        top = Hh
        prims.append((_quad_z(X - 0.03, X + 0.03, top, top + 1.2, Z + L / 2), TRAIN, _grey(0.2), 0))
        prims.append((_quad_z(X - 0.6, X + 0.6, top + 1.1, top + 1.2, Z + L / 2), TRAIN, _grey(0.2), 0))
    return Obj(Z, prims)


def _person(sc: Scene, rng, X: float, Z: float, code=PERSON, seated=False, Y0=0.0) -> list:
    dom = sc.dom
    u = rng.uniform
    hgt = u(1.55, 1.92)
    top, bot, skin = _cloth(dom, rng), _cloth(dom, rng), _skin(dom, rng)
    hair = _hsv(0.08, 0.5, u(0.05, 0.35))
    s = hgt / 1.75
    prims = []
    if not seated:
        stride = u(-0.12, 0.12) * s
        prims.append((_quad_z(X - 0.17 * s + stride, X - 0.03 * s + stride, Y0, Y0 + 0.86 * s, Z), code, bot * 0.9, 3))
        prims.append((_quad_z(X + 0.03 * s - stride, X + 0.17 * s - stride, Y0, Y0 + 0.86 * s, Z), code, bot, 3))
        ytor = Y0 + 0.84 * s
    else:
        prims.append((np.array([[X - 0.17, Y0 + 0.25, Z], [X - 0.05, Y0 + 0.25, Z], [X - 0.04, Y0 + 0.75, Z], [X - 0.18, Y0 + 0.75, Z]]),
                      code, bot, 3))
        prims.append((np.array([[X + 0.05, Y0 + 0.25, Z], [X + 0.17, Y0 + 0.25, Z], [X + 0.18, Y0 + 0.75, Z], [X + 0.04, Y0 + 0.75, Z]]),
                      code, bot, 3))
        ytor = Y0 + 0.72
    lean = 0.0 if not seated else 0.06
    tor_h = 0.58 * s
    prims.append((np.array([[X - 0.18 * s, ytor, Z], [X + 0.18 * s, ytor, Z], [X + 0.22 * s + lean, ytor + tor_h, Z],
                            [X - 0.22 * s + lean, ytor + tor_h, Z]]), code, top, 3))
    # arms
    for sgn in (-1, 1):
        xa = X + sgn * 0.22 * s + lean
        prims.append((np.array([[xa, ytor + tor_h, Z], [xa + sgn * 0.08 * s, ytor + tor_h - 0.02, Z],
                                [xa + sgn * 0.1 * s + (0.12 if seated else 0), ytor + 0.05, Z], [xa + sgn * 0.02, ytor + 0.05, Z]]),
                      code, top * 0.85, 3))
    yh = ytor + tor_h + 0.12 * s
    prims.append((_disc(X + lean, yh, Z, 0.11 * s, 0.13 * s, k=10), code, skin, 0))
    helmet = dom == "cityscapes" and code == RIDER and rng.random() < 0.5
    prims.append((_disc(X + lean, yh + 0.05 * s, Z - 0.01, 0.115 * s, 0.09 * s, k=8),
                   code, _hsv(u(0, 1), 0.6, 0.7) if helmet else hair, 0))
    return prims


def _twowheeler(sc: Scene, rng, X: float, Z: float, moto: bool, side_view: bool, rider: bool) -> Obj:
    dom = sc.dom
    code = MOTO if moto else BIKE
    u = rng.uniform
    frame = (_hsv(u(0, 1), u(0.5, 0.9), u(0.4, 0.9)) if dom != "cityscapes" else _hsv(u(0, 1), u(0.1, 0.4), u(0.15, 0.5)))
    dark = _grey(0.08)
    prims = []
    if side_view:
        d = 0.55 if not moto else 0.7
        r = 0.34 if not moto else 0.32
        for xw in (X - d, X + d):
            prims.append((_disc(xw, r, Z, r, r, k=12), code, dark, 0))
            if not moto:
                prims.append((_disc(xw, r, Z - 0.001, r * 0.8, r * 0.8, k=12), None, dark, 0))
            else:
                prims.append((_disc(xw, r, Z - 0.001, r * 0.45, r * 0.45, k=8), code, _grey(0.5), 0))
        if moto:
            prims.append((np.array([[X - d + 0.1, 0.35, Z - 0.002], [X + d - 0.15, 0.35, Z - 0.002], [X + d - 0.1, 0.8, Z - 0.002],
                                    [X - d + 0.2, 0.95, Z - 0.002]]), code, frame, 1))
        else:
            t = 0.035
            ys = 0.95
            for (ax, ay, bx, by) in ((X - d, r, X, r), (X, r, X - 0.1, ys), (X - 0.1, ys, X + 0.4, ys), (X + 0.4, ys, X + d, r),
                                     (X - d, r, X - 0.1, ys), (X + 0.4, ys, X + 0.45, 1.05)):
                prims.append((np.array([[ax, ay - t, Z - 0.002], [bx, by - t, Z - 0.002], [bx, by + t, Z - 0.002],
                                        [ax, ay + t, Z - 0.002]]), code, frame, 0))
            prims.append((_quad_z(X - 0.2, X, ys, ys + 0.05, Z - 0.002), code, dark, 0))
        zr = Z - 0.01
    else:
        wth = 0.05 if not moto else 0.13
        prims.append((_quad_z(X - wth, X + wth, 0.0, 0.68, Z), code, dark, 0))
        if moto:
            prims.append((_quad_z(X - 0.33, X + 0.33, 0.35, 0.95, Z - 0.05), code, frame, 1))
            prims.append((_quad_z(X - 0.1, X + 0.1, 0.7, 0.8, Z - 0.06), code, _hsv(0, 0.9, 0.8), 0))
            prims.append((_quad_z(X - 0.42, X + 0.42, 1.0, 1.06, Z + 1.2), code, dark, 0))
        else:
            prims.append((_quad_z(X - 0.03, X + 0.03, 0.6, 1.0, Z + 0.5), code, frame, 0))
            prims.append((_quad_z(X - 0.3, X + 0.3, 1.0, 1.04, Z + 1.0), code, dark, 0))
        zr = Z + 0.3
    if rider:
        prims = prims + _person(sc, rng, X, zr, code=RIDER, seated=True, Y0=0.35 if not moto else 0.4)
    return Obj(Z, prims)


def _tree(sc: Scene, rng, X: float, Z: float) -> Obj:
    u = rng.uniform
    col = sc.pal["veg"]
    th = u(2.0, 3.5)
    trunk = _hsv(0.08, 0.4, u(0.15, 0.3)) if sc.dom != "unity" else _hsv(0.08, 0.6, 0.35)
    prims = [(_quad_z(X - 0.14, X + 0.14, 0.0, th + 0.5, Z), VEG, trunk, 0)]
    R = u(1.6, 3.2)
    for _ in range(int(rng.integers(4, 8))):
        dx, dy = rng.normal(0, R * 0.45), rng.normal(0, R * 0.35)
        r = R * u(0.45, 0.75)
        shade = u(0.75, 1.15) if sc.dom != "unity" else u(0.92, 1.05)
        prims.append((_disc(X + dx, th + R + dy, Z - 0.01, r, r * u(0.8, 1.0), k=12), VEG, col * shade, 3))
    return Obj(Z, prims)


def _lamp(sc: Scene, rng, X: float, Z: float, side: int) -> Obj:
    c = sc.pal["pole"]
    H = rng.uniform(6.5, 9.0)
    arm = rng.uniform(1.0, 2.5)
    return Obj(Z, [(_quad_z(X - 0.09, X + 0.09, 0, H, Z), POLE, c, 0),
                   (_quad_z(min(X, X - side * arm), max(X, X - side * arm), H - 0.12, H, Z), POLE, c, 0),
                   (_quad_z(X - side * arm - 0.3, X - side * arm + 0.3, H - 0.3, H - 0.05, Z - 0.01), POLE, c * 0.8, 0)])


def _traffic_light(sc: Scene, rng, X: float, Z: float, side: int, overhead: bool) -> Obj:
    dom = sc.dom
    pc = sc.pal["pole"]
    if dom == "gta5":
        house = _hsv(0.13, 0.8, 0.75) if rng.random() < 0.6 else _grey(0.12)
    elif dom == "unity":
        house = _grey(0.25, (0, 0, 0.05))
    else:
        house = _grey(0.1)
    lit = int(rng.integers(0, 3))
    lamp_cols = [_hsv(0.0, 0.9, 1.0), _hsv(0.1, 0.9, 1.0), _hsv(0.38, 0.8, 0.95)]
    prims = []
    heads = []
    if overhead:
        H = rng.uniform(5.2, 6.2)
        arm = rng.uniform(3.5, 6.0)
        prims.append((_quad_z(X - 0.12, X + 0.12, 0, H + 0.3, Z), POLE, pc, 0))
        prims.append((_quad_z(min(X, X - side * arm), max(X, X - side * arm), H + 0.15, H + 0.3, Z), POLE, pc, 0))
        for k in range(1, int(rng.integers(2, 4))):
            heads.append((X - side * arm * k / 3.0, H - 1.0))
    else:
        H = rng.uniform(2.8, 3.6)
        prims.append((_quad_z(X - 0.07, X + 0.07, 0, H + 0.1, Z), POLE, pc, 0))
        heads.append((X, H - 0.95))
    for (hx, hy) in heads:
        prims.append((_quad_z(hx - 0.17, hx + 0.17, hy, hy + 0.95, Z - 0.05), LIGHT, house, 0))
        for i in range(3):
            yc = hy + 0.8 - i * 0.3
            col = lamp_cols[i] if i == lit else lamp_cols[i] * 0.25
            prims.append((_disc(hx, yc, Z - 0.06, 0.09, 0.09, k=8), LIGHT, col, 0))
    return Obj(Z, prims)


def _sign(sc: Scene, rng, X: float, Z: float) -> Obj:
    dom = sc.dom
    pc = sc.pal["pole"]
    H = rng.uniform(2.2, 3.0)
    s = rng.uniform(0.55, 0.8)
    prims = [(_quad_z(X - 0.04, X + 0.04, 0, H, Z), POLE, pc, 0)]
    shape = int(rng.integers(0, 4))
    back = rng.random() < 0.2
    if dom == "unity":
        col = _hsv(rng.choice([0.0, 0.14, 0.6]), 0.85, 0.9)
        inner = None
    elif dom == "gta5":
        col, inner = [(_grey(0.92), _grey(0.1)), (_hsv(0.38, 0.8, 0.45), _grey(0.95)), (_hsv(0.0, 0.85, 0.7), _grey(0.95)),
                      (_hsv(0.14, 0.85, 0.85), _grey(0.1))][int(rng.integers(0, 4))]
    else:
        col, inner = [(_hsv(0.0, 0.8, 0.65), _grey(0.85)), (_hsv(0.6, 0.8, 0.5), _grey(0.85)), (_grey(0.85), _hsv(0.0, 0.8, 0.6)),
                      (_hsv(0.13, 0.85, 0.85), _grey(0.2))][int(rng.integers(0, 4))]
    if back:
        col, inner = _grey(0.5), None
    cy = H + s / 2
    if shape == 0:
        outer = _disc(X, cy, Z - 0.02, s / 2, s / 2, k=12)
    elif shape == 1:
        outer = np.array([[X - s / 2, H, Z - 0.02], [X + s / 2, H, Z - 0.02], [X, H + s * 0.87, Z - 0.02]])
    elif shape == 2:
        outer = np.array([[X, H, Z - 0.02], [X + s / 2, cy, Z - 0.02], [X, H + s, Z - 0.02], [X - s / 2, cy, Z - 0.02]])
    else:
        outer = _quad_z(X - s * 0.7, X + s * 0.7, H, H + s * 0.6, Z - 0.02)
    prims.append((outer, SIGN, col, 0))
    if inner is not None:
        c = outer.mean(0)
        prims.append((c + (outer - c) * 0.6 + np.array([0, 0, -0.01]), SIGN, inner, 0))
    return Obj(Z, prims)


def _static(sc: Scene, rng, X: float, Z: float) -> Obj:
    q = rng.random()
    col = _hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.6), rng.uniform(0.15, 0.6))
    if q < 0.4:      # bin
        pts = _box(X - 0.3, X + 0.3, 0, 1.0, Z, Z + 0.6, sc.cam.pos)
    elif q < 0.7:    # bollard
        pts = _box(X - 0.08, X + 0.08, 0, 0.9, Z, Z + 0.16, sc.cam.pos)
    else:            # bench / box
        pts = _box(X - 0.25, X + 0.25, 0, 0.8, Z, Z + 1.6, sc.cam.pos)
    return Obj(Z, [(p, STATIC, col * _shade(sc, n), 0) for p, n in pts])


def _sample_objects(sc: Scene, rng: np.random.Generator, has_tram: bool) -> None:
    dom = sc.dom
    u = rng.uniform
    rw, sw, lane_w = sc.rw, sc.sw, sc.lane_w
    objs: list[Obj] = []
    zmin = 3.0
    lanes_x = [sc.lane0 + lane_w * (i + 0.5) for i in range(sc.lanes)]
    mid = sc.lane0 + lane_w * (sc.lanes // 2)  # oncoming traffic drives left of this
    occupied: list[tuple[float, float, float, float]] = []

    def free(x0, x1, z0, z1):
        for a0, a1, b0, b1 in occupied:
            if x0 < a1 and a0 < x1 and z0 < b1 and b0 < z1:
                return False
        occupied.append((x0, x1, z0, z1))
        return True

    # rates (Poisson means) per domain: label shift between domains
    R = {
        "unity": dict(moving=4.0, parked=3.0, persons=14.0, riders=1.2, moto=0.5, truck=0.0, bus=0.35, bikes=0.4,
                      trees=4.0, lamps=2.0, signs=2.0, lights=0.8, static=1.5),
        "gta5": dict(moving=4.5, parked=4.0, persons=1.8, riders=0.5, moto=0.65, truck=1.0, bus=0.3, bikes=0.2,
                     trees=5.0, lamps=2.5, signs=1.2, lights=0.7, static=1.0),
        "cityscapes": dict(moving=2.0, parked=3.5, persons=5.5, riders=1.1, moto=0.2, truck=0.12, bus=0.25, bikes=2.0,
                           trees=10.0, lamps=3.5, signs=3.0, lights=1.1, static=2.0),
    }[dom]

    if has_tram and sc.tram_x is not None:
        zt = u(12, 60)
        if free(sc.tram_x - 1.4, sc.tram_x + 1.4, zt, zt + 32):
            objs.append(_big_vehicle(sc, rng, "tram", sc.tram_x, zt))
    for _ in range(rng.poisson(R["truck"])):
        X = float(rng.choice(lanes_x))
        Z = u(10, 80)
        if free(X - 1.3, X + 1.3, Z, Z + 12):
            objs.append(_big_vehicle(sc, rng, "truck", X, Z))
    for _ in range(rng.poisson(R["bus"])):
        X = float(rng.choice(lanes_x[-1:] + lanes_x[:1]))
        Z = u(10, 70)
        if free(X - 1.3, X + 1.3, Z, Z + 13):
            objs.append(_big_vehicle(sc, rng, "bus", X, Z))
    for _ in range(rng.poisson(R["moving"])):
        X = float(rng.choice(lanes_x)) + rng.normal(0, 0.2)
        Z = zmin + 2 + 120 * rng.random() ** 1.5
        if dom != "unity" and abs(X - sc.cam.x0) < 1.8:  # keep a safe distance to the car ahead
            Z = max(Z, u(8, 14))
        if free(X - 1.0, X + 1.0, Z - 0.5, Z + 5.5):
            objs.append(_vehicle(sc, rng, "car" if rng.random() < 0.85 else "van", X, Z, oncoming=X < mid))
    for side in (-1, 1):
        pw = sc.park[0 if side < 0 else 1]
        if pw == 0:
            continue
        n = rng.poisson(R["parked"] / 2 / 0.7)
        z = u(zmin + 1, 15)
        for _ in range(n):
            X = side * (rw / 2 - pw / 2) + rng.normal(0, 0.08)
            if free(X - 1.0, X + 1.0, z, z + 5.0):
                objs.append(_vehicle(sc, rng, "car" if rng.random() < 0.85 else "van", X, z, oncoming=False))
            z += u(5.2, 9.0) + (u(5, 25) if rng.random() < 0.2 else 0.0)
    for _ in range(rng.poisson(R["riders"])):
        moto = rng.random() < R["moto"]
        side_view = rng.random() < 0.35
        X = (sc.lane0 + sc.lanes * lane_w - u(0.5, 1.3)) if not side_view else u(-rw / 2, rw / 2)
        Z = zmin + 2 + 45 * rng.random() ** 1.3
        if dom != "unity" and abs(X - sc.cam.x0) < 1.8:  # not right in front of the camera
            Z = max(Z, u(9, 16))
        if free(X - 0.9, X + 0.9, Z - 0.3, Z + 1.9):
            objs.append(_twowheeler(sc, rng, X, Z, moto, side_view, rider=True))
    for _ in range(rng.poisson(R["bikes"])):
        side = -1 if rng.random() < 0.5 else 1
        X = side * (rw / 2 + u(0.4, 1.2))
        Z = u(zmin + 1, 40)
        if free(X - 0.9, X + 0.9, Z - 0.3, Z + 0.3):
            objs.append(_twowheeler(sc, rng, X, Z, rng.random() < 0.15, True, rider=False))
    for _ in range(rng.poisson(R["persons"])):
        side = -1 if rng.random() < 0.5 else 1
        crossing = rng.random() < 0.12
        X = u(-rw / 2, rw / 2) if crossing else side * (rw / 2 + u(0.5, sw - 0.3))
        Z = zmin + 1 + 55 * rng.random() ** 1.4
        if sc.cross and crossing:
            Z = sc.cross[0] - u(1, 4)
        if free(X - 0.3, X + 0.3, Z - 0.3, Z + 0.3):
            objs.append(Obj(Z, _person(sc, rng, X, Z)))
            if rng.random() < 0.3:  # a companion
                X2, Z2 = X + u(0.5, 0.8) * (1 if rng.random() < 0.5 else -1), Z + u(-0.4, 0.4)
                if free(X2 - 0.3, X2 + 0.3, Z2 - 0.3, Z2 + 0.3):
                    objs.append(Obj(Z2, _person(sc, rng, X2, Z2)))
    # street furniture along the sidewalks
    for side in (-1, 1):
        xc = side * (rw / 2 + 0.45)
        for _ in range(rng.poisson(R["trees"] / 2)):
            X = side * (rw / 2 + u(0.6, max(0.7, sw - 0.6)))
            Z = u(zmin + 3, 90)
            if free(X - 0.4, X + 0.4, Z - 0.4, Z + 0.4):
                objs.append(_tree(sc, rng, X, Z))
        z = u(zmin + 2, 20)
        for _ in range(rng.poisson(R["lamps"] / 2)):
            if free(xc - 0.2, xc + 0.2, z - 0.2, z + 0.2):
                objs.append(_lamp(sc, rng, xc, z, side))
            z += u(18, 35)
        for _ in range(rng.poisson(R["signs"] / 2)):
            Z = u(zmin + 2, 45)
            if free(xc - 0.4, xc + 0.4, Z - 0.2, Z + 0.2):
                objs.append(_sign(sc, rng, xc, Z))
        for _ in range(rng.poisson(R["static"] / 2)):
            X = side * (rw / 2 + u(0.5, sw - 0.3))
            Z = u(zmin + 1, 40)
            if free(X - 0.4, X + 0.4, Z - 0.4, Z + 1.6):
                objs.append(_static(sc, rng, X, Z))
    n_lights = rng.poisson(R["lights"]) + (1 if sc.cross and rng.random() < 0.7 else 0)
    for k in range(n_lights):
        side = 1 if (k % 2 == 0) else -1
        Z = (sc.cross[0] - u(0.5, 2.0)) if (sc.cross and k < 2) else u(zmin + 5, 60)
        X = side * (rw / 2 + 0.5)
        if free(X - 0.3, X + 0.3, Z - 0.3, Z + 0.3):
            objs.append(_traffic_light(sc, rng, X, Z, side, overhead=(dom == "gta5" and rng.random() < 0.6)))
    objs.sort(key=lambda o: -o.z)
    for i, o in enumerate(objs):
        o.inst = 1000 + i
    sc.objects = objs


# ----------------------------------------------------------------------------- rendering

class _Frame:
    def __init__(self, W: int, H: int):
        self.img = np.zeros((H, W, 3), np.float32)
        self.code = np.full((H, W), UNLABELED, np.uint8)
        self.z = np.full((H, W), np.inf, np.float32)    # depth of what is visible
        self.zs = np.full((H, W), np.inf, np.float32)   # depth of structures (not ground): objects occlude ground
        self.inst = np.zeros((H, W), np.uint16)


def _put(fr: _Frame, sel: np.ndarray, t: np.ndarray, code, col: np.ndarray, structure: bool = True) -> None:
    fr.code[sel] = code
    fr.img[sel] = col
    fr.z[sel] = t
    if structure:
        fr.zs[sel] = t


def _segment_lookup(row: Row, Z: np.ndarray) -> np.ndarray:
    i = np.searchsorted(row.z0, Z, side="right") - 1
    return np.clip(i, 0, len(row.z0) - 1)


def _row_height(row: Row, i: np.ndarray, along: np.ndarray, bank: np.ndarray) -> np.ndarray:
    hgt = row.h[i]
    if row.hn.any():
        hgt = hgt + row.hn[i] * _tex(bank, 0, np.zeros_like(along), along * 1.3)
    return hgt


def _facade_color(sc: Scene, row: Row, i, s, Y, face: int, bank) -> np.ndarray:
    dom = sc.dom
    code = row.code[i]
    base = row.col[i].copy()
    n = len(i)
    if n == 0:
        return base
    if face == 2:  # roof
        roof = base * 0.55 + 0.12
        if dom != "unity":
            roof = roof * (1 + 0.08 * _tex(bank, 2, s * 3, Y * 3))[:, None]
        return roof
    out = base
    bmask = code == BUILDING
    if bmask.any():
        win = row.win[i]
        fh, sp = win[:, 0], win[:, 1]
        fy = (Y / fh) % 1.0
        fx = (s / sp) % 1.0
        hgt = row.h[i]
        gf = row.gf[i]
        inwin = ((fy > win[:, 2]) & (fy < win[:, 3]) & (fx > win[:, 4]) & (fx < win[:, 5]) & (Y < hgt - 0.7)
                 & (Y > np.maximum(gf, 1.0)) & bmask)
        kind = row.kind[i]
        cell = _hash01(np.floor(Y / fh), np.floor(s / sp), 7)
        wcol = row.wcol[i] * (0.7 + 0.6 * cell)[:, None]
        if dom == "gta5":
            brick = kind == 1
            mortar = brick & ((((Y / 0.25) % 1.0) < 0.18) | ((((s / 0.5) + 0.5 * np.floor(Y / 0.25)) % 1.0) < 0.08))
            out = np.where(mortar[:, None], out * 1.25 + 0.08, out)
            out = out * (1 + 0.1 * _tex(bank, 1, s * 2.0, Y * 2.0))[:, None]
            concrete = kind == 4
            seams = concrete & (((Y / fh) % 1.0 < 0.04) | ((s / 4.0) % 1.0 < 0.02))
            out = np.where(seams[:, None], out * 0.7, out)
            refl = (kind == 2)
            wcol = np.where(refl[:, None], wcol * (0.8 + 0.5 * np.clip(0.5 + 0.4 * _tex(bank, 0, s * 0.5, Y * 0.3), 0, 1))[:, None], wcol)
        elif dom == "cityscapes":
            frame = (((fy > win[:, 2] - 0.05) & (fy < win[:, 3] + 0.05) & (fx > win[:, 4] - 0.05) & (fx < win[:, 5] + 0.05))
                     & ~inwin & (Y < hgt - 0.7) & (Y > np.maximum(gf, 1.0)) & bmask)
            out = np.where(frame[:, None], out * 0.5 + 0.42, out)
            cornice = bmask & ((Y / fh) % 1.0 < 0.05)
            out = np.where(cornice[:, None], out * 0.85, out)
            out = out * (1 + 0.04 * _tex(bank, 1, s * 2.0, Y * 2.0))[:, None]
            wcol = wcol * (1 + 0.4 * _hash01(np.floor(s / sp), np.floor(Y / fh), 11) * (fy > (win[:, 2] + win[:, 3]) / 2))[:, None]
        out = np.where(inwin[:, None], wcol, out)
        shop = bmask & (gf > 0) & (Y < gf) & (Y > 0.3) & ((s % 6.0) > 0.6)
        if dom != "unity":
            shopcol = row.wcol[i] * 0.7 + 0.05 * _hash01(np.floor(s / 6.0), np.zeros_like(s), 3)[:, None]
            out = np.where(shop[:, None], shopcol, out)
    vmask = code == VEG
    if vmask.any():
        amp = {"unity": 0.05, "gta5": 0.3, "cityscapes": 0.18}[dom]
        tv = _tex(bank, 2, s * 3.0, Y * 3.0) + 0.6 * _tex(bank, 3, s * 8.0, Y * 8.0)
        out = np.where(vmask[:, None], base * (1 + amp * tv)[:, None], out)
    wmask = code == WALL
    if wmask.any() and dom != "unity":
        amp = 0.12 if dom == "gta5" else 0.06
        tv = _tex(bank, 1, s * 2.0, Y * 2.0)
        kw = row.kind[i]
        blocks = wmask & (kw == 1) & ((((Y / 0.4) % 1.0) < 0.08) | (((s / 0.8 + 0.5 * np.floor(Y / 0.4)) % 1.0) < 0.05))
        out = np.where(wmask[:, None], base * (1 + amp * tv)[:, None], out)
        out = np.where(blocks[:, None], out * 0.75, out)
        top = wmask & (Y > row.h[i] - 0.12)
        out = np.where(top[:, None], out * 1.15, out)
    fmask = code == FENCE
    if fmask.any():
        kf = row.kind[i]
        if dom == "gta5":  # chain link / planks
            bars = np.where(kf == 0, (((s + Y) / 0.12) % 1.0 < 0.3) | (((s - Y) / 0.12) % 1.0 < 0.3), (s / 0.2) % 1.0 < 0.85)
        else:
            bars = (s / 0.14) % 1.0 < (0.35 if dom == "cityscapes" else 0.5)
        rails = (np.abs(Y - 0.15) < 0.06) | (np.abs(Y - (row.h[i] - 0.08)) < 0.08) | ((s / 2.5) % 1.0 < 0.05)
        solid = fmask & (bars | rails)
        out = np.where(fmask[:, None], base, out)
        out = np.where((fmask & ~solid)[:, None], np.nan, out)  # see-through: keep what is behind
    shade = {0: _shade(sc, np.array([-row.side, 0, 0])), 1: _shade(sc, np.array([0, 0, -1.0]))}[face]
    if dom == "unity":
        shade = 1.0 if face == 0 else 0.82
    return out * shade


def _cast_row(fr: _Frame, sc: Scene, row: Row, dirs, bank) -> None:
    cam = sc.cam
    dX, dY, dZ = dirs
    Xp = row.side * row.x
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (Xp - cam.x0) / dX
    ok = np.isfinite(t) & (t > 0.05)
    Z = np.where(ok, t * dZ, -1e9)
    Y = cam.h + t * dY
    i = _segment_lookup(row, Z)
    inseg = ok & (Z >= row.z0[0]) & (Z < row.z1[-1])
    hgt = _row_height(row, i, Z, bank)
    solid = inseg & (row.code[i] != 0)
    front = solid & (Y >= 0) & (Y < hgt)
    hits = []
    hits.append((front, t, i, Z - row.z0[i], Y, 0))
    if row.depth > 0:
        # near end face of the next block (seen through a gap or over a lower block)
        j = np.clip(i + 1, 0, len(row.z0) - 1)
        ze = row.z0[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            te = ze / dZ
        Xe = cam.x0 + te * dX
        Ye = cam.h + te * dY
        depth_in = (Xe - Xp) * row.side
        he = _row_height(row, j, ze + 0 * Ye, bank)
        endf = ok & ~front & (j > i) & (row.code[j] != 0) & (te > t) & (depth_in >= 0) & (depth_in < row.depth) & (Ye >= 0) & (Ye < he)
        hits.append((endf, te, j, depth_in, Ye, 1))
        # roofs (camera above the block)
        for k in (i, j):
            hk = row.h[k]
            down = dY < -1e-6
            with np.errstate(divide="ignore", invalid="ignore"):
                tr = np.where(down, (hk - cam.h) / np.where(down, dY, -1.0), -1.0)
            Xr = cam.x0 + tr * dX
            Zr = tr * dZ
            din = (Xr - Xp) * row.side
            roof = (ok & ~front & (row.code[k] != 0) & (hk < cam.h) & (tr > t - 1e-3) & (din >= 0) & (din < row.depth)
                    & (Zr >= row.z0[k]) & (Zr < row.z1[k]))
            hits.append((roof, tr, k, Xr, Zr, 2))
    for m, tt, idx, s, yy, face in hits:
        sel = m & (tt < fr.z)
        if not sel.any():
            continue
        ii = idx[sel]
        col = _facade_color(sc, row, ii, s[sel], yy[sel], face, bank)
        codes = row.code[ii].astype(np.uint8)
        tsel = tt[sel]
        if np.isnan(col).any():  # see-through fence: label only
            see = np.isnan(col[:, 0])
            cur = fr.img[sel]
            col = np.where(see[:, None], cur, col)
        _put(fr, sel, tsel, codes, col)


def _sky(fr: _Frame, sc: Scene, dirs, bank) -> None:
    dX, dY, dZ = dirs
    e = dY / np.sqrt(dX * dX + dZ * dZ)
    w = np.clip(e * 2.5, 0, 1)[..., None]
    col = sc.pal["sky1"] * (1 - w) + sc.pal["sky0"] * w
    if sc.dom != "unity":
        az = np.arctan2(dX, dZ)
        cl = _tex(bank, 0, e * 60, az * 40) + 0.5 * _tex(bank, 2, e * 150, az * 100)
        amt = 0.12 if sc.dom == "gta5" else 0.07
        col = col + amt * np.clip(cl, 0, None)[..., None] * (1 if sc.dom == "gta5" else -1)
    fr.img[:] = col
    fr.code[:] = SKY
    fr.z[:] = 1e4


def _end_plane(fr: _Frame, sc: Scene, dirs, bank) -> None:
    cam = sc.cam
    dX, dY, dZ = dirs
    with np.errstate(divide="ignore", invalid="ignore"):
        t = sc.end_z / dZ
    X = cam.x0 + t * dX
    Y = cam.h + t * dY
    k = np.clip(np.searchsorted(sc.end_x, X, side="right") - 1, 0, len(sc.end_code) - 1)
    hgt = sc.end_h[k] + np.where(sc.end_code[k] == VEG, 2.0 * _tex(bank, 0, np.zeros_like(X), X * 0.8), 0)
    m = (t > 0) & (Y < hgt) & (Y >= 0) & (t < fr.z)
    if m.any():
        col = sc.end_col[k[m]] * 0.9
        _put(fr, m, t[m], sc.end_code[k[m]].astype(np.uint8), col)


def _ground(fr: _Frame, sc: Scene, dirs, bank) -> None:
    cam, dom, pal = sc.cam, sc.dom, sc.pal
    dX, dY, dZ = dirs
    down = dY < -1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(down, cam.h / np.where(down, -dY, 1.0), np.inf)
    m = down & (t < fr.z)
    if not m.any():
        return
    t = t[m]
    X = cam.x0 + t * dX[m]
    Z = t * dZ[m]
    ax = np.abs(X)
    rside = (X > 0).astype(np.int64)
    rw2 = sc.rw / 2
    code = np.full(X.shape, ROAD, np.uint8)
    code[ax >= rw2] = SIDEWALK
    verge = np.array(sc.verge, np.uint8)[rside]
    code = np.where(ax >= rw2 + sc.sw, verge, code)
    fac = {r.side: r.x for r in sc.rows if r.role == "facade"}
    xf = np.array([fac[-1], fac[1]])[rside]
    code = np.where(ax >= xf, np.uint8(sc.back_ground), code)
    if sc.cross:
        c0, c1 = sc.cross
        incross = (Z >= c0) & (Z < c1)
        code = np.where(incross & (ax >= rw2), np.uint8(ROAD), code)
        zebra = (Z >= c0 - 4.0) & (Z < c0 - 1.0) & (ax < rw2 - 0.3) & (((X / 0.5) % 1.0) < 0.5)
        code = np.where(zebra, np.uint8(LANE), code)
    # lane markings
    lane_w = sc.lane_w
    mark = np.zeros(X.shape, bool)
    for k in range(1, sc.lanes):
        xb = sc.lane0 + k * lane_w
        if k == sc.lanes // 2:   # centre line: solid in gta5 (yellow), dashed elsewhere
            mark |= (np.abs(X - xb) < 0.09) & ((((Z / 9.0) % 1.0) < 0.5) | (dom == "gta5"))
        else:
            mark |= (np.abs(X - xb) < 0.07) & (((Z / 9.0) % 1.0) < 0.4)
    if dom != "cityscapes":
        mark |= (np.abs(X - sc.lane0) < 0.07) | (np.abs(X - (sc.lane0 + sc.lanes * lane_w)) < 0.07)
    mark &= (code == ROAD)
    code = np.where(mark, np.uint8(LANE), code)
    if sc.tram_x is not None:
        code = np.where((np.abs(X - sc.tram_x) < 0.9) & (code != SIDEWALK), np.uint8(RAIL), code)
    # colours
    col = np.empty(X.shape + (3,), np.float32)
    for c, key in ((ROAD, "road"), (SIDEWALK, "sidewalk"), (TERRAIN, "terrain"), (LANE, "lane"), (PARKING, "parking"),
                   (VEG, "veg"), (RAIL, "road")):
        mm = code == c
        if mm.any():
            col[mm] = pal[key]
    road_like = (code == ROAD) | (code == PARKING) | (code == RAIL)
    if dom == "gta5":
        tx = 0.12 * _tex(bank, 1, X * 1.5, Z * 1.5) + 0.08 * _tex(bank, 3, X * 9, Z * 9) + 0.1 * _tex(bank, 0, X * 0.3, Z * 0.3)
        tracks = np.zeros(X.shape, bool)
        for k in range(sc.lanes):
            xc = sc.lane0 + (k + 0.5) * lane_w
            tracks |= np.abs(np.abs(X - xc) - 0.8) < 0.3
        col *= (1 + np.where(road_like, tx - 0.12 * tracks, 0))[:, None]
        sw = code == SIDEWALK
        slabs = sw & ((((X / 1.5) % 1.0) < 0.05) | (((Z / 1.5) % 1.0) < 0.05))
        curb = sw & (ax < rw2 + 0.25)
        col = np.where(slabs[:, None], col * 0.8, col)
        col = np.where(curb[:, None], col * 1.15 + 0.05, col)
        col *= (1 + np.where(sw, 0.08 * _tex(bank, 2, X * 3, Z * 3), 0))[:, None]
        ter = code == TERRAIN
        col *= (1 + np.where(ter, 0.25 * _tex(bank, 2, X * 2, Z * 2) + 0.15 * _tex(bank, 3, X * 10, Z * 10), 0))[:, None]
    elif dom == "cityscapes":
        cobble = sc.light.get("cobble", False)
        tx = 0.05 * _tex(bank, 1, X * 1.2, Z * 1.2) + 0.04 * _tex(bank, 0, X * 0.2, Z * 0.2)
        if cobble:
            joints = (((X / 0.25) % 1.0) < 0.15) | ((((Z / 0.25) + 0.5 * np.floor(X / 0.25)) % 1.0) < 0.15)
            tx = tx - 0.12 * joints
        col *= (1 + np.where(road_like, tx, 0))[:, None]
        sw = code == SIDEWALK
        pav = sw & ((((X / 0.3) % 1.0) < 0.12) | (((Z / 0.3) % 1.0) < 0.12))
        curb = sw & (ax < rw2 + 0.2)
        col = np.where(pav[:, None], col * 0.85, col)
        col = np.where(curb[:, None], col * 0.8 + 0.15, col)
        col *= (1 + np.where(sw, 0.05 * _tex(bank, 2, X * 2, Z * 2), 0))[:, None]
        ter = code == TERRAIN
        col *= (1 + np.where(ter, 0.2 * _tex(bank, 2, X * 2, Z * 2) + 0.1 * _tex(bank, 3, X * 8, Z * 8), 0))[:, None]
        rails = (code == RAIL) & (np.abs(np.abs(X - (sc.tram_x or 0)) - 0.72) < 0.05)
        col = np.where(rails[:, None], _grey(0.6), col)
    else:
        curb = (code == SIDEWALK) & (ax < rw2 + 0.25)
        col = np.where(curb[:, None], col * 0.85, col)
    if dom == "gta5":
        lit = _shade(sc, np.array([0, 1.0, 0]))
        sh = _shadow(sc, X, Z) if sc.light["shadow"] < 1 else np.zeros(X.shape, bool)
        col = col * np.where(sh, sc.light["amb"] / lit * 1.1, 1.0)[:, None] * lit
    elif dom == "cityscapes":
        col = col * _shade(sc, np.array([0, 1.0, 0]))
    # ground pixels: structure depth stays (objects are never occluded by the ground they stand on)
    fr.code[m] = code
    fr.img[m] = col
    fr.z[m] = t


def _shadow(sc: Scene, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """Ground points (X, 0, Z) shadowed by the facade row on the sun's side."""
    s = sc.sun
    if abs(s[0]) < 1e-3:
        return np.zeros(X.shape, bool)
    side = 1 if s[0] > 0 else -1
    out = np.zeros(X.shape, bool)
    for row in sc.rows:
        if row.side != side or row.role == "fence":
            continue
        Xp = side * row.x
        tt = (Xp - X) / s[0]
        Yh = tt * s[1]
        Zh = Z + tt * s[2]
        i = _segment_lookup(row, Zh)
        out |= (tt > 0) & (row.code[i] != 0) & (Yh < row.h[i]) & (Zh >= row.z0[0])
    return out


def _draw_object(fr: _Frame, sc: Scene, obj: Obj, bank) -> None:
    cam = sc.cam
    prims = obj.prims
    if not prims:
        return
    allp = np.concatenate([p[0] for p in prims])
    u, v, zc = cam.project(allp)
    if not np.all(zc > 0.3):
        return
    H, W = fr.code.shape
    bx0, bx1 = int(max(0, math.floor(u.min()))), int(min(W, math.ceil(u.max()) + 1))
    by0, by1 = int(max(0, math.floor(v.min()))), int(min(H, math.ceil(v.max()) + 1))
    if bx0 >= bx1 or by0 >= by1:
        return
    import cv2

    idx = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
    n = 0
    ptop, pbot = [], []
    for k, (pts, code, col, flag) in enumerate(prims):
        nk = len(pts)
        pu, pv = u[n:n + nk], v[n:n + nk]
        n += nk
        poly = np.round(np.stack([pu - bx0, pv - by0], 1) * 16).astype(np.int32)
        cv2.fillPoly(idx, [poly], 0 if code is None else k + 1, lineType=cv2.LINE_8, shift=4)
        ptop.append(pv.min() - by0)
        pbot.append(pv.max() - by0)
    m = idx > 0
    if not m.any():
        return
    depth = float(np.median(zc))
    win = (slice(by0, by1), slice(bx0, bx1))
    m &= fr.zs[win] > depth
    if not m.any():
        return
    k = idx[m].astype(np.int64) - 1
    codes = np.array([p[1] if p[1] is not None else 0 for p in prims], np.uint8)[k]
    cols = np.array([p[2] for p in prims], np.float32)[k]
    flags = np.array([p[3] for p in prims], np.int64)[k]
    if sc.dom != "unity":
        rows_, cols_ = np.nonzero(m)
        top = np.array(ptop, np.float32)[k]
        hgt = np.maximum(np.array(pbot, np.float32)[k] - top, 1.0)
        rf = (rows_ - top) / hgt
        if sc.dom == "gta5":
            spec = 1 + 0.45 * np.exp(-((rf - 0.25) / 0.15) ** 2) - 0.15 * rf
            glass = 0.7 + 0.9 * np.clip(0.6 - rf, 0, 1) + 0.15 * _tex(bank, 1, rows_ * 0.7, cols_ * 0.7)
            tex = 1 + 0.15 * _tex(bank, 2, (rows_ + by0) * 1.0, (cols_ + bx0) * 1.0)
        else:
            spec = 1 + 0.12 * np.exp(-((rf - 0.2) / 0.2) ** 2)
            glass = 0.8 + 0.5 * np.clip(0.6 - rf, 0, 1)
            tex = 1 + 0.06 * _tex(bank, 2, (rows_ + by0) * 1.0, (cols_ + bx0) * 1.0)
        fac = np.where(flags == 1, spec, np.where(flags == 2, glass, np.where(flags == 3, tex, 1.0)))
        cols = cols * fac[:, None]
    sub_code = fr.code[win]
    sub_img = fr.img[win]
    sub_code[m] = codes
    sub_img[m] = cols
    fr.z[win][m] = depth
    th = np.isin(codes, _THINGS)
    sub_inst = fr.inst[win]
    vals = np.zeros(codes.shape, np.uint16)
    vals[th] = obj.inst
    sub_inst[m] = vals


def _object_shadow(fr: _Frame, sc: Scene, obj: Obj) -> None:
    """Contact shadow (all domains except unity) and, in gta5, the sun's cast shadow on the ground."""
    if sc.dom == "unity":
        return
    allp = np.concatenate([p[0] for p in obj.prims])
    big = allp[:, 1].max() > 0.9
    x0, x1 = allp[:, 0].min(), allp[:, 0].max()
    z0, z1 = allp[:, 2].min(), allp[:, 2].max()
    if not big or (x1 - x0) < 0.3 and (z1 - z0) < 0.3:
        return
    hgt = allp[:, 1].max()
    foot = np.array([[x0, 0, z0], [x1, 0, z0], [x1, 0, z1], [x0, 0, z1]])
    polys = [(foot, 0.55 if sc.dom == "cityscapes" else 0.6)]
    if sc.dom == "gta5" and sc.light["shadow"] < 1:
        s = sc.sun
        off = -np.array([s[0], 0, s[2]]) / max(s[1], 0.2) * hgt * 0.8
        sh = np.concatenate([foot, foot + off])
        polys.append((sh, sc.light["shadow"]))
    import cv2

    H, W = fr.code.shape
    for pts, k in polys:
        u, v, zc = sc.cam.project(pts)
        if not np.all(zc > 0.3):
            continue
        poly = np.round(np.stack([u, v], 1) * 16).astype(np.int32)
        hull = cv2.convexHull(poly)
        mask = np.zeros((H, W), np.uint8)
        cv2.fillPoly(mask, [hull], 1, lineType=cv2.LINE_8, shift=4)
        mm = (mask > 0) & np.isin(fr.code, _GROUND) & ~np.isfinite(fr.zs)
        fr.img[mm] *= k


def _render(sc: Scene, bank: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cam = sc.cam
    fr = _Frame(cam.W, cam.H)
    dirs = cam.rays()
    _sky(fr, sc, dirs, bank)
    _end_plane(fr, sc, dirs, bank)
    blocks = [r for r in sc.rows if r.role != "fence"]
    thin = [r for r in sc.rows if r.role == "fence"]
    for row in blocks:
        _cast_row(fr, sc, row, dirs, bank)
    _ground(fr, sc, dirs, bank)
    for row in thin:
        _cast_row(fr, sc, row, dirs, bank)
    for obj in sc.objects:
        _object_shadow(fr, sc, obj)
        _draw_object(fr, sc, obj, bank)
    if sc.dom == "cityscapes":
        _hood(fr, sc)
    img = _post(fr, sc, rng)
    return img, fr.code, fr.inst


def _hood(fr: _Frame, sc: Scene) -> None:
    H, W = fr.code.shape
    hh = sc.light["hood"] * H
    x = (np.arange(W) + 0.5 - W / 2) / (W / 2)
    top = H - hh * (1 - 0.55 * x ** 2)
    rows = np.arange(H)[:, None] + 0.5
    m = rows >= top[None, :]
    fr.code[m] = EGO
    fr.z[m] = 1.0
    # dark paint with a dim mirror image of the scene above
    yy, xx = np.nonzero(m)
    src = np.clip((2 * top[xx] - yy - 1).astype(np.int64), 0, H - 1)
    fr.img[yy, xx] = 0.06 + 0.25 * fr.img[src, xx]


def _post(fr: _Frame, sc: Scene, rng: np.random.Generator) -> np.ndarray:
    import cv2

    img = fr.img
    H, W = fr.code.shape
    dom = sc.dom
    z = np.minimum(fr.z, 1e4)[..., None]
    u = rng.uniform
    if dom == "gta5":
        a = 1 - np.exp(-z / u(250, 500))
        img = img * (1 - a) + sc.pal["haze"] * a
        mean = img.mean()
        img = (img - mean) * u(1.05, 1.2) + mean
        g = img.mean(-1, keepdims=True)
        img = g + (img - g) * u(1.1, 1.3)
        img = img * np.array([u(1.0, 1.06), 1.0, u(0.92, 1.0)], np.float32)
    elif dom == "unity":
        a = 1 - np.exp(-z / u(600, 1500))
        img = img * (1 - a) + sc.pal["haze"] * a
        g = img.mean(-1, keepdims=True)
        img = g + (img - g) * 1.15
    else:
        a = 1 - np.exp(-z / u(300, 600))
        img = img * (1 - a) + sc.pal["haze"] * a
        bias = sc.light.get("cast", np.ones(3, np.float32))
        img = img * (bias * np.array([u(0.95, 1.05), u(0.97, 1.05), u(0.95, 1.05)], np.float32)) * u(0.75, 0.95)
        mean = img.mean()
        img = (img - mean) * u(0.7, 0.85) + mean
        g = img.mean(-1, keepdims=True)
        img = g + (img - g) * u(0.75, 0.95)
        yy = (np.arange(H, dtype=np.float32)[:, None] + 0.5 - H / 2) / (H / 2)
        xx = (np.arange(W, dtype=np.float32)[None, :] + 0.5 - W / 2) / (W / 2)
        img = img * (1 - u(0.2, 0.35) * (xx * xx * 0.6 + yy * yy * 0.4))[..., None]
        img = np.clip(img, 0, 1) ** u(1.0, 1.2)
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), u(0.55, 0.85))
        sigma = u(0.012, 0.03)
        img = img + rng.normal(0, sigma, img.shape).astype(np.float32) * (0.5 + np.sqrt(np.clip(img, 0, 1)))
        img = img + rng.normal(0, sigma * 0.3, (H, 1, 1)).astype(np.float32)
    return np.clip(np.round(np.clip(img, 0, 1) * 255), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- per-image work

def _city_bias(seed: int, split: str, city_idx: int) -> dict:
    r = np.random.default_rng([seed, 5, 0 if split == "train" else 1, city_idx])
    w = r.dirichlet(np.ones(6) * 2.0) * 0.5 + np.array([0.35, 0.15, 0.2, 0.1, 0.1, 0.1]) * 0.5
    return {"facade": w.tolist(), "road": float(r.uniform(-0.04, 0.04)), "veg": float(r.uniform(-0.03, 0.03)),
            "cast": np.array([r.uniform(0.95, 1.03), r.uniform(1.0, 1.06), r.uniform(0.94, 1.03)], np.float32)}


def render_image(seed: int, key: str, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene of a domain key ('unity', 'gta5', 'cityscapes_train', 'cityscapes_val').

    Returns (RGB uint8 H x W x 3, internal codes uint8 H x W, instance ids uint16 H x W).
    """
    dom = "cityscapes" if key.startswith("cityscapes") else key
    W, H = SIZES[dom]
    rng = np.random.default_rng([seed, _DOMAIN_SALT[key], index])
    bias = None
    if dom == "cityscapes":
        split = key.split("_")[1]
        bias = _city_bias(seed, split, _city_of(index, split)[0])
    bank = _noise_bank(seed, {"unity": 1, "gta5": 2, "cityscapes": 3}[dom])
    sc = _sample_scene(dom, rng, W, H, bias)
    if dom == "cityscapes":
        sc.light["hood"] = rng.uniform(0.07, 0.11)
        sc.light["cobble"] = bool(rng.random() < 0.25)
        sc.light["cast"] = bias["cast"]
    return _render(sc, bank, rng)


def _city_of(index: int, split: str) -> tuple[int, int]:
    """index -> (city index, sequence number within the city): cities take turns in blocks of 5."""
    cities = CITIES[split]
    block = index // 5
    return block % len(cities), (block // len(cities)) * 5 + index % 5


def _paths(out: Path, key: str, index: int) -> tuple[Path, Path]:
    if key == "unity":
        return out / "unity" / "RGB" / f"{index:07d}.png", out / "unity" / "GT" / "LABELS" / f"{index:07d}.png"
    if key == "gta5":
        return out / "gta5" / "images" / f"{index:05d}.png", out / "gta5" / "labels" / f"{index:05d}.png"
    split = key.split("_")[1]
    ci, seq = _city_of(index, split)
    city = CITIES[split][ci]
    stem = f"{city}_{seq:06d}_{CITY_FRAME:06d}"
    return (out / "cityscapes" / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
            out / "cityscapes" / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")


def _write_one(out: Path, seed: int, key: str, index: int) -> list[str]:
    from pipeline.data import pngio

    img, code, inst = render_image(seed, key, index)
    ip, lp = _paths(out, key, index)
    pngio.write_png(ip, img)
    if key == "unity":
        lab = np.zeros(code.shape + (3,), np.uint16)
        lab[..., 0] = TO_SYNTHIA_ID[code]
        lab[..., 1] = inst
        pngio.write_png16(lp, lab)
    elif key == "gta5":
        pngio.write_png(lp, TO_LABEL_ID[code], palette=cityscapes_palette())
    else:
        pngio.write_png(lp, TO_LABEL_ID[code])
    return [str(ip.relative_to(out)), str(lp.relative_to(out))]


def _write_chunk(out: str, seed: int, key: str, start: int, stop: int) -> tuple[str, int, list[str]]:
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # pragma: no cover
        pass
    files: list[str] = []
    for i in range(start, stop):
        files += _write_one(Path(out), seed, key, i)
    return key, stop - start, files


# ----------------------------------------------------------------------------- public API

DATA_TOML = """# toytown, generated by phfa data synth --seed {seed}
[domains.unity]
format = "synthia"
root = "unity"
[domains.gta5]
format = "gta5"
root = "gta5"
[domains.cityscapes]
format = "cityscapes"
root = "cityscapes"
few_shot = {few_shot}
"""

_SUMMARY_NAME = {"unity": "unity", "gta5": "gta5", "cityscapes_train": "cityscapes/train", "cityscapes_val": "cityscapes/val"}


def generate(out: Path, seed: int = 0, counts: dict[str, int] | None = None,
             progress: Callable[[str, int, int], None] | None = None, workers: int | None = None) -> dict:
    """Write DIR/unity (SYNTHIA layout), DIR/gta5 (GTA5 layout), DIR/cityscapes (Cityscapes layout)
    and DIR/phfa-data.toml. Returns a summary dict {domain/split: image count, ...}.

    counts: images per key of DEFAULT_COUNTS (missing keys take the default).
    progress(name, done, total) is called as images are written; name is a key of the summary
    ('unity', 'gta5', 'cityscapes/train', 'cityscapes/val').
    workers: processes to use (default: up to 2); the output does not depend on it.
    """
    from pipeline.runtime.atomic import write_text

    out = Path(out)
    if not isinstance(seed, int) or seed < 0:
        raise PhfaError(f"--seed must be a non-negative integer (got {seed!r})")
    cnt = dict(DEFAULT_COUNTS)
    for k, v in (counts or {}).items():
        if k not in DEFAULT_COUNTS:
            raise PhfaError(f"unknown toytown count '{k}' (known: {', '.join(DEFAULT_COUNTS)})")
        if not isinstance(v, int) or v < 0:
            raise PhfaError(f"toytown count '{k}' must be a non-negative integer (got {v!r})")
        cnt[k] = v
    if cnt["cityscapes_train"] < 1 or cnt["cityscapes_val"] < 1:
        raise PhfaError("toytown needs at least one cityscapes train and one val image")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PhfaError(f"--out: cannot create {out}: {e.strerror or e}") from e

    tasks = []
    chunk = 10
    for key in DEFAULT_COUNTS:
        for s in range(0, cnt[key], chunk):
            tasks.append((str(out), seed, key, s, min(cnt[key], s + chunk)))
    done = {k: 0 for k in DEFAULT_COUNTS}
    written: list[str] = []
    total = sum(cnt.values())
    nw = workers if workers is not None else min(2, os.cpu_count() or 1)
    if progress:
        for k in DEFAULT_COUNTS:
            progress(_SUMMARY_NAME[k], 0, cnt[k])

    def _done(key, n, files):
        done[key] += n
        written.extend(files)
        if progress:
            progress(_SUMMARY_NAME[key], done[key], cnt[key])

    if nw <= 1 or total <= 20:
        for t in tasks:
            for i in range(t[3], t[4]):
                files = _write_one(out, seed, t[2], i)
                _done(t[2], 1, files)
    else:
        # fork: workers need nothing from the parent but this module (spawn would re-run an
        # unguarded __main__); they use no locks the parent's threads could hold.
        import cv2  # noqa: F401  (imported before forking, not in every worker)

        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with cf.ProcessPoolExecutor(max_workers=nw, mp_context=ctx) as ex:
            futs = [ex.submit(_write_chunk, *t) for t in tasks]
            try:
                for fut in cf.as_completed(futs):
                    _done(*fut.result())
            except BaseException:
                for f in futs:
                    f.cancel()
                raise

    few = min(FEW_SHOT, cnt["cityscapes_train"])
    write_text(out / "phfa-data.toml", DATA_TOML.format(seed=seed, few_shot=few))
    _remove_stale(out, written)
    return {_SUMMARY_NAME[k]: cnt[k] for k in DEFAULT_COUNTS}


def _remove_stale(out: Path, written: list[str]) -> None:
    """Remove files an earlier toytown generation wrote into `out` that this one did not rewrite."""
    from pipeline.runtime.atomic import write_text

    man = out / _MANIFEST
    new = sorted(set(written))
    if man.is_file():
        try:
            old = json.loads(man.read_text())
        except (OSError, ValueError):
            old = []
        keep = set(new)
        for rel in old if isinstance(old, list) else []:
            if isinstance(rel, str) and rel not in keep and ".." not in Path(rel).parts:
                (out / rel).unlink(missing_ok=True)
    write_text(man, json.dumps(new, indent=0) + "\n")
