"""Sampling of a Scene (street.py: rows of blocks, street, skyline, light) from a DomainStyle."""
from __future__ import annotations

import math

import numpy as np

from .camera import Camera
from .ids import BUILDING, FENCE, SIDEWALK, VEG, WALL
from .objects import sample_objects
from .precision import F
from .street import Row, Scene
from .styles import FENCE_PLANKS, WALL_PLAIN, DomainStyle, draw, pick


def make_row(rng, side, x, depth, z_from, z_to, gaps, pick_segment) -> Row:
    """Segments from z_from to z_to; `gaps` are forced empty Z ranges; pick_segment(rng) -> segment dict."""
    segs = []
    z = z_from
    while z < z_to:
        s = pick_segment(rng)
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
    g = lambda k, d: np.array([s.get(k, d) for s in segs], F)  # noqa: E731
    return Row(side=side, x=x, depth=depth, z0=g("z0", 0), z1=g("z1", 0), code=np.array([s["code"] for s in segs], np.int32),
               h=g("h", 0), hn=g("hn", 0), col=np.array([s.get("col", np.zeros(3)) for s in segs], F).reshape(n, 3),
               wcol=np.array([s.get("wcol", np.zeros(3)) for s in segs], F).reshape(n, 3),
               win=np.array([s.get("win", [3, 3, 0, 0, 0, 0]) for s in segs], F).reshape(n, 6),
               kind=np.array([s.get("kind", 0) for s in segs], np.int32), gf=g("gf", 0))


def sample_scene(st: DomainStyle, rng: np.random.Generator, W: int, H: int, bias: dict | None = None) -> Scene:
    """A street scene of domain style st (bias: the city's look, or None), objects included."""
    u = rng.uniform
    paints = st.paints
    # --- camera
    cs = st.camera
    hv = cs.high_view
    high = hv is not None and rng.random() < hv.p
    h = (hv.height if high else cs.height).draw(rng)
    pitch = math.radians((hv.pitch_deg if high else cs.pitch_deg).draw(rng))
    yaw = math.radians(cs.yaw_deg.draw(rng))
    hfov = math.radians(cs.hfov_deg.draw(rng))
    horizon_off = -cs.horizon_raise.draw(rng) * H if cs.horizon_raise is not None else 0.0
    f = (W / 2) / math.tan(hfov / 2)
    # --- street
    ss = st.street
    lanes = int(rng.choice(list(ss.lanes)))
    lane_w = ss.lane_width.draw(rng)
    sw = ss.sidewalk.draw(rng)
    park = tuple(float(u(2.0, 2.4)) if rng.random() < ss.p_parking_lane else 0.0 for _ in range(2))
    rw = lanes * lane_w + park[0] + park[1]
    lawn = (0.0, 0.0)
    if ss.lawn is not None:         # drawn only where a style has lawns: other domains keep their scenes
        lawn = tuple(float(min(ss.lawn[1].draw(rng), sw - 1.2)) if rng.random() < ss.lawn[0] else 0.0
                     for _ in range(2))
    lane0 = -rw / 2 + park[0]           # left edge of the driving lanes
    lanes_x = [lane0 + lane_w * (i + 0.5) for i in range(lanes)]
    if cs.anywhere_across:
        x0 = u(-(rw / 2 + sw * 0.6), rw / 2 + sw * 0.6)
    else:
        x0 = lanes_x[-1 - int(rng.integers(0, max(1, lanes // 2)))] + rng.normal(0, 0.2)
    cam = Camera(W, H, f, W / 2 + u(-1, 1), H / 2 + horizon_off, h, pitch, yaw, x0)

    cross = None
    if rng.random() < ss.p_crossing:
        c0 = u(12, 55)
        cross = (c0, c0 + u(8, 16))
    gaps = [cross] if cross else []
    far = 260.0
    pal = paints.palette(rng, bias)

    # --- rows of blocks
    bs = st.blocks
    hmin, hmax, skew, p_gap = bs.height_min, bs.height_max, bs.height_skew, bs.p_gap
    rows: list[Row] = []
    verge = []
    for side in (-1, 1):
        setback = 0.0 if rng.random() < ss.p_flush else ss.setback.draw(rng)
        vcode = pick(ss.verge, rng.random()) if setback > 0 else SIDEWALK
        verge.append(vcode)
        xf = rw / 2 + sw + setback

        def pick_building(r):
            if r.random() < p_gap:
                return {"code": 0, "len": r.uniform(4, 14)}
            col, wcol, win, kind, gf = paints.building(r, bias)
            hh = hmin + (hmax - hmin) * r.random() ** skew
            if bs.whole_floors:
                hh = win[0] * round(hh / win[0]) + 0.8
            return {"code": BUILDING, "len": bs.length.draw(r), "h": hh, "col": col, "wcol": wcol, "win": win,
                    "kind": kind, "gf": gf}

        rows.append(make_row(rng, side, xf, u(10, 16), -30.0, far, gaps, pick_building))

        # back row: taller buildings or a mass of trees
        def pick_back(r):
            if r.random() < bs.p_back_trees:
                return {"code": VEG, "len": r.uniform(10, 40), "h": r.uniform(6, 14), "hn": r.uniform(1.0, 3.0),
                        "col": pal["veg"] * r.uniform(0.8, 1.1)}
            col, wcol, win, kind, gf = paints.building(r, bias)
            return {"code": BUILDING, "len": r.uniform(15, 40), "h": r.uniform(hmin, hmax * 1.3), "col": col, "wcol": wcol,
                    "win": win, "kind": kind}

        rows.append(make_row(rng, side, xf + u(14, 26), 30.0, -30.0, far, [], pick_back))
        rows[-1].role = "back"

        # walls, fences and hedges at the outer edge of the sidewalk (only with a setback)
        if setback > 0.5:
            fx = rw / 2 + sw + 0.1
            p_none = 0.35

            def pick_fence(r):
                q = r.random()
                if q < p_none:
                    return {"code": 0, "len": r.uniform(5, 25)}
                if q < p_none + 0.25:
                    return {"code": WALL, "len": r.uniform(6, 30), "h": r.uniform(0.8, 2.6), "col": paints.wall(r),
                            "kind": int(r.integers(0, 2))}
                if q < p_none + 0.5:
                    return {"code": FENCE, "len": r.uniform(6, 30), "h": r.uniform(1.0, 2.2), "col": paints.fence(r),
                            "kind": int(r.integers(0, 2))}
                return {"code": VEG, "len": r.uniform(5, 20), "h": r.uniform(0.8, 1.8), "hn": 0.25,
                        "col": pal["veg"] * r.uniform(0.8, 1.15)}

            rows.append(make_row(rng, side, fx, 0.8, 1.0, far, gaps, pick_fence))
            rows[-1].role = "fence"
        elif rng.random() < 0.3:  # a low wall / fence in front of a building (railings, garden walls)
            fx = rw / 2 + sw - 0.1

            def pick_low(r):
                q = r.random()
                if q < 0.6:
                    return {"code": 0, "len": r.uniform(10, 40)}
                if q < 0.8:
                    return {"code": WALL, "len": r.uniform(4, 12), "h": r.uniform(0.6, 1.3), "col": paints.wall(r),
                            "kind": WALL_PLAIN}
                return {"code": FENCE, "len": r.uniform(4, 12), "h": r.uniform(0.8, 1.3), "col": paints.fence(r),
                        "kind": FENCE_PLANKS}

            rows.append(make_row(rng, side, fx, 0.3, 2.0, far, gaps, pick_low))
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
            hs.append(bs.skyline_height.draw(rng))
            cols.append(paints.building(rng, bias)[0])

    tram_x = None
    if rng.random() < ss.p_tram:
        tram_x = float(lanes_x[(lanes - 1) // 2] if rng.random() < 0.5 else lanes_x[lanes // 2])

    # --- light
    ls = st.light
    el = math.radians(draw(rng, ls.sun_elevation_deg))
    az = draw(rng, ls.sun_azimuth)
    lv = ls.overcast if (ls.overcast is not None and pal.get("weather") == "overcast") else ls.levels
    light = {"amb": draw(rng, lv.ambient), "dir": draw(rng, lv.direct), "shadow": draw(rng, lv.shadow)}
    sun = np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)], F)

    sc = Scene(style=st, cam=cam, rw=rw, sw=sw, verge=(verge[0], verge[1]), back_ground=ss.back_ground,
               rows=rows, end_z=end_z, end_x=np.array(xs, F), end_code=np.array(codes, np.int32),
               end_h=np.array(hs, F), end_col=np.array(cols, F), cross=cross, lanes=lanes,
               lane_w=lane_w, lane0=lane0, park=park, tram_x=tram_x, sun=sun, light=light, pal=pal,
               lawn=lawn)
    sample_objects(sc, rng)
    return sc
