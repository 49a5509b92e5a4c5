"""Ray casting of the static scene: sky, skyline, rows of blocks (facades, end faces, roofs), ground."""
from __future__ import annotations

import numpy as np

from .ids import (BUILDING, FENCE, LANE, PARKING, RAIL, ROAD, SIDEWALK, SKY, TERRAIN, UNLABELED, VEG,
                  WALL)
from .precision import F
from .street import Row, Scene
from .styles import FACADE_BRICK, FACADE_CONCRETE, FACADE_GLASS, FENCE_CHAIN_LINK, WALL_BLOCKS
from .textures import grain, grey, hash01, tex

# faces of a block hit by a ray
FRONT, END, ROOF = 0, 1, 2


class Frame:
    """What is drawn so far: colour, class code, depth, structure depth, instance id per pixel.

    Colour and depths are float64 (precision.F), for results that do not depend on the CPU."""

    def __init__(self, W: int, H: int):
        self.img = np.zeros((H, W, 3), F)
        self.code = np.full((H, W), UNLABELED, np.uint8)
        self.z = np.full((H, W), np.inf, F)    # depth of what is visible
        self.zs = np.full((H, W), np.inf, F)   # depth of structures (not ground): objects occlude ground
        self.inst = np.zeros((H, W), np.uint16)


def put(fr: Frame, sel: np.ndarray, t: np.ndarray, code, col: np.ndarray, structure: bool = True) -> None:
    fr.code[sel] = code
    fr.img[sel] = col
    fr.z[sel] = t
    if structure:
        fr.zs[sel] = t


def segment_lookup(row: Row, Z: np.ndarray) -> np.ndarray:
    i = np.searchsorted(row.z0, Z, side="right") - 1
    return np.clip(i, 0, len(row.z0) - 1)


def row_height(row: Row, i: np.ndarray, along: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Height of segments i at `along`: its height plus, for ragged tops (hn > 0), texture noise."""
    hgt = row.h[i]
    if row.hn.any():
        hn = row.hn[i]
        rag = hn != 0   # the noise is looked up only where it counts
        hgt[rag] += hn[rag] * tex(bank, 0, np.zeros(int(rag.sum())), along[rag] * 1.3)
    return hgt


def facade_color(sc: Scene, row: Row, i, s, Y, face: int, bank) -> np.ndarray:
    """Colour of row segments i at (s along the face, height Y); NaN where a fence is see-through."""
    fs = sc.style.facade
    code = row.code[i]
    base = row.col[i].copy()
    n = len(i)
    if n == 0:
        return base
    if face == ROOF:
        roof = base * 0.55 + 0.12
        if fs.textured_roofs:
            roof = roof * (1 + 0.08 * tex(bank, 2, s * 3, Y * 3))[:, None]
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
        cell = hash01(np.floor(Y / fh), np.floor(s / sp), 7)
        wcol = row.wcol[i] * (0.7 + 0.6 * cell)[:, None]
        if fs.brick_mortar:
            brick = kind == FACADE_BRICK
            mortar = brick & ((((Y / 0.25) % 1.0) < 0.18) | ((((s / 0.5) + 0.5 * np.floor(Y / 0.25)) % 1.0) < 0.08))
            out = np.where(mortar[:, None], out * 1.25 + 0.08, out)
        if fs.window_frames:
            frame = (((fy > win[:, 2] - 0.05) & (fy < win[:, 3] + 0.05) & (fx > win[:, 4] - 0.05) & (fx < win[:, 5] + 0.05))
                     & ~inwin & (Y < hgt - 0.7) & (Y > np.maximum(gf, 1.0)) & bmask)
            out = np.where(frame[:, None], out * 0.5 + 0.42, out)
        if fs.cornices:
            cornice = bmask & ((Y / fh) % 1.0 < 0.05)
            out = np.where(cornice[:, None], out * 0.85, out)
        if fs.grain:
            out = out * (1 + fs.grain * tex(bank, 1, s * 2.0, Y * 2.0))[:, None]
        if fs.concrete_seams:
            concrete = kind == FACADE_CONCRETE
            seams = concrete & (((Y / fh) % 1.0 < 0.04) | ((s / 4.0) % 1.0 < 0.02))
            out = np.where(seams[:, None], out * 0.7, out)
        if fs.glass_reflections:
            refl = (kind == FACADE_GLASS)
            wcol = np.where(refl[:, None], wcol * (0.8 + 0.5 * np.clip(0.5 + 0.4 * tex(bank, 0, s * 0.5, Y * 0.3), 0, 1))[:, None], wcol)
        if fs.lit_upper_windows:
            wcol = wcol * (1 + 0.4 * hash01(np.floor(s / sp), np.floor(Y / fh), 11) * (fy > (win[:, 2] + win[:, 3]) / 2))[:, None]
        out = np.where(inwin[:, None], wcol, out)
        if fs.shop_fronts:
            shop = bmask & (gf > 0) & (Y < gf) & (Y > 0.3) & ((s % 6.0) > 0.6)
            shopcol = row.wcol[i] * 0.7 + 0.05 * hash01(np.floor(s / 6.0), np.zeros_like(s), 3)[:, None]
            out = np.where(shop[:, None], shopcol, out)
    vmask = code == VEG
    if vmask.any():
        tv = tex(bank, 2, s * 3.0, Y * 3.0) + 0.6 * tex(bank, 3, s * 8.0, Y * 8.0)
        out = np.where(vmask[:, None], base * (1 + fs.veg_grain * tv)[:, None], out)
    wmask = code == WALL
    if wmask.any() and fs.wall_grain:
        tv = tex(bank, 1, s * 2.0, Y * 2.0)
        kw = row.kind[i]
        blocks = wmask & (kw == WALL_BLOCKS) & ((((Y / 0.4) % 1.0) < 0.08) | (((s / 0.8 + 0.5 * np.floor(Y / 0.4)) % 1.0) < 0.05))
        out = np.where(wmask[:, None], base * (1 + fs.wall_grain * tv)[:, None], out)
        out = np.where(blocks[:, None], out * 0.75, out)
        top = wmask & (Y > row.h[i] - 0.12)
        out = np.where(top[:, None], out * 1.15, out)
    fmask = code == FENCE
    if fmask.any():
        kf = row.kind[i]
        if fs.fence_chain_link:  # chain link / planks
            bars = np.where(kf == FENCE_CHAIN_LINK, (((s + Y) / 0.12) % 1.0 < 0.3) | (((s - Y) / 0.12) % 1.0 < 0.3),
                            (s / 0.2) % 1.0 < 0.85)
        else:
            bars = (s / 0.14) % 1.0 < fs.fence_bar_duty
        rails = (np.abs(Y - 0.15) < 0.06) | (np.abs(Y - (row.h[i] - 0.08)) < 0.08) | ((s / 2.5) % 1.0 < 0.05)
        solid = fmask & (bars | rails)
        out = np.where(fmask[:, None], base, out)
        out = np.where((fmask & ~solid)[:, None], np.nan, out)  # see-through: keep what is behind
    if fs.flat_shading is not None:
        shade = fs.flat_shading[0] if face == FRONT else fs.flat_shading[1]
    elif face == FRONT:
        shade = sc.shade(np.array([-row.side, 0, 0]))
    else:
        shade = sc.shade(np.array([0, 0, -1.0]))
    return out * shade


def cast_row(fr: Frame, sc: Scene, row: Row, dirs, bank) -> None:
    """Front faces, near end faces and roofs of a row's blocks, where nearer than what is drawn."""
    cam = sc.cam
    Xp = row.side * row.x
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (Xp - cam.x0) / dirs[0]
    # Only rays that meet the row's plane ahead of the camera can hit its blocks: everything
    # below is computed for those pixels alone (px, flat indices in row-major order).
    px = np.flatnonzero(np.isfinite(t) & (t > 0.05))
    if px.size == 0:
        return
    t = t.ravel()[px]
    dX, dY, dZ = (d.ravel()[px] for d in dirs)
    Z = t * dZ
    Y = cam.h + t * dY
    i = segment_lookup(row, Z)
    inseg = (Z >= row.z0[0]) & (Z < row.z1[-1])
    hgt = row_height(row, i, Z, bank)
    solid = inseg & (row.code[i] != 0)
    front = solid & (Y >= 0) & (Y < hgt)
    hits = []
    hits.append((front, t, i, Z - row.z0[i], Y, FRONT))
    if row.depth > 0:
        # near end face of the next block (seen through a gap or over a lower block)
        j = np.clip(i + 1, 0, len(row.z0) - 1)
        ze = row.z0[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            te = ze / dZ
        Xe = cam.x0 + te * dX
        Ye = cam.h + te * dY
        depth_in = (Xe - Xp) * row.side
        he = row_height(row, j, ze + 0 * Ye, bank)
        endf = ~front & (j > i) & (row.code[j] != 0) & (te > t) & (depth_in >= 0) & (depth_in < row.depth) & (Ye >= 0) & (Ye < he)
        hits.append((endf, te, j, depth_in, Ye, END))
        # roofs (camera above the block)
        for k in (i, j):
            hk = row.h[k]
            down = dY < -1e-6
            with np.errstate(divide="ignore", invalid="ignore"):
                tr = np.where(down, (hk - cam.h) / np.where(down, dY, -1.0), -1.0)
            Xr = cam.x0 + tr * dX
            Zr = tr * dZ
            din = (Xr - Xp) * row.side
            roof = (~front & (row.code[k] != 0) & (hk < cam.h) & (tr > t - 1e-3) & (din >= 0) & (din < row.depth)
                    & (Zr >= row.z0[k]) & (Zr < row.z1[k]))
            hits.append((roof, tr, k, Xr, Zr, ROOF))
    for m, tt, idx, s, yy, face in hits:
        hit = m & (tt < fr.z.ravel()[px])
        if not hit.any():
            continue
        sel = np.zeros(fr.z.size, bool)
        sel[px[hit]] = True
        sel = sel.reshape(fr.z.shape)
        ii = idx[hit]
        col = facade_color(sc, row, ii, s[hit], yy[hit], face, bank)
        codes = row.code[ii].astype(np.uint8)
        tsel = tt[hit]
        if np.isnan(col).any():  # see-through fence: label only
            see = np.isnan(col[:, 0])
            cur = fr.img[sel]
            col = np.where(see[:, None], cur, col)
        put(fr, sel, tsel, codes, col)


def sky(fr: Frame, sc: Scene, dirs, bank) -> None:
    """Sky gradient (and clouds) everywhere; everything else is drawn over it."""
    dX, dY, dZ = dirs
    e = dY / np.sqrt(dX * dX + dZ * dZ)
    w = np.clip(e * 2.5, 0, 1)[..., None]
    col = sc.pal["sky1"] * (1 - w) + sc.pal["sky0"] * w
    clouds = sc.style.cloud_contrast
    if clouds:
        az = np.arctan2(dX, dZ)
        cl = tex(bank, 0, e * 60, az * 40) + 0.5 * tex(bank, 2, e * 150, az * 100)
        col = col + clouds * np.clip(cl, 0, None)[..., None]
    fr.img[:] = col
    fr.code[:] = SKY
    fr.z[:] = 1e4


def end_plane(fr: Frame, sc: Scene, dirs, bank) -> None:
    """The skyline closing the end of the street."""
    cam = sc.cam
    dX, dY, dZ = dirs
    with np.errstate(divide="ignore", invalid="ignore"):
        t = sc.end_z / dZ
    X = cam.x0 + t * dX
    Y = cam.h + t * dY
    k = np.clip(np.searchsorted(sc.end_x, X, side="right") - 1, 0, len(sc.end_code) - 1)
    hgt = sc.end_h[k] + np.where(sc.end_code[k] == VEG, 2.0 * tex(bank, 0, np.zeros_like(X), X * 0.8), 0)
    m = (t > 0) & (Y < hgt) & (Y >= 0) & (t < fr.z)
    if m.any():
        col = sc.end_col[k[m]] * 0.9
        put(fr, m, t[m], sc.end_code[k[m]].astype(np.uint8), col)


def ground(fr: Frame, sc: Scene, dirs, bank) -> None:
    """Road, lane markings, crossing, tram track, sidewalks, verges; surfaces and shadows per style."""
    cam, pal, gs = sc.cam, sc.pal, sc.style.ground
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
    lawn = np.array(sc.lawn)[rside]  # a grass strip behind a 0.3 m kerb stone
    code = np.where((ax >= rw2 + 0.3) & (ax < rw2 + 0.3 + lawn), np.uint8(TERRAIN), code)
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
        if k == sc.lanes // 2:   # centre line: dashed, or solid
            mark |= (np.abs(X - xb) < 0.09) & ((((Z / 9.0) % 1.0) < 0.5) | gs.solid_centre_line)
        else:
            mark |= (np.abs(X - xb) < 0.07) & (((Z / 9.0) % 1.0) < 0.4)
    if gs.edge_lines:
        mark |= (np.abs(X - sc.lane0) < 0.07) | (np.abs(X - (sc.lane0 + sc.lanes * lane_w)) < 0.07)
    mark &= (code == ROAD)
    code = np.where(mark, np.uint8(LANE), code)
    if sc.tram_x is not None:
        code = np.where((np.abs(X - sc.tram_x) < 0.9) & (code != SIDEWALK), np.uint8(RAIL), code)
    # colours
    col = np.empty(X.shape + (3,), F)
    for c, key in ((ROAD, "road"), (SIDEWALK, "sidewalk"), (TERRAIN, "terrain"), (LANE, "lane"), (PARKING, "parking"),
                   (VEG, "veg"), (RAIL, "road")):
        mm = code == c
        if mm.any():
            col[mm] = pal[key]
    road_like = (code == ROAD) | (code == PARKING) | (code == RAIL)
    if gs.asphalt:
        tx = grain(bank, gs.asphalt, X, Z)
        if gs.tyre_tracks:
            tracks = np.zeros(X.shape, bool)
            for k in range(sc.lanes):
                xc = sc.lane0 + (k + 0.5) * lane_w
                tracks |= np.abs(np.abs(X - xc) - 0.8) < 0.3
            tx = tx - gs.tyre_tracks * tracks
        if sc.cobbles:
            joints = (((X / 0.25) % 1.0) < 0.15) | ((((Z / 0.25) + 0.5 * np.floor(X / 0.25)) % 1.0) < 0.15)
            tx = tx - 0.12 * joints
        col *= (1 + np.where(road_like, tx, 0))[:, None]
    sw = code == SIDEWALK
    if gs.paving is not None:
        size, joint, dim = gs.paving
        slabs = sw & ((((X / size) % 1.0) < joint) | (((Z / size) % 1.0) < joint))
        col = np.where(slabs[:, None], col * dim, col)
    curb_w, curb_gain, curb_offset = gs.curb
    curb = sw & (ax < rw2 + curb_w)
    col = np.where(curb[:, None], col * curb_gain + curb_offset if curb_offset is not None else col * curb_gain, col)
    if gs.sidewalk_grain:
        col *= (1 + np.where(sw, grain(bank, gs.sidewalk_grain, X, Z), 0))[:, None]
    if gs.terrain_grain:
        ter = code == TERRAIN
        col *= (1 + np.where(ter, grain(bank, gs.terrain_grain, X, Z), 0))[:, None]
    if gs.rail_lines:
        rails = (code == RAIL) & (np.abs(np.abs(X - (sc.tram_x or 0)) - 0.72) < 0.05)
        col = np.where(rails[:, None], grey(0.6), col)
    if sc.style.cast_shadows:
        lit = sc.shade(np.array([0, 1.0, 0]))
        sh = ground_shadow(sc, X, Z) if sc.light["shadow"] < 1 else np.zeros(X.shape, bool)
        col = col * np.where(sh, sc.light["amb"] / lit * 1.1, 1.0)[:, None] * lit
    elif gs.lit:
        col = col * sc.shade(np.array([0, 1.0, 0]))
    # ground pixels: structure depth stays (objects are never occluded by the ground they stand on)
    fr.code[m] = code
    fr.img[m] = col
    fr.z[m] = t


def ground_shadow(sc: Scene, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
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
        i = segment_lookup(row, Zh)
        out |= (tt > 0) & (row.code[i] != 0) & (Yh < row.h[i]) & (Zh >= row.z0[0])
    return out
