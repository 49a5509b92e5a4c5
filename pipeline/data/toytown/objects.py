"""Things in the street as 3-D primitives: vehicles, people, two-wheelers, trees, poles, signs; and their placement."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .ids import BIKE, BUS, CAR, LIGHT, MOTO, PERSON, POLE, RIDER, SIGN, STATIC, TRAIN, TRUCK, VEG
from .precision import F
from .street import Scene
from .styles import draw
from .textures import grey, hsv

# primitive flags: how the renderer shades a polygon's pixels (see styles.ObjectShading)
FLAT, SPECULAR, GLASS, GRAIN = 0, 1, 2, 3


@dataclass
class Obj:
    z: float          # sort key (distance)
    prims: list       # [(points Nx3, code or None (erase), rgb, flag)]
    inst: int = 0


def box(x0, x1, y0, y1, z0, z1, cam_pos):
    """Visible faces of an axis-aligned box -> list of (4x3 points, normal)."""
    faces = [
        (np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0]], F), (0, 0, -1)),
        (np.array([[x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]], F), (0, 0, 1)),
        (np.array([[x0, y0, z0], [x0, y0, z1], [x0, y1, z1], [x0, y1, z0]], F), (-1, 0, 0)),
        (np.array([[x1, y0, z0], [x1, y0, z1], [x1, y1, z1], [x1, y1, z0]], F), (1, 0, 0)),
        (np.array([[x0, y1, z0], [x1, y1, z0], [x1, y1, z1], [x0, y1, z1]], F), (0, 1, 0)),
    ]
    out = []
    cam = np.asarray(cam_pos, F)
    for pts, n in faces:
        d = cam - pts.mean(0)
        if d[0] * n[0] + d[1] * n[1] + d[2] * n[2] > 1e-6:  # written out, not BLAS: decides the labels
            out.append((pts, np.array(n, F)))
    return out


def disc(cx, cy, z, rx, ry, k=10, plane="z", x=None):
    """k-gon ellipse in a plane Z = z (or X = x, with cx along Z).

    Its corners decide label pixels, so cos and sin are the C library's scalar ones, the same on
    every CPU, not numpy's vectorised ones, which differ by an ulp between AVX2 and AVX-512.
    """
    a = np.linspace(0, 2 * np.pi, k, endpoint=False)
    cos = np.array([math.cos(v) for v in a], F)
    sin = np.array([math.sin(v) for v in a], F)
    if plane == "z":
        return np.stack([cx + rx * cos, cy + ry * sin, np.full(k, z)], 1)
    return np.stack([np.full(k, x), cy + ry * sin, cx + rx * cos], 1)


def quad_z(xa, xb, ya, yb, z):
    """Rectangle in the plane Z = z."""
    return np.array([[xa, ya, z], [xb, ya, z], [xb, yb, z], [xa, yb, z]], F)


def vehicle(sc: Scene, rng, kind: str, X: float, Z: float, oncoming: bool) -> Obj:
    """A car or a van with its rear (or front, if oncoming) towards the camera."""
    st, cam = sc.style, sc.cam
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
    col = st.paints.car(rng)
    glass = hsv(*st.paints.car_glass_hsv)
    x0, x1 = X - W_ / 2, X + W_ / 2
    z0, z1 = Z, Z + L
    # body
    for pts, n in box(x0, x1, 0.28, hb, z0, z1, cp):
        prims.append((pts, CAR, col * sc.shade(n), SPECULAR))
        if n[2] < 0:  # rear (or front) face: lights and plate
            lc = grey(0.95, (0, 0, -0.1)) if oncoming else hsv(0.0, 0.85, 0.8)
            yl = 0.28 + (hb - 0.28) * 0.55
            prims.append((quad_z(x0 + 0.08, x0 + 0.4, yl, yl + 0.15, z0 - 0.01), CAR, lc, FLAT))
            prims.append((quad_z(x1 - 0.4, x1 - 0.08, yl, yl + 0.15, z0 - 0.01), CAR, lc, FLAT))
            if st.detailed_vehicles:
                prims.append((quad_z(X - 0.25, X + 0.25, 0.35, 0.47, z0 - 0.01), CAR, grey(0.85), FLAT))
    # wheels (the ground shows between them)
    for za, zb in ((z0 + 0.55, z0 + 1.1), (z1 - 1.1, z1 - 0.55)):
        for xa, xb in ((x0 + 0.02, x0 + 0.3), (x1 - 0.3, x1 - 0.02)):
            for pts, n in box(xa, xb, 0.0, 0.3, za, zb, cp):
                prims.append((pts, CAR, grey(0.06), FLAT))
    if cam.x0 < x0 or cam.x0 > x1:  # side wheels
        xs = x0 - 0.01 if cam.x0 < x0 else x1 + 0.01
        for zc in (z0 + 0.8, z1 - 0.8):
            prims.append((disc(zc, 0.32, 0, 0.32, 0.32, k=10, plane="x", x=xs), CAR, grey(0.05), FLAT))
            if st.detailed_vehicles:  # hub caps
                prims.append((disc(zc, 0.32, 0, 0.15, 0.15, k=8, plane="x", x=xs - 0.005 * np.sign(xs - cam.x0)), CAR,
                              grey(0.55), FLAT))
    # cabin
    ins = 0.12
    for pts, n in box(x0 + ins, x1 - ins, hb, ht, z0 + c0 * L, z0 + c1 * L, cp):
        if n[1] > 0:
            prims.append((pts, CAR, col * sc.shade(n), SPECULAR))
        else:
            prims.append((pts, CAR, glass, GLASS))
    return Obj(Z, prims)


def big_vehicle(sc: Scene, rng, kind: str, X: float, Z: float) -> Obj:
    """A bus, a truck (cargo box and cab) or a tram seen from behind."""
    st, cp = sc.style, sc.cam.pos
    paints = st.paints
    prims = []
    u = rng.uniform
    glass = hsv(*paints.big_glass_hsv)
    if kind == "bus":
        W_, L, Hh = 2.55, u(10.5, 12.5), u(3.0, 3.3)
        col = paints.bus(rng)
        boxes = [(X - W_ / 2, X + W_ / 2, 0.35, Hh, Z, Z + L, col, BUS)]
        band = (1.1, Hh - 0.35)
        code = BUS
    elif kind == "truck":
        W_, Lc, Lb, Hb = 2.45, u(2.0, 2.5), u(6.0, 9.0), u(3.2, 3.9)
        cab = paints.truck_cab(rng)
        box_col = grey(u(0.75, 0.92)) if rng.random() < 0.6 else hsv(u(0, 1), u(0.2, 0.6), u(0.4, 0.8))
        # seen from behind: cargo box first (near), cab further away
        boxes = [(X - 1.15, X + 1.15, 0.45, 2.9, Z + Lb + 0.2, Z + Lb + 0.2 + Lc, cab, TRUCK),
                 (X - W_ / 2, X + W_ / 2, 0.55, Hb, Z, Z + Lb, box_col, TRUCK)]
        band = None
        code = TRUCK
        L = Lb + Lc
    else:  # tram
        W_, L, Hh = 2.65, u(22, 32), 3.4
        col = paints.tram(rng)
        boxes = [(X - W_ / 2, X + W_ / 2, 0.3, Hh, Z, Z + L, col, TRAIN)]
        band = (1.1, 2.6)
        code = TRAIN
    for (bx0, bx1, by0, by1, bz0, bz1, bc, bcode) in boxes:
        for pts, n in box(bx0, bx1, by0, by1, bz0, bz1, cp):
            prims.append((pts, bcode, bc * sc.shade(n), SPECULAR if kind != "tram" else FLAT))
            if band is not None and n[1] == 0:
                # window band on this face
                p = pts.copy()
                if n[2] != 0:
                    xa, xb = bx0 + 0.15, bx1 - 0.15
                    prims.append((quad_z(xa, xb, band[0], band[1], p[0, 2] - 0.01 * (1 if n[2] < 0 else -1)), bcode, glass,
                                  GLASS))
                else:
                    xs = p[0, 0] + 0.01 * n[0]
                    prims.append((np.array([[xs, band[0], bz0 + 0.5], [xs, band[0], bz1 - 0.5], [xs, band[1], bz1 - 0.5],
                                            [xs, band[1], bz0 + 0.5]]), bcode, glass, GLASS))
                    if kind == "tram":  # door / segment joints
                        for zj in np.arange(bz0 + 6.0, bz1 - 1.0, 6.5):
                            prims.append((np.array([[xs, 0.3, zj], [xs, 0.3, zj + 0.25], [xs, Hh, zj + 0.25], [xs, Hh, zj]]),
                                          bcode, bc * 0.55, FLAT))
    # wheels
    zw = [Z + 1.2, Z + L - 2.0]
    for zc in zw:
        for pts, n in box(X - W_ / 2 + 0.1, X + W_ / 2 - 0.1, 0.0, 0.5, zc - 0.5, zc + 0.5, cp):
            prims.append((pts, code, grey(0.07), FLAT))
    if kind == "tram":  # pantograph
        top = Hh
        prims.append((quad_z(X - 0.03, X + 0.03, top, top + 1.2, Z + L / 2), TRAIN, grey(0.2), FLAT))
        prims.append((quad_z(X - 0.6, X + 0.6, top + 1.1, top + 1.2, Z + L / 2), TRAIN, grey(0.2), FLAT))
    return Obj(Z, prims)


def skin(rng) -> np.ndarray:
    return hsv(rng.uniform(0.04, 0.08), rng.uniform(0.3, 0.6), rng.uniform(0.35, 0.85))


def person(sc: Scene, rng, X: float, Z: float, code=PERSON, seated=False, Y0=0.0) -> list:
    """Primitives of a standing (or seated, for riders) person facing the camera."""
    st = sc.style
    u = rng.uniform
    hgt = u(1.55, 1.92)
    top, bot, sk = st.paints.cloth(rng), st.paints.cloth(rng), skin(rng)
    hair = hsv(0.08, 0.5, u(0.05, 0.35))
    s = hgt / 1.75
    prims = []
    if not seated:
        stride = u(-0.12, 0.12) * s
        prims.append((quad_z(X - 0.17 * s + stride, X - 0.03 * s + stride, Y0, Y0 + 0.86 * s, Z), code, bot * 0.9, GRAIN))
        prims.append((quad_z(X + 0.03 * s - stride, X + 0.17 * s - stride, Y0, Y0 + 0.86 * s, Z), code, bot, GRAIN))
        ytor = Y0 + 0.84 * s
    else:
        prims.append((np.array([[X - 0.17, Y0 + 0.25, Z], [X - 0.05, Y0 + 0.25, Z], [X - 0.04, Y0 + 0.75, Z], [X - 0.18, Y0 + 0.75, Z]]),
                      code, bot, GRAIN))
        prims.append((np.array([[X + 0.05, Y0 + 0.25, Z], [X + 0.17, Y0 + 0.25, Z], [X + 0.18, Y0 + 0.75, Z], [X + 0.04, Y0 + 0.75, Z]]),
                      code, bot, GRAIN))
        ytor = Y0 + 0.72
    lean = 0.0 if not seated else 0.06
    tor_h = 0.58 * s
    prims.append((np.array([[X - 0.18 * s, ytor, Z], [X + 0.18 * s, ytor, Z], [X + 0.22 * s + lean, ytor + tor_h, Z],
                            [X - 0.22 * s + lean, ytor + tor_h, Z]]), code, top, GRAIN))
    # arms
    for sgn in (-1, 1):
        xa = X + sgn * 0.22 * s + lean
        prims.append((np.array([[xa, ytor + tor_h, Z], [xa + sgn * 0.08 * s, ytor + tor_h - 0.02, Z],
                                [xa + sgn * 0.1 * s + (0.12 if seated else 0), ytor + 0.05, Z], [xa + sgn * 0.02, ytor + 0.05, Z]]),
                      code, top * 0.85, GRAIN))
    yh = ytor + tor_h + 0.12 * s
    prims.append((disc(X + lean, yh, Z, 0.11 * s, 0.13 * s, k=10), code, sk, FLAT))
    helmet = code == RIDER and st.p_rider_helmet > 0 and rng.random() < st.p_rider_helmet
    prims.append((disc(X + lean, yh + 0.05 * s, Z - 0.01, 0.115 * s, 0.09 * s, k=8),
                   code, hsv(u(0, 1), 0.6, 0.7) if helmet else hair, FLAT))
    return prims


def twowheeler(sc: Scene, rng, X: float, Z: float, moto: bool, side_view: bool, rider: bool) -> Obj:
    """A bicycle or motorcycle, side-on or from behind, with or without a rider."""
    paints = sc.style.paints
    code = MOTO if moto else BIKE
    u = rng.uniform
    frame = hsv(u(0, 1), paints.bike_frame_sat.draw(rng), paints.bike_frame_val.draw(rng))
    dark = grey(0.08)
    prims = []
    if side_view:
        d = 0.55 if not moto else 0.7
        r = 0.34 if not moto else 0.32
        for xw in (X - d, X + d):
            prims.append((disc(xw, r, Z, r, r, k=12), code, dark, FLAT))
            if not moto:
                prims.append((disc(xw, r, Z - 0.001, r * 0.8, r * 0.8, k=12), None, dark, FLAT))
            else:
                prims.append((disc(xw, r, Z - 0.001, r * 0.45, r * 0.45, k=8), code, grey(0.5), FLAT))
        if moto:
            prims.append((np.array([[X - d + 0.1, 0.35, Z - 0.002], [X + d - 0.15, 0.35, Z - 0.002], [X + d - 0.1, 0.8, Z - 0.002],
                                    [X - d + 0.2, 0.95, Z - 0.002]]), code, frame, SPECULAR))
        else:
            t = 0.035
            ys = 0.95
            for (ax, ay, bx, by) in ((X - d, r, X, r), (X, r, X - 0.1, ys), (X - 0.1, ys, X + 0.4, ys), (X + 0.4, ys, X + d, r),
                                     (X - d, r, X - 0.1, ys), (X + 0.4, ys, X + 0.45, 1.05)):
                prims.append((np.array([[ax, ay - t, Z - 0.002], [bx, by - t, Z - 0.002], [bx, by + t, Z - 0.002],
                                        [ax, ay + t, Z - 0.002]]), code, frame, FLAT))
            prims.append((quad_z(X - 0.2, X, ys, ys + 0.05, Z - 0.002), code, dark, FLAT))
        zr = Z - 0.01
    else:
        wth = 0.05 if not moto else 0.13
        prims.append((quad_z(X - wth, X + wth, 0.0, 0.68, Z), code, dark, FLAT))
        if moto:
            prims.append((quad_z(X - 0.33, X + 0.33, 0.35, 0.95, Z - 0.05), code, frame, SPECULAR))
            prims.append((quad_z(X - 0.1, X + 0.1, 0.7, 0.8, Z - 0.06), code, hsv(0, 0.9, 0.8), FLAT))
            prims.append((quad_z(X - 0.42, X + 0.42, 1.0, 1.06, Z + 1.2), code, dark, FLAT))
        else:
            prims.append((quad_z(X - 0.03, X + 0.03, 0.6, 1.0, Z + 0.5), code, frame, FLAT))
            prims.append((quad_z(X - 0.3, X + 0.3, 1.0, 1.04, Z + 1.0), code, dark, FLAT))
        zr = Z + 0.3
    if rider:
        prims = prims + person(sc, rng, X, zr, code=RIDER, seated=True, Y0=0.35 if not moto else 0.4)
    return Obj(Z, prims)


def tree(sc: Scene, rng, X: float, Z: float) -> Obj:
    paints = sc.style.paints
    u = rng.uniform
    col = sc.pal["veg"]
    th = u(2.0, 3.5)
    trunk = hsv(0.08, paints.trunk_sat, draw(rng, paints.trunk_val))
    prims = [(quad_z(X - 0.14, X + 0.14, 0.0, th + 0.5, Z), VEG, trunk, FLAT)]
    R = u(1.6, 3.2)
    for _ in range(int(rng.integers(4, 8))):
        dx, dy = rng.normal(0, R * 0.45), rng.normal(0, R * 0.35)
        r = R * u(0.45, 0.75)
        shade = paints.leaf_shade.draw(rng)
        prims.append((disc(X + dx, th + R + dy, Z - 0.01, r, r * u(0.8, 1.0), k=12), VEG, col * shade, GRAIN))
    return Obj(Z, prims)


def lamp(sc: Scene, rng, X: float, Z: float, side: int) -> Obj:
    c = sc.pal["pole"]
    H = rng.uniform(6.5, 9.0)
    arm = rng.uniform(1.0, 2.5)
    return Obj(Z, [(quad_z(X - 0.09, X + 0.09, 0, H, Z), POLE, c, FLAT),
                   (quad_z(min(X, X - side * arm), max(X, X - side * arm), H - 0.12, H, Z), POLE, c, FLAT),
                   (quad_z(X - side * arm - 0.3, X - side * arm + 0.3, H - 0.3, H - 0.05, Z - 0.01), POLE, c * 0.8, FLAT)])


def traffic_light(sc: Scene, rng, X: float, Z: float, side: int, overhead: bool) -> Obj:
    pc = sc.pal["pole"]
    house = sc.style.paints.light_housing(rng)
    lit = int(rng.integers(0, 3))
    lamp_cols = [hsv(0.0, 0.9, 1.0), hsv(0.1, 0.9, 1.0), hsv(0.38, 0.8, 0.95)]
    prims = []
    heads = []
    if overhead:
        H = rng.uniform(5.2, 6.2)
        arm = rng.uniform(3.5, 6.0)
        prims.append((quad_z(X - 0.12, X + 0.12, 0, H + 0.3, Z), POLE, pc, FLAT))
        prims.append((quad_z(min(X, X - side * arm), max(X, X - side * arm), H + 0.15, H + 0.3, Z), POLE, pc, FLAT))
        for k in range(1, int(rng.integers(2, 4))):
            heads.append((X - side * arm * k / 3.0, H - 1.0))
    else:
        H = rng.uniform(2.8, 3.6)
        prims.append((quad_z(X - 0.07, X + 0.07, 0, H + 0.1, Z), POLE, pc, FLAT))
        heads.append((X, H - 0.95))
    for (hx, hy) in heads:
        prims.append((quad_z(hx - 0.17, hx + 0.17, hy, hy + 0.95, Z - 0.05), LIGHT, house, FLAT))
        for i in range(3):
            yc = hy + 0.8 - i * 0.3
            col = lamp_cols[i] if i == lit else lamp_cols[i] * 0.25
            prims.append((disc(hx, yc, Z - 0.06, 0.09, 0.09, k=8), LIGHT, col, FLAT))
    return Obj(Z, prims)


def sign(sc: Scene, rng, X: float, Z: float) -> Obj:
    pc = sc.pal["pole"]
    H = rng.uniform(2.2, 3.0)
    s = rng.uniform(0.55, 0.8)
    prims = [(quad_z(X - 0.04, X + 0.04, 0, H, Z), POLE, pc, FLAT)]
    shape = int(rng.integers(0, 4))
    back = rng.random() < 0.2
    col, inner = sc.style.paints.sign_plate(rng)
    if back:
        col, inner = grey(0.5), None
    cy = H + s / 2
    if shape == 0:
        outer = disc(X, cy, Z - 0.02, s / 2, s / 2, k=12)
    elif shape == 1:
        outer = np.array([[X - s / 2, H, Z - 0.02], [X + s / 2, H, Z - 0.02], [X, H + s * 0.87, Z - 0.02]])
    elif shape == 2:
        outer = np.array([[X, H, Z - 0.02], [X + s / 2, cy, Z - 0.02], [X, H + s, Z - 0.02], [X - s / 2, cy, Z - 0.02]])
    else:
        outer = quad_z(X - s * 0.7, X + s * 0.7, H, H + s * 0.6, Z - 0.02)
    prims.append((outer, SIGN, col, FLAT))
    if inner is not None:
        c = outer.mean(0)
        prims.append((c + (outer - c) * 0.6 + np.array([0, 0, -0.01]), SIGN, inner, FLAT))
    return Obj(Z, prims)


def static(sc: Scene, rng, X: float, Z: float) -> Obj:
    """Unlabelled street furniture: a bin, a bollard or a bench."""
    q = rng.random()
    col = hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.6), rng.uniform(0.15, 0.6))
    if q < 0.4:      # bin
        pts = box(X - 0.3, X + 0.3, 0, 1.0, Z, Z + 0.6, sc.cam.pos)
    elif q < 0.7:    # bollard
        pts = box(X - 0.08, X + 0.08, 0, 0.9, Z, Z + 0.16, sc.cam.pos)
    else:            # bench / box
        pts = box(X - 0.25, X + 0.25, 0, 0.8, Z, Z + 1.6, sc.cam.pos)
    return Obj(Z, [(p, STATIC, col * sc.shade(n), FLAT) for p, n in pts])


# Things whose parts are thin bars or small shapes: what `thickened` widens.
THIN_CODES = (POLE, LIGHT, SIGN, PERSON, RIDER, MOTO, BIKE)
THICK_LIMIT = 0.5   # m: a part is not thickened beyond this (a sign plate stays a plate)
# Default widening (`phfa data synth --thicken`): at toytown's 256x128 a 0.18 m pole 10 m away
# is ~1 px wide, as in Cityscapes at 1024x512 it is ~4 px; x3 keeps thin classes learnable at
# output stride 8 (docs/notes/toytown-calibration.md). 1 = as drawn.
DEFAULT_THICKEN = 3.0


def thickened(obj: Obj, factor: float) -> Obj:
    """The object with each part of a thin thing widened ``factor`` times across its thin side.

    Objects made only of thin-class parts (poles, lights, signs, people, two-wheelers) are
    changed; anything else is returned as it is. Each part (a planar polygon) is scaled about its
    own centre along x if it is narrower than tall (a pole), along y otherwise (a lamp arm), to
    at most THICK_LIMIT. A calibration aid (`phfa data synth --thicken`): at toy resolutions a
    0.18 m pole is a pixel wide, as it is not in Cityscapes at 1024x512.
    """
    if factor == 1 or not all(code is None or code in THIN_CODES for _, code, _, _ in obj.prims):
        return obj
    prims = []
    for pts, code, col, flag in obj.prims:
        pts = np.array(pts, F)
        ex, ey = np.ptp(pts[:, 0]), np.ptp(pts[:, 1])
        ax, d = (0, ex) if ex <= ey else (1, ey)
        if 0 < d < THICK_LIMIT:
            c = (pts[:, ax].max() + pts[:, ax].min()) / 2
            pts[:, ax] = c + (pts[:, ax] - c) * min(factor, THICK_LIMIT / d)
        prims.append((pts, code, col, flag))
    return Obj(obj.z, prims, obj.inst)


def sample_objects(sc: Scene, rng: np.random.Generator) -> None:
    """Place the scene's things (Poisson counts from the style's TrafficRates), sorted far to near."""
    st = sc.style
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

    R = st.rates
    if sc.tram_x is not None:
        zt = u(12, 60)
        if free(sc.tram_x - 1.4, sc.tram_x + 1.4, zt, zt + 32):
            objs.append(big_vehicle(sc, rng, "tram", sc.tram_x, zt))
    for _ in range(rng.poisson(R.trucks)):
        X = float(rng.choice(lanes_x))
        Z = u(10, 80)
        if free(X - 1.3, X + 1.3, Z, Z + 12):
            objs.append(big_vehicle(sc, rng, "truck", X, Z))
    for _ in range(rng.poisson(R.buses)):
        X = float(rng.choice(lanes_x[-1:] + lanes_x[:1]))
        Z = u(10, 70)
        if free(X - 1.3, X + 1.3, Z, Z + 13):
            objs.append(big_vehicle(sc, rng, "bus", X, Z))
    for _ in range(rng.poisson(R.moving)):
        X = float(rng.choice(lanes_x)) + rng.normal(0, 0.2)
        Z = zmin + 2 + 120 * rng.random() ** 1.5
        if st.keeps_distance and abs(X - sc.cam.x0) < 1.8:  # keep a safe distance to the car ahead
            Z = max(Z, u(8, 14))
        if free(X - 1.0, X + 1.0, Z - 0.5, Z + 5.5):
            objs.append(vehicle(sc, rng, "car" if rng.random() < 0.85 else "van", X, Z, oncoming=X < mid))
    for side in (-1, 1):
        pw = sc.park[0 if side < 0 else 1]
        if pw == 0:
            continue
        n = rng.poisson(R.parked / 2 / 0.7)
        z = u(zmin + 1, 15)
        for _ in range(n):
            X = side * (rw / 2 - pw / 2) + rng.normal(0, 0.08)
            if free(X - 1.0, X + 1.0, z, z + 5.0):
                objs.append(vehicle(sc, rng, "car" if rng.random() < 0.85 else "van", X, z, oncoming=False))
            z += u(5.2, 9.0) + (u(5, 25) if rng.random() < 0.2 else 0.0)
    for _ in range(rng.poisson(R.riders)):
        moto = rng.random() < R.p_motorcycle
        side_view = rng.random() < 0.35
        X = (sc.lane0 + sc.lanes * lane_w - u(0.5, 1.3)) if not side_view else u(-rw / 2, rw / 2)
        Z = zmin + 2 + 45 * rng.random() ** 1.3
        if st.keeps_distance and abs(X - sc.cam.x0) < 1.8:  # not right in front of the camera
            Z = max(Z, u(9, 16))
        if free(X - 0.9, X + 0.9, Z - 0.3, Z + 1.9):
            objs.append(twowheeler(sc, rng, X, Z, moto, side_view, rider=True))
    for _ in range(rng.poisson(R.bikes)):
        side = -1 if rng.random() < 0.5 else 1
        X = side * (rw / 2 + u(0.4, 1.2))
        Z = u(zmin + 1, 40)
        if free(X - 0.9, X + 0.9, Z - 0.3, Z + 0.3):
            objs.append(twowheeler(sc, rng, X, Z, rng.random() < 0.15, True, rider=False))
    for _ in range(rng.poisson(R.persons)):
        side = -1 if rng.random() < 0.5 else 1
        crossing = rng.random() < 0.12
        X = u(-rw / 2, rw / 2) if crossing else side * (rw / 2 + u(0.5, sw - 0.3))
        Z = zmin + 1 + 55 * rng.random() ** 1.4
        if sc.cross and crossing:
            Z = sc.cross[0] - u(1, 4)
        if free(X - 0.3, X + 0.3, Z - 0.3, Z + 0.3):
            objs.append(Obj(Z, person(sc, rng, X, Z)))
            if rng.random() < 0.3:  # a companion
                X2, Z2 = X + u(0.5, 0.8) * (1 if rng.random() < 0.5 else -1), Z + u(-0.4, 0.4)
                if free(X2 - 0.3, X2 + 0.3, Z2 - 0.3, Z2 + 0.3):
                    objs.append(Obj(Z2, person(sc, rng, X2, Z2)))
    # street furniture along the sidewalks
    for side in (-1, 1):
        xc = side * (rw / 2 + 0.45)
        for _ in range(rng.poisson(R.trees / 2)):
            X = side * (rw / 2 + u(0.6, max(0.7, sw - 0.6)))
            Z = u(zmin + 3, 90)
            if free(X - 0.4, X + 0.4, Z - 0.4, Z + 0.4):
                objs.append(tree(sc, rng, X, Z))
        z = u(zmin + 2, 20)
        for _ in range(rng.poisson(R.lamps / 2)):
            if free(xc - 0.2, xc + 0.2, z - 0.2, z + 0.2):
                objs.append(lamp(sc, rng, xc, z, side))
            z += u(18, 35)
        for _ in range(rng.poisson(R.signs / 2)):
            Z = u(zmin + 2, 45)
            if free(xc - 0.4, xc + 0.4, Z - 0.2, Z + 0.2):
                objs.append(sign(sc, rng, xc, Z))
        for _ in range(rng.poisson(R.static / 2)):
            X = side * (rw / 2 + u(0.5, sw - 0.3))
            Z = u(zmin + 1, 40)
            if free(X - 0.4, X + 0.4, Z - 0.4, Z + 1.6):
                objs.append(static(sc, rng, X, Z))
    n_lights = rng.poisson(R.lights) + (1 if sc.cross and rng.random() < 0.7 else 0)
    for k in range(n_lights):
        side = 1 if (k % 2 == 0) else -1
        Z = (sc.cross[0] - u(0.5, 2.0)) if (sc.cross and k < 2) else u(zmin + 5, 60)
        X = side * (rw / 2 + 0.5)
        if free(X - 0.3, X + 0.3, Z - 0.3, Z + 0.3):
            overhead = st.p_overhead_lights > 0 and rng.random() < st.p_overhead_lights
            objs.append(traffic_light(sc, rng, X, Z, side, overhead=overhead))
    objs.sort(key=lambda o: -o.z)
    for i, o in enumerate(objs):
        o.inst = 1000 + i
    sc.objects = objs

