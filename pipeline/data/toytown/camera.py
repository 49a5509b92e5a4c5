"""Pinhole camera on the street: per-pixel rays and projection of world points."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .precision import F


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
        xc = ((np.arange(self.W, dtype=F) + 0.5 - self.cx) / self.f)[None, :]
        yc = ((np.arange(self.H, dtype=F) + 0.5 - self.cy) / self.f)[:, None]
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
        """World points (..., 3) -> pixel column, pixel row, camera depth."""
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
