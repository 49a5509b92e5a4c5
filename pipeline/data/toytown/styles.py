"""Every per-domain setting of toytown: the domain gap, in one place.

One frozen `DomainStyle` per domain (UNITY, GTA5, CITYSCAPES). The rest of the package
never tests a domain's name: it reads these fields. Three kinds of setting:

- layout statistics: camera placement and lens, street widths, building heights, how often
  each kind of object appears (`TrafficRates`): the *label* shift between domains;
- appearance: colour samplers (`Paints`), which surface details are drawn (`FacadeStyle`,
  `GroundStyle`, `ObjectShading`), lighting and shadows, sky clouds;
- the camera pipeline after rendering (`PostStyle`): haze, contrast, saturation, white
  balance and, for the real-camera domain, sensor effects (`SensorStyle`).

Numbers that are drawn per scene are `Uniform` / `Normal`; fixed numbers are plain floats
(`draw` accepts either). The order in which the samplers draw from the random generator is
part of the output: changing it changes every image after that point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .ids import PARKING, SIDEWALK, TERRAIN, VEG
from .precision import F
from .textures import grey, hsv

# ----------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class Uniform:
    lo: float
    hi: float

    def draw(self, rng: np.random.Generator) -> float:
        return rng.uniform(self.lo, self.hi)


@dataclass(frozen=True)
class Normal:
    mean: float
    sd: float

    def draw(self, rng: np.random.Generator) -> float:
        return rng.normal(self.mean, self.sd)


def draw(rng: np.random.Generator, x):
    """A `Uniform` / `Normal` drawn from rng; a plain number as it is (nothing drawn)."""
    return x.draw(rng) if isinstance(x, (Uniform, Normal)) else x


def pick(table, r: float):
    """The value of the first (threshold, value) with r < threshold (the last one otherwise)."""
    for p, v in table:
        if r < p:
            return v
    return table[-1][1]


# facade kinds (Row.kind of buildings): which surface details the renderer draws
FACADE_PLAIN, FACADE_BRICK, FACADE_GLASS, FACADE_STUCCO, FACADE_CONCRETE, FACADE_FRAMED = range(6)
# kinds of walls and fences (Row.kind of WALL / FENCE segments)
WALL_PLAIN, WALL_BLOCKS = 0, 1
FENCE_CHAIN_LINK, FENCE_PLANKS = 0, 1
# default mix of the six Cityscapes facade colours (plaster, sandstone, grey, white, dark, pastel)
CITY_FACADE_MIX = (0.35, 0.15, 0.2, 0.1, 0.1, 0.1)

Grain = tuple  # ((amplitude, noise texture 0-3, scale), ...): sum of amplitude * noise(scale * coordinates)


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class HighView:
    """A raised viewpoint (e.g. from a building or a drone) taken with probability p."""
    p: float
    height: Uniform
    pitch_deg: Uniform


@dataclass(frozen=True)
class CameraStyle:
    height: Uniform                     # m above the ground
    pitch_deg: Uniform                  # positive looks down
    yaw_deg: Uniform | Normal           # positive looks right
    hfov_deg: Uniform                   # horizontal field of view
    horizon_raise: Uniform | None = None  # principal point this fraction of the height above the middle
    high_view: HighView | None = None
    anywhere_across: bool = False       # lateral position anywhere over road and sidewalks (else in a right lane)


@dataclass(frozen=True)
class StreetStyle:
    lanes: tuple[int, ...]              # drawn uniformly from this list
    lane_width: Uniform
    sidewalk: Uniform
    p_parking_lane: float               # per side
    p_crossing: float                   # a side street crossing ahead
    p_flush: float                      # facades flush with the sidewalk (else set back)
    setback: Uniform                    # m between sidewalk and facades
    verge: tuple                        # ((threshold, ground code), ...) of the setback strip
    back_ground: int                    # ground code behind the facades
    p_tram: float
    lawn: tuple | None = None           # (p per side, Uniform width m): a grass strip along the curb


@dataclass(frozen=True)
class BlockStyle:
    height_min: float                   # facade row: height_min + (max - min) * U ** skew
    height_max: float
    height_skew: float
    length: Uniform
    p_gap: float
    whole_floors: bool                  # heights snapped to whole floors plus a roof cornice
    p_back_trees: float                 # back row: a mass of trees rather than a building
    skyline_height: Uniform             # buildings at the end of the street


@dataclass(frozen=True)
class LightLevels:
    ambient: float | Uniform
    direct: float | Uniform
    shadow: float | Uniform             # cast-shadow brightness (1: no cast shadows)


@dataclass(frozen=True)
class LightStyle:
    sun_elevation_deg: float | Uniform
    sun_azimuth: float | Uniform        # radians, 0 = down the street
    levels: LightLevels
    overcast: LightLevels | None = None  # used when the palette's weather is "overcast"


@dataclass(frozen=True)
class TrafficRates:
    """Poisson means per scene (label shift between domains)."""
    moving: float
    parked: float
    persons: float
    riders: float
    p_motorcycle: float                 # share of riders on motorcycles
    trucks: float
    buses: float
    bikes: float                        # parked bicycles
    trees: float
    lamps: float
    signs: float
    lights: float
    static: float


@dataclass(frozen=True)
class Paints:
    """Colour samplers; each draws from the rng in a fixed order."""
    palette: Callable                   # (rng, city look) -> per-scene colours of road, sky, vegetation...
    building: Callable                  # (rng, city look) -> colour, window colour, windows, kind, shop height
    car: Callable
    cloth: Callable
    wall: Callable
    fence: Callable
    bus: Callable
    truck_cab: Callable
    tram: Callable
    light_housing: Callable
    sign_plate: Callable                # rng -> (plate colour, inner colour or None)
    car_glass_hsv: tuple
    big_glass_hsv: tuple
    trunk_sat: float
    trunk_val: float | Uniform
    leaf_shade: Uniform
    bike_frame_sat: Uniform
    bike_frame_val: Uniform


@dataclass(frozen=True)
class FacadeStyle:
    textured_roofs: bool
    grain: float                        # noise amplitude on buildings (0: flat)
    brick_mortar: bool
    concrete_seams: bool
    glass_reflections: bool
    window_frames: bool
    cornices: bool
    lit_upper_windows: bool
    shop_fronts: bool
    veg_grain: float
    wall_grain: float                   # 0: flat walls without block joints or copings
    fence_chain_link: bool              # chain link / planks (else bars)
    fence_bar_duty: float
    flat_shading: tuple[float, float] | None  # fixed (front, end face) brightness instead of the sun


@dataclass(frozen=True)
class GroundStyle:
    solid_centre_line: bool
    edge_lines: bool                    # lines along both edges of the driving lanes
    asphalt: Grain                      # () = flat road
    tyre_tracks: float                  # darkening along each lane's wheel tracks (0: none)
    p_cobbles: float                    # cobbled road
    paving: tuple | None                # (slab size, joint width fraction, joint brightness)
    curb: tuple                         # (width, gain, offset or None)
    sidewalk_grain: Grain
    terrain_grain: Grain
    rail_lines: bool                    # tram rails drawn on the track bed
    lit: bool                           # ground shaded by the sun (without cast shadows)


@dataclass(frozen=True)
class ObjectShading:
    """Per-pixel shading of things: specular band (flag 1), glass (2), cloth/leaf grain (3)."""
    spec_amp: float
    spec_peak: float
    spec_width: float
    spec_falloff: float
    glass_base: float
    glass_gain: float
    glass_grain: float
    grain: float


@dataclass(frozen=True)
class SensorStyle:
    channel_gain: tuple                 # colour cast jitter per channel
    exposure: Uniform
    vignette: Uniform
    gamma: Uniform
    blur_sigma: Uniform
    noise_sigma: Uniform
    row_noise: float                    # per-row noise, relative to noise_sigma


@dataclass(frozen=True)
class PostStyle:
    haze_distance: Uniform
    contrast: Uniform | None
    saturation: float | Uniform
    white_balance: tuple | None         # per-channel gains (drawn or fixed)
    sensor: SensorStyle | None


@dataclass(frozen=True)
class DomainStyle:
    name: str
    layout: str                         # synthia | gta5 | cityscapes (files written, label encoding)
    size: tuple[int, int]               # (width, height)
    texture_salt: int
    camera: CameraStyle
    street: StreetStyle
    blocks: BlockStyle
    light: LightStyle
    rates: TrafficRates
    paints: Paints
    facade: FacadeStyle
    ground: GroundStyle
    objects: ObjectShading | None       # None: flat colours
    post: PostStyle
    cloud_contrast: float               # clouds brighten (+) or darken (-) the sky; 0: none
    contact_shadow: float | None        # brightness under things; None: none
    cast_shadows: bool                  # sun shadows of buildings and things on the ground
    detailed_vehicles: bool             # number plates, hub caps
    keeps_distance: bool                # no vehicle right in front of the camera
    p_overhead_lights: float            # traffic lights on a mast arm over the road
    p_rider_helmet: float
    hood: Uniform | None                # ego car's hood at the bottom, fraction of the height
    city_looks: bool                    # each city has its own look (see city_look)


# ----------------------------------------------------------------------------- unity (SYNTHIA-like)


def _unity_palette(rng, bias=None) -> dict:
    u = rng.uniform
    return {
        "road": hsv(u(0.6, 0.8), u(0.05, 0.2), u(0.3, 0.45)),
        "sidewalk": hsv(u(-0.05, 0.12), u(0.2, 0.45), u(0.6, 0.8)),
        "lane": grey(0.95),
        "veg": hsv(u(0.27, 0.35), u(0.65, 0.9), u(0.45, 0.7)),
        "terrain": hsv(u(0.25, 0.3), u(0.6, 0.8), u(0.5, 0.7)),
        "parking": hsv(u(0.55, 0.7), u(0.1, 0.25), u(0.45, 0.55)),
        "sky0": hsv(u(0.55, 0.62), u(0.55, 0.8), u(0.85, 1.0)),
        "sky1": hsv(u(0.54, 0.6), u(0.2, 0.4), 1.0),
        "pole": hsv(u(0, 1), u(0.0, 0.3), u(0.45, 0.7)),
        "haze": grey(0.85, (0, 0.02, 0.05)),
    }


def _unity_building(rng, bias=None):
    u = rng.uniform
    fh = u(2.9, 3.6)
    col = hsv(u(0, 1), u(0.1, 0.45), u(0.5, 0.9))
    has_win = rng.random() < 0.6
    win = [fh, u(2.0, 4.0), 0.3, 0.75, 0.25, 0.75] if has_win else [fh, 3.0, 0.0, 0.0, 0.0, 0.0]
    return col, hsv(u(0.55, 0.65), u(0.2, 0.5), u(0.25, 0.5)), win, FACADE_PLAIN, 0.0


def _unity_car(rng):
    u = rng.uniform
    return hsv(u(0, 1), u(0.6, 0.95), u(0.55, 0.95))


def _unity_cloth(rng):
    u = rng.uniform
    return hsv(u(0, 1), u(0.6, 1.0), u(0.5, 0.95))


def _unity_wall(r):
    return hsv(r.uniform(0, 1), r.uniform(0.2, 0.5), r.uniform(0.45, 0.75))


def _unity_fence(r):
    return hsv(r.uniform(0, 1), r.uniform(0.4, 0.8), r.uniform(0.4, 0.8))


def _unity_bus(rng):
    u = rng.uniform
    return hsv(u(0, 1), u(0.5, 0.9), u(0.5, 0.9))


def _unity_light_housing(rng):
    return grey(0.25, (0, 0, 0.05))


def _unity_sign(rng):
    return hsv(rng.choice([0.0, 0.14, 0.6]), 0.85, 0.9), None


# ----------------------------------------------------------------------------- gta5 (game-like)


def _gta5_palette(rng, bias=None) -> dict:
    u = rng.uniform
    # the game's weather: mostly sun, some sunsets, some overcast days (grey sky, no cast shadows)
    w = rng.random()
    weather = "sun" if w < 0.65 else ("sunset" if w < 0.75 else "overcast")
    sunset = weather == "sunset"
    grey_sky = {"sky0": hsv(u(0.55, 0.62), u(0.05, 0.15), u(0.6, 0.78)), "sky1": grey(u(0.78, 0.9)),
                "haze": grey(0.75, (0, 0.01, 0.02))}
    pal = {
        "weather": weather,
        # asphalt from dark to mid grey: its brighter half meets the lower end of cityscapes' road, as
        # GTA5's and Cityscapes' asphalts overlap (at 0.17-0.30 it never did, and source-only lost
        # the target road to truck and building: docs/notes/toytown-calibration.md §9)
        "road": hsv(u(0.05, 0.12), u(0.05, 0.15), u(0.2, 0.4)),
        "sidewalk": hsv(u(0.08, 0.14), u(0.05, 0.15), u(0.55, 0.72)),
        "lane": hsv(0.13, 0.8, 0.85) if rng.random() < 0.5 else grey(0.85),
        "veg": hsv(u(0.16, 0.24), u(0.5, 0.75), u(0.3, 0.5)),
        "terrain": hsv(u(0.09, 0.16), u(0.35, 0.6), u(0.42, 0.62)),
        "parking": hsv(0.1, 0.1, u(0.3, 0.4)),
        "sky0": hsv(u(0.57, 0.62), u(0.45, 0.7), u(0.7, 0.9)) if not sunset else hsv(0.65, 0.4, 0.55),
        "sky1": hsv(u(0.08, 0.12), u(0.1, 0.25), u(0.88, 0.98)) if not sunset else hsv(0.07, 0.6, 0.95),
        "pole": grey(u(0.22, 0.45), (0.02, 0.02, 0)),
        "haze": hsv(0.1, 0.15, 0.85) if not sunset else hsv(0.07, 0.4, 0.85),
    }
    if weather == "overcast":
        pal.update(grey_sky)
    return pal


def _gta5_building(rng, bias=None):
    u = rng.uniform
    fh = u(2.9, 3.6)
    r = rng.random()
    if r < 0.3:
        col, kind = hsv(u(0.0, 0.06), u(0.45, 0.7), u(0.35, 0.6)), FACADE_BRICK
    elif r < 0.55:
        col, kind = hsv(u(0.05, 0.13), u(0.2, 0.45), u(0.6, 0.85)), FACADE_STUCCO
    elif r < 0.8:
        col, kind = grey(u(0.45, 0.7), (0.03, 0.02, 0)), FACADE_CONCRETE
    else:
        col, kind = hsv(u(0.45, 0.6), u(0.15, 0.4), u(0.35, 0.55)), FACADE_GLASS  # glass tower
    wcol = hsv(u(0.5, 0.62), u(0.2, 0.5), u(0.12, 0.35))
    if kind == FACADE_GLASS:
        win = [u(3.3, 4.0), u(1.3, 2.0), 0.08, 0.92, 0.06, 0.94]
        wcol = hsv(u(0.5, 0.6), u(0.3, 0.6), u(0.35, 0.6))
    else:
        win = [fh, u(2.2, 4.5), u(0.25, 0.35), u(0.7, 0.8), u(0.2, 0.35), u(0.65, 0.8)]
    return col, wcol, win, kind, (u(3.5, 4.5) if rng.random() < 0.4 else 0.0)


def _gta5_car(rng):
    u = rng.uniform
    r = rng.random()
    if r < 0.45:
        return hsv(rng.choice([0.0, 0.03, 0.09, 0.15, 0.33, 0.55, 0.62, 0.78]) + u(-0.01, 0.01), u(0.6, 0.9), u(0.5, 0.9))
    if r < 0.65:
        return grey(u(0.85, 0.95))
    if r < 0.85:
        return grey(u(0.05, 0.14))
    return grey(u(0.5, 0.7))


def _gta5_cloth(rng):
    u = rng.uniform
    return hsv(u(0, 1), u(0.2, 0.75), u(0.25, 0.85))


def _gta5_wall(r):
    return hsv(r.uniform(0.07, 0.12), r.uniform(0.1, 0.3), r.uniform(0.5, 0.75))


def _gta5_fence(r):
    return grey(r.uniform(0.5, 0.7)) if r.random() < 0.6 else hsv(0.07, 0.5, r.uniform(0.35, 0.5))


def _gta5_bus(rng):
    return [grey(0.9), hsv(0.0, 0.7, 0.7), hsv(0.6, 0.6, 0.6), hsv(0.33, 0.6, 0.5)][int(rng.integers(0, 4))]


def _gta5_truck_cab(rng):
    u = rng.uniform
    return hsv(u(0, 1), u(0.5, 0.9), u(0.5, 0.85))


def _gta5_tram(rng):
    return grey(0.7, (0, 0.02, 0.06)) if rng.random() < 0.5 else hsv(0.6, 0.5, 0.6)


def _gta5_light_housing(rng):
    return hsv(0.13, 0.8, 0.75) if rng.random() < 0.6 else grey(0.12)


def _gta5_sign(rng):
    return [(grey(0.92), grey(0.1)), (hsv(0.38, 0.8, 0.45), grey(0.95)), (hsv(0.0, 0.85, 0.7), grey(0.95)),
            (hsv(0.14, 0.85, 0.85), grey(0.1))][int(rng.integers(0, 4))]


# ----------------------------------------------------------------------------- cityscapes (camera-like)


def city_look(seed: int, split: str, city_idx: int) -> dict:
    """A city's own look: facade colour mix, road and vegetation brightness, colour cast."""
    r = np.random.default_rng([seed, 5, 0 if split == "train" else 1, city_idx])
    w = r.dirichlet(np.ones(6) * 2.0) * 0.5 + np.array(CITY_FACADE_MIX) * 0.5
    return {"facade": w.tolist(), "road": float(r.uniform(-0.04, 0.04)), "veg": float(r.uniform(-0.03, 0.03)),
            "cast": np.array([r.uniform(0.95, 1.03), r.uniform(1.0, 1.06), r.uniform(0.94, 1.03)], F)}


def _city_palette(rng, bias=None) -> dict:
    u = rng.uniform
    b = bias or {}
    pavers = rng.random() < 0.6
    return {
        "road": hsv(u(0.66, 0.8), u(0.04, 0.12), u(0.36, 0.5) + b.get("road", 0.0)),
        "sidewalk": (hsv(u(0.0, 0.06), u(0.15, 0.32), u(0.42, 0.55)) if pavers
                     else hsv(u(0.55, 0.7), u(0.03, 0.08), u(0.5, 0.62))),
        "lane": grey(u(0.7, 0.85)),
        "veg": hsv(u(0.22, 0.32), u(0.35, 0.6), u(0.16, 0.3) + b.get("veg", 0.0)),
        "terrain": hsv(u(0.18, 0.27), u(0.35, 0.6), u(0.3, 0.45)),
        "parking": hsv(0.7, 0.06, u(0.4, 0.5)),
        "sky0": grey(u(0.78, 0.9), (-0.04, -0.01, 0.02)),
        "sky1": grey(u(0.88, 0.97)),
        "pole": (grey(u(0.45, 0.62)) if rng.random() < 0.7 else hsv(0.4, 0.25, u(0.25, 0.4))),
        "haze": grey(0.8, (0, 0.01, 0.03)),
    }


def _city_building(rng, bias=None):
    u = rng.uniform
    u(2.9, 3.6)  # drawn (and unused) like the other domains' floor height; floors come from win[0]
    b = bias or {}
    w = np.array(b.get("facade", list(CITY_FACADE_MIX)), F)
    r = rng.choice(6, p=w / w.sum())
    col = [
        hsv(u(0.09, 0.14), u(0.12, 0.3), u(0.62, 0.8)),   # plaster, cream
        hsv(u(0.06, 0.1), u(0.25, 0.4), u(0.5, 0.62)),    # sandstone
        grey(u(0.45, 0.62), (0, 0.01, 0.02)),             # grey render
        grey(u(0.74, 0.84)),                              # white
        grey(u(0.22, 0.33), (0, 0, 0.02)),                # dark modern
        hsv(u(0, 1), u(0.12, 0.25), u(0.6, 0.75)),        # pastel
    ][r]
    win = [u(3.2, 3.9), u(1.8, 2.8), u(0.2, 0.28), u(0.72, 0.85), u(0.3, 0.42), u(0.58, 0.7)]
    return (col, hsv(u(0.55, 0.65), u(0.05, 0.2), u(0.1, 0.22)), win, FACADE_FRAMED,
            (u(3.6, 4.4) if rng.random() < 0.5 else 0.0))


def _city_car(rng):
    u = rng.uniform
    r = rng.random()
    if r < 0.3:
        return grey(u(0.45, 0.65), (0, 0.01, 0.03))
    if r < 0.55:
        return grey(u(0.07, 0.2))
    if r < 0.7:
        return grey(u(0.72, 0.84))
    if r < 0.82:
        return hsv(u(0.6, 0.66), u(0.4, 0.6), u(0.2, 0.35))
    return hsv(u(0, 1), u(0.3, 0.5), u(0.3, 0.5))


def _city_cloth(rng):
    u = rng.uniform
    if rng.random() < 0.7:
        return hsv(u(0, 1), u(0.0, 0.25), u(0.08, 0.4))
    return hsv(u(0, 1), u(0.2, 0.5), u(0.3, 0.7))


def _city_wall(r):
    return grey(r.uniform(0.35, 0.55), (0.01, 0.01, 0.0)) if r.random() < 0.7 else hsv(0.05, 0.35, r.uniform(0.35, 0.5))


def _city_fence(r):
    return hsv(0.38, 0.3, r.uniform(0.2, 0.32)) if r.random() < 0.5 else grey(r.uniform(0.3, 0.45))


def _city_bus(rng):
    return [hsv(0.13, 0.35, 0.85), grey(0.85), hsv(0.0, 0.6, 0.6)][int(rng.integers(0, 3))]


def _plain_truck_cab(rng):  # unity and cityscapes
    return grey(0.88) if rng.random() < 0.6 else hsv(0.0, 0.7, 0.6)


def _plain_tram(rng):  # cityscapes (unity has no trams)
    return [hsv(0.0, 0.75, 0.75), hsv(0.13, 0.7, 0.85), grey(0.88)][int(rng.integers(0, 3))]


def _city_light_housing(rng):
    return grey(0.1)


def _city_sign(rng):
    return [(hsv(0.0, 0.8, 0.65), grey(0.85)), (hsv(0.6, 0.8, 0.5), grey(0.85)), (grey(0.85), hsv(0.0, 0.8, 0.6)),
            (hsv(0.13, 0.85, 0.85), grey(0.2))][int(rng.integers(0, 4))]


# ----------------------------------------------------------------------------- the three domains

# unity: flat-shaded, saturated, no texture, no cast shadows; random viewpoints, wide lenses,
# crowded with pedestrians; no terrain, truck or train (like SYNTHIA).
UNITY = DomainStyle(
    name="unity", layout="synthia", size=(160, 95), texture_salt=1,
    camera=CameraStyle(height=Uniform(1.5, 2.6), pitch_deg=Uniform(-3, 6), yaw_deg=Uniform(-35, 35),
                       hfov_deg=Uniform(60, 90), high_view=HighView(0.5, Uniform(3.0, 9.0), Uniform(4, 24)),
                       anywhere_across=True),
    street=StreetStyle(lanes=(2, 2, 3, 4), lane_width=Uniform(3.0, 3.8), sidewalk=Uniform(2.0, 5.0),
                       p_parking_lane=0.5, p_crossing=0.45, p_flush=0.4, setback=Uniform(2.0, 8.0),
                       verge=((0.55, SIDEWALK), (0.7, PARKING), (1.0, VEG)), back_ground=SIDEWALK, p_tram=0.0),
    blocks=BlockStyle(height_min=5.0, height_max=35.0, height_skew=2.0, length=Uniform(8.0, 30.0), p_gap=0.35,
                      whole_floors=False, p_back_trees=0.4, skyline_height=Uniform(10, 50)),
    light=LightStyle(sun_elevation_deg=60, sun_azimuth=math.radians(30), levels=LightLevels(0.8, 0.25, 1.0)),
    rates=TrafficRates(moving=4.0, parked=3.0, persons=14.0, riders=1.2, p_motorcycle=0.5, trucks=0.0, buses=0.35,
                       bikes=0.4, trees=4.0, lamps=2.0, signs=2.0, lights=0.8, static=1.5),
    paints=Paints(palette=_unity_palette, building=_unity_building, car=_unity_car, cloth=_unity_cloth,
                  wall=_unity_wall, fence=_unity_fence, bus=_unity_bus, truck_cab=_plain_truck_cab, tram=_plain_tram,
                  light_housing=_unity_light_housing, sign_plate=_unity_sign,
                  car_glass_hsv=(0.58, 0.5, 0.35), big_glass_hsv=(0.58, 0.5, 0.35),
                  trunk_sat=0.6, trunk_val=0.35, leaf_shade=Uniform(0.92, 1.05),
                  bike_frame_sat=Uniform(0.5, 0.9), bike_frame_val=Uniform(0.4, 0.9)),
    facade=FacadeStyle(textured_roofs=False, grain=0.0, brick_mortar=False, concrete_seams=False,
                       glass_reflections=False, window_frames=False, cornices=False, lit_upper_windows=False,
                       shop_fronts=False, veg_grain=0.05, wall_grain=0.0, fence_chain_link=False, fence_bar_duty=0.5,
                       flat_shading=(1.0, 0.82)),
    ground=GroundStyle(solid_centre_line=False, edge_lines=True, asphalt=(), tyre_tracks=0.0, p_cobbles=0.0,
                       paving=None, curb=(0.25, 0.85, None), sidewalk_grain=(), terrain_grain=(), rail_lines=False,
                       lit=False),
    objects=None,
    post=PostStyle(haze_distance=Uniform(600, 1500), contrast=None, saturation=1.15, white_balance=None, sensor=None),
    cloud_contrast=0.0, contact_shadow=None, cast_shadows=False, detailed_vehicles=False, keeps_distance=False,
    p_overhead_lights=0.0, p_rider_helmet=0.0, hood=None, city_looks=False,
)

# gta5: textured, directional sun with cast shadows (a quarter of the days overcast, a tenth at
# sunset), specular paint, warm haze; vivid cars, olive vegetation, tall buildings, more trucks,
# fewer pedestrians; driving-height camera with a wide lens.
GTA5 = DomainStyle(
    name="gta5", layout="gta5", size=(240, 132), texture_salt=2,
    camera=CameraStyle(height=Uniform(1.4, 2.8), pitch_deg=Uniform(-1.5, 4.0), yaw_deg=Normal(0, 5),
                       hfov_deg=Uniform(62, 78)),
    street=StreetStyle(lanes=(2, 2, 3, 4, 4, 5), lane_width=Uniform(3.3, 3.9), sidewalk=Uniform(2.0, 3.8),
                       p_parking_lane=0.35, p_crossing=0.35, p_flush=0.35, setback=Uniform(3.0, 12.0),
                       verge=((0.55, TERRAIN), (0.8, SIDEWALK), (1.0, PARKING)), back_ground=TERRAIN, p_tram=0.05),
    blocks=BlockStyle(height_min=4.0, height_max=45.0, height_skew=2.2, length=Uniform(10.0, 35.0), p_gap=0.35,
                      whole_floors=False, p_back_trees=0.5, skyline_height=Uniform(10, 50)),
    light=LightStyle(sun_elevation_deg=Uniform(20, 60), sun_azimuth=Uniform(-math.pi, math.pi),
                     levels=LightLevels(Uniform(0.42, 0.55), Uniform(0.6, 0.8), Uniform(0.45, 0.6)),
                     overcast=LightLevels(Uniform(0.75, 0.85), Uniform(0.1, 0.2), 1.0)),
    rates=TrafficRates(moving=4.5, parked=4.0, persons=1.8, riders=0.5, p_motorcycle=0.65, trucks=1.0, buses=0.3,
                       bikes=0.2, trees=5.0, lamps=2.5, signs=1.2, lights=0.7, static=1.0),
    paints=Paints(palette=_gta5_palette, building=_gta5_building, car=_gta5_car, cloth=_gta5_cloth,
                  wall=_gta5_wall, fence=_gta5_fence, bus=_gta5_bus, truck_cab=_gta5_truck_cab, tram=_gta5_tram,
                  light_housing=_gta5_light_housing, sign_plate=_gta5_sign,
                  car_glass_hsv=(0.58, 0.25, 0.18), big_glass_hsv=(0.58, 0.25, 0.2),
                  trunk_sat=0.4, trunk_val=Uniform(0.15, 0.3), leaf_shade=Uniform(0.75, 1.15),
                  bike_frame_sat=Uniform(0.5, 0.9), bike_frame_val=Uniform(0.4, 0.9)),
    facade=FacadeStyle(textured_roofs=True, grain=0.1, brick_mortar=True, concrete_seams=True,
                       glass_reflections=True, window_frames=False, cornices=False, lit_upper_windows=False,
                       shop_fronts=True, veg_grain=0.3, wall_grain=0.12, fence_chain_link=True, fence_bar_duty=0.5,
                       flat_shading=None),
    ground=GroundStyle(solid_centre_line=True, edge_lines=True,
                       asphalt=((0.12, 1, 1.5), (0.08, 3, 9), (0.1, 0, 0.3)), tyre_tracks=0.12, p_cobbles=0.0,
                       paving=(1.5, 0.05, 0.8), curb=(0.25, 1.15, 0.05), sidewalk_grain=((0.08, 2, 3),),
                       terrain_grain=((0.25, 2, 2), (0.15, 3, 10)), rail_lines=False, lit=True),
    objects=ObjectShading(spec_amp=0.45, spec_peak=0.25, spec_width=0.15, spec_falloff=0.15,
                          glass_base=0.7, glass_gain=0.9, glass_grain=0.15, grain=0.15),
    post=PostStyle(haze_distance=Uniform(250, 500), contrast=Uniform(1.05, 1.2), saturation=Uniform(1.1, 1.3),
                   white_balance=(Uniform(1.0, 1.06), 1.0, Uniform(0.92, 1.0)), sensor=None),
    cloud_contrast=0.12, contact_shadow=0.6, cast_shadows=True, detailed_vehicles=True, keeps_distance=True,
    p_overhead_lights=0.6, p_rider_helmet=0.0, hood=None, city_looks=False,
)

# cityscapes: overcast light (white sky, no cast shadows), muted palette, framed windows, the ego
# car's hood, low camera with a narrower lens, more persons, bicycles and poles, fewer trucks,
# lower European buildings, a look per city; then sensor effects.
CITYSCAPES = DomainStyle(
    name="cityscapes", layout="cityscapes", size=(256, 128), texture_salt=3,
    camera=CameraStyle(height=Uniform(1.15, 1.3), pitch_deg=Uniform(-0.5, 1.5), yaw_deg=Normal(0, 3),
                       hfov_deg=Uniform(46, 52), horizon_raise=Uniform(0.04, 0.09)),  # horizon at ~41-46% of the height
    street=StreetStyle(lanes=(2, 2, 2, 3, 4), lane_width=Uniform(2.9, 3.3), sidewalk=Uniform(2.5, 5.0),
                       p_parking_lane=0.7, p_crossing=0.45, p_flush=0.55, setback=Uniform(2.0, 7.0),
                       verge=((0.4, TERRAIN), (0.8, SIDEWALK), (1.0, PARKING)), back_ground=TERRAIN, p_tram=0.12,
                       lawn=(0.4, Uniform(0.8, 1.8))),  # tree lawns: terrain ~1 % of pixels as in Cityscapes
    blocks=BlockStyle(height_min=9.0, height_max=22.0, height_skew=1.3, length=Uniform(9.0, 22.0), p_gap=0.18,
                      whole_floors=True, p_back_trees=0.45, skyline_height=Uniform(10, 28)),
    light=LightStyle(sun_elevation_deg=70, sun_azimuth=Uniform(-math.pi, math.pi),
                     levels=LightLevels(Uniform(0.8, 0.9), 0.15, 1.0)),
    rates=TrafficRates(moving=2.0, parked=3.5, persons=5.5, riders=1.1, p_motorcycle=0.2, trucks=0.25, buses=0.25,
                       bikes=2.0, trees=10.0, lamps=3.5, signs=3.0, lights=1.1, static=2.0),
    paints=Paints(palette=_city_palette, building=_city_building, car=_city_car, cloth=_city_cloth,
                  wall=_city_wall, fence=_city_fence, bus=_city_bus, truck_cab=_plain_truck_cab, tram=_plain_tram,
                  light_housing=_city_light_housing, sign_plate=_city_sign,
                  car_glass_hsv=(0.58, 0.25, 0.18), big_glass_hsv=(0.58, 0.25, 0.2),
                  trunk_sat=0.4, trunk_val=Uniform(0.15, 0.3), leaf_shade=Uniform(0.75, 1.15),
                  bike_frame_sat=Uniform(0.1, 0.4), bike_frame_val=Uniform(0.15, 0.5)),
    facade=FacadeStyle(textured_roofs=True, grain=0.04, brick_mortar=False, concrete_seams=False,
                       glass_reflections=False, window_frames=True, cornices=True, lit_upper_windows=True,
                       shop_fronts=True, veg_grain=0.18, wall_grain=0.06, fence_chain_link=False, fence_bar_duty=0.35,
                       flat_shading=None),
    ground=GroundStyle(solid_centre_line=False, edge_lines=False, asphalt=((0.05, 1, 1.2), (0.04, 0, 0.2)),
                       tyre_tracks=0.0, p_cobbles=0.25, paving=(0.3, 0.12, 0.85), curb=(0.2, 0.8, 0.15),
                       sidewalk_grain=((0.05, 2, 2),), terrain_grain=((0.2, 2, 2), (0.1, 3, 8)), rail_lines=True,
                       lit=True),
    objects=ObjectShading(spec_amp=0.12, spec_peak=0.2, spec_width=0.2, spec_falloff=0.0,
                          glass_base=0.8, glass_gain=0.5, glass_grain=0.0, grain=0.06),
    # contrast, exposure and gamma give the pixel statistics of real Cityscapes (mean 0.29, std 0.19 per
    # channel); blur and noise are those of a 1024x512 camera image shrunk 4x to the toy's 256x128
    post=PostStyle(haze_distance=Uniform(300, 600), contrast=Uniform(1.1, 1.25), saturation=Uniform(0.75, 0.95),
                   white_balance=None,
                   sensor=SensorStyle(channel_gain=(Uniform(0.95, 1.05), Uniform(0.97, 1.05), Uniform(0.95, 1.05)),
                                      exposure=Uniform(0.8, 0.95), vignette=Uniform(0.2, 0.35),
                                      gamma=Uniform(1.0, 1.15), blur_sigma=Uniform(0.3, 0.45),   # ~1.5 px at 1024x512
                                      noise_sigma=Uniform(0.003, 0.0075), row_noise=0.3)),  # ~1-2 grey levels
    cloud_contrast=-0.07, contact_shadow=0.55, cast_shadows=False, detailed_vehicles=True, keeps_distance=True,
    p_overhead_lights=0.0, p_rider_helmet=0.5, hood=Uniform(0.07, 0.11), city_looks=True,
)
