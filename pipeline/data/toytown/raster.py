"""Rasterising things over the ray-cast scene, their shadows, the ego hood, and the camera post-processing."""
from __future__ import annotations

import math

import numpy as np

from .ids import EGO, GROUND, THINGS
from .objects import GLASS, GRAIN, SPECULAR, Obj
from .precision import F, to_uint8
from .raycast import Frame, cast_row, end_plane, ground, sky
from .street import Scene
from .styles import draw
from .textures import tex


def draw_object(fr: Frame, sc: Scene, obj: Obj, bank) -> None:
    """Fill the object's projected polygons (in order) where it is nearer than the structures."""
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
    cols = np.array([p[2] for p in prims], F)[k]
    flags = np.array([p[3] for p in prims], np.int64)[k]
    osh = sc.style.objects
    if osh is not None:
        rows_, cols_ = np.nonzero(m)
        top = np.array(ptop, F)[k]
        hgt = np.maximum(np.array(pbot, F)[k] - top, 1.0)
        rf = (rows_ - top) / hgt
        spec = 1 + osh.spec_amp * np.exp(-((rf - osh.spec_peak) / osh.spec_width) ** 2)
        if osh.spec_falloff:
            spec = spec - osh.spec_falloff * rf
        glass = osh.glass_base + osh.glass_gain * np.clip(0.6 - rf, 0, 1)
        if osh.glass_grain:
            glass = glass + osh.glass_grain * tex(bank, 1, rows_ * 0.7, cols_ * 0.7)
        grain = 1 + osh.grain * tex(bank, 2, (rows_ + by0) * 1.0, (cols_ + bx0) * 1.0)
        fac = np.where(flags == SPECULAR, spec, np.where(flags == GLASS, glass, np.where(flags == GRAIN, grain, 1.0)))
        cols = cols * fac[:, None]
    sub_code = fr.code[win]
    sub_img = fr.img[win]
    sub_code[m] = codes
    sub_img[m] = cols
    fr.z[win][m] = depth
    th = np.isin(codes, THINGS)
    sub_inst = fr.inst[win]
    vals = np.zeros(codes.shape, np.uint16)
    vals[th] = obj.inst
    sub_inst[m] = vals


def object_shadow(fr: Frame, sc: Scene, obj: Obj) -> None:
    """Contact shadow under a big enough object and, with cast shadows, the sun's shadow on the ground."""
    st = sc.style
    if st.contact_shadow is None:
        return
    allp = np.concatenate([p[0] for p in obj.prims])
    big = allp[:, 1].max() > 0.9
    x0, x1 = allp[:, 0].min(), allp[:, 0].max()
    z0, z1 = allp[:, 2].min(), allp[:, 2].max()
    if not big or (x1 - x0) < 0.3 and (z1 - z0) < 0.3:
        return
    hgt = allp[:, 1].max()
    foot = np.array([[x0, 0, z0], [x1, 0, z0], [x1, 0, z1], [x0, 0, z1]])
    polys = [(foot, st.contact_shadow)]
    if st.cast_shadows and sc.light["shadow"] < 1:
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
        mm = (mask > 0) & np.isin(fr.code, GROUND) & ~np.isfinite(fr.zs)
        fr.img[mm] *= k


def hood(fr: Frame, sc: Scene) -> None:
    """The ego car's hood along the bottom (void), dark paint with a dim mirror image of the scene."""
    H, W = fr.code.shape
    hh = sc.hood * H
    x = (np.arange(W) + 0.5 - W / 2) / (W / 2)
    top = H - hh * (1 - 0.55 * x ** 2)
    rows = np.arange(H)[:, None] + 0.5
    m = rows >= top[None, :]
    fr.code[m] = EGO
    fr.z[m] = 1.0
    yy, xx = np.nonzero(m)
    src = np.clip((2 * top[xx] - yy - 1).astype(np.int64), 0, H - 1)
    fr.img[yy, xx] = 0.06 + 0.25 * fr.img[src, xx]


def post_process(fr: Frame, sc: Scene, rng: np.random.Generator) -> np.ndarray:
    """Haze, exposure, contrast, saturation, white balance, sensor effects -> RGB uint8.

    All in float64, blur included, and quantised once by `to_uint8`: exp, power and the blur's
    sums may differ by an ulp between CPUs, which in float64 moves no grey level but a rare one
    (see precision.py).
    """
    import cv2

    img = fr.img
    H, W = fr.code.shape
    ps = sc.style.post
    sensor = ps.sensor
    z = np.minimum(fr.z, 1e4)[..., None]
    a = 1 - np.exp(-z / ps.haze_distance.draw(rng))
    img = img * (1 - a) + sc.pal["haze"] * a
    if sensor is not None:  # the city's colour cast, jittered, and exposure
        gain = np.array([g.draw(rng) for g in sensor.channel_gain], F)
        img = img * (sc.cast * gain) * sensor.exposure.draw(rng)
    if ps.contrast is not None:
        mean = img.mean()
        img = (img - mean) * ps.contrast.draw(rng) + mean
    g = img.mean(-1, keepdims=True)
    img = g + (img - g) * draw(rng, ps.saturation)
    if ps.white_balance is not None:
        img = img * np.array([draw(rng, c) for c in ps.white_balance], F)
    if sensor is not None:
        yy = (np.arange(H, dtype=F)[:, None] + 0.5 - H / 2) / (H / 2)
        xx = (np.arange(W, dtype=F)[None, :] + 0.5 - W / 2) / (W / 2)
        img = img * (1 - sensor.vignette.draw(rng) * (xx * xx * 0.6 + yy * yy * 0.4))[..., None]
        img = np.clip(img, 0, 1) ** sensor.gamma.draw(rng)
        img = cv2.GaussianBlur(img, (0, 0), sensor.blur_sigma.draw(rng))  # CV_64F in, CV_64F out
        sigma = sensor.noise_sigma.draw(rng)
        img = img + rng.normal(0, sigma, img.shape) * (0.5 + np.sqrt(np.clip(img, 0, 1)))
        img = img + rng.normal(0, sigma * sensor.row_noise, (H, 1, 1))
    return to_uint8(img)


def render(sc: Scene, bank: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (RGB uint8 H x W x 3, internal codes uint8 H x W, instance ids uint16 H x W)."""
    cam = sc.cam
    fr = Frame(cam.W, cam.H)
    dirs = cam.rays()
    sky(fr, sc, dirs, bank)
    end_plane(fr, sc, dirs, bank)
    blocks = [r for r in sc.rows if r.role != "fence"]
    thin = [r for r in sc.rows if r.role == "fence"]
    for row in blocks:
        cast_row(fr, sc, row, dirs, bank)
    ground(fr, sc, dirs, bank)
    for row in thin:
        cast_row(fr, sc, row, dirs, bank)
    for obj in sc.objects:
        object_shadow(fr, sc, obj)
        draw_object(fr, sc, obj, bank)
    if sc.hood is not None:
        hood(fr, sc)
    img = post_process(fr, sc, rng)
    return img, fr.code, fr.inst
