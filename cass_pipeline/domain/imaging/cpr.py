"""Rotational curved planar reformation (stretched CPR) of a vessel from a CT volume.

A branch centreline (points in world mm) is resampled at the output pixel spacing; a
rotation-minimising frame (double-reflection parallel transport, Wang et al. 2008) gives
each point two normals; view k of N cuts the volume with the surface swept by the normal
turned k * 180 / N degrees about the tangent, sampled trilinearly. Rows run along the vessel
(row 0 at the ostium), columns across it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Volume:
    """A scalar volume (HU) with its voxel-index-to-world-mm affine."""

    data: np.ndarray
    affine: np.ndarray

    @classmethod
    def from_spacing(
        cls,
        data: np.ndarray,
        spacing: tuple[float, float, float],
        origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> Volume:
        affine = np.diag([*spacing, 1.0]).astype(np.float64)
        affine[:3, 3] = origin
        return cls(data=data, affine=affine)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def world_to_voxel(self, points: np.ndarray) -> np.ndarray:
        """Continuous voxel indices of world points, shape (..., 3)."""
        inverse = np.linalg.inv(self.affine)
        return points @ inverse[:3, :3].T + inverse[:3, 3]


@dataclass(frozen=True)
class Frames:
    """Centreline points with unit tangents and two unit normals (rotation-minimising)."""

    points: np.ndarray
    tangents: np.ndarray
    normals: np.ndarray
    binormals: np.ndarray


@dataclass(frozen=True)
class CprViews:
    """N views (float32, HU) with their angles and the frame they were cut with."""

    images: np.ndarray
    angles_deg: np.ndarray
    frames: Frames
    pixel_mm: float


def resample_polyline(points: np.ndarray, step_mm: float) -> np.ndarray:
    """Points along the polyline at a constant arc-length step (ends included)."""
    points = np.asarray(points, dtype=np.float64)
    keep = np.r_[True, np.linalg.norm(np.diff(points, axis=0), axis=1) > 1e-9]
    points = points[keep]
    if len(points) < 2:
        raise ValueError("a centreline needs at least two distinct points")
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))]
    samples = np.linspace(0.0, arc[-1], max(2, round(arc[-1] / step_mm) + 1))
    return np.stack([np.interp(samples, arc, points[:, i]) for i in range(3)], axis=1)


def rotation_minimising_frames(points: np.ndarray) -> Frames:
    """Double-reflection parallel transport along densely sampled points."""
    points = np.asarray(points, dtype=np.float64)
    tangents = np.gradient(points, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    first = tangents[0]
    helper = np.eye(3)[np.argmin(np.abs(first))]
    normal = np.cross(first, helper)
    normals = np.empty_like(points)
    normals[0] = normal / np.linalg.norm(normal)
    for i in range(len(points) - 1):
        v1 = points[i + 1] - points[i]
        c1 = v1 @ v1
        r_left = normals[i] - (2.0 / c1) * (v1 @ normals[i]) * v1
        t_left = tangents[i] - (2.0 / c1) * (v1 @ tangents[i]) * v1
        v2 = tangents[i + 1] - t_left
        c2 = v2 @ v2
        r_next = r_left - (2.0 / c2) * (v2 @ r_left) * v2 if c2 > 1e-12 else r_left
        r_next -= (r_next @ tangents[i + 1]) * tangents[i + 1]
        normals[i + 1] = r_next / np.linalg.norm(r_next)
    binormals = np.cross(tangents, normals)
    return Frames(points, tangents, normals, binormals)


def view_angles_deg(n_views: int) -> np.ndarray:
    """View k of N is turned k * 180 / N degrees about the tangent."""
    return np.arange(n_views) * 180.0 / n_views


def curved_mpr_views(
    volume: Volume,
    centreline_mm: np.ndarray,
    n_views: int,
    width_mm: float = 30.0,
    pixel_mm: float = 0.25,
    output_size: tuple[int, int] | None = None,
    fill_value: float = -1024.0,
) -> CprViews:
    """Rotational CPR views of one branch; `output_size` (rows, cols) resizes each view."""
    frames = rotation_minimising_frames(resample_polyline(centreline_mm, pixel_mm))
    n_cols = max(3, round(width_mm / pixel_mm) | 1)
    offsets = (np.arange(n_cols) - n_cols // 2) * pixel_mm
    angles = view_angles_deg(n_views)
    theta = np.deg2rad(angles)[:, None, None]
    directions = np.cos(theta) * frames.normals[None] + np.sin(theta) * frames.binormals[None]
    world = frames.points[None, :, None, :] + offsets[None, None, :, None] * directions[:, :, None]
    voxel = volume.world_to_voxel(world)
    sampled = ndimage.map_coordinates(
        volume.data, np.moveaxis(voxel, -1, 0), order=1, mode="constant", cval=fill_value
    ).astype(np.float32)
    if output_size is not None:
        sampled = np.stack([resize_view(view, output_size) for view in sampled])
    return CprViews(images=sampled, angles_deg=angles, frames=frames, pixel_mm=pixel_mm)


def resize_view(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (rows, cols): area averaging when shrinking, bilinear when enlarging."""
    rows, cols = size
    shrinking = rows * cols < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (cols, rows), interpolation=interpolation)
