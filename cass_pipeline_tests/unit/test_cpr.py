"""Curved planar reformation on analytic phantoms with known geometry."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from cass_pipeline.domain.imaging.cpr import (
    Volume,
    curved_mpr_views,
    resample_polyline,
    rotation_minimising_frames,
)

LUMEN, BACKGROUND = 400.0, -100.0
SPACING = 0.4


def tube_phantom(path_mm: np.ndarray, radius: float, shape, plaque=None) -> Volume:
    """Tube of `radius` around a dense path, edges partial-volumed over one voxel.

    `plaque` = (direction u, stenosis s, z range): inside the range, the lumen is cut off where
    (x - centre) . u > radius * (1 - 2 s), a D-shaped eccentric narrowing of s in diameter.
    """
    grid = np.stack(np.indices(shape), axis=-1).reshape(-1, 3) * SPACING
    distance, nearest = cKDTree(path_mm).query(grid)
    inside = np.clip((radius - distance) / SPACING + 0.5, 0, 1)
    if plaque is not None:
        direction, stenosis, (z0, z1) = plaque
        along = (grid - path_mm[nearest]) @ direction
        cut = np.clip((radius * (1 - 2 * stenosis) - along) / SPACING + 0.5, 0, 1)
        in_lesion = (grid[:, 2] >= z0) & (grid[:, 2] <= z1)
        inside = np.where(in_lesion, inside * cut, inside)
    data = BACKGROUND + (LUMEN - BACKGROUND) * inside
    return Volume.from_spacing(data.reshape(shape).astype(np.float32), (SPACING,) * 3)


def band_widths_mm(views: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Lumen width per row of every view: the lumen fraction of each pixel, summed."""
    fraction = np.clip((views - BACKGROUND) / (LUMEN - BACKGROUND), 0, 1)
    return fraction.sum(axis=-1) * pixel_mm


def straight_path(x=10.0, y=10.0, z0=2.0, z1=38.0):
    return np.stack([np.full(200, x), np.full(200, y), np.linspace(z0, z1, 200)], axis=1)


def helix_path(radius=8.0, pitch=3.0, turns=1.5):
    t = np.linspace(0, 2 * np.pi * turns, 4000)
    return np.stack([14 + radius * np.cos(t), 14 + radius * np.sin(t), 4 + pitch * t], axis=1)


def test_straight_tube_gives_the_right_width_in_every_view():
    path = straight_path()
    volume = tube_phantom(path, radius=1.5, shape=(50, 50, 100))
    cpr = curved_mpr_views(volume, path, n_views=12, width_mm=8.0, pixel_mm=0.2)
    widths = band_widths_mm(cpr.images, cpr.pixel_mm)[:, 10:-10]
    assert cpr.images.shape[0] == 12
    np.testing.assert_allclose(widths, 3.0, atol=0.2)
    np.testing.assert_allclose(cpr.angles_deg, np.arange(12) * 15.0)


def test_helical_tube_keeps_its_width_and_frames_do_not_twist():
    path = helix_path()
    volume = tube_phantom(path, radius=1.2, shape=(70, 70, 85))
    cpr = curved_mpr_views(volume, path, n_views=6, width_mm=6.0, pixel_mm=0.2)
    widths = band_widths_mm(cpr.images, cpr.pixel_mm)[:, 5:-5]
    np.testing.assert_allclose(widths, 2.4, atol=0.25)

    frames = cpr.frames
    np.testing.assert_allclose(np.einsum("ij,ij->i", frames.tangents, frames.normals), 0, atol=1e-9)
    twist_per_step = np.einsum("ij,ij->i", frames.normals[1:], frames.binormals[:-1])
    assert np.abs(twist_per_step).max() < 1e-3
    # A Frenet frame turns by the torsion at every step; the test would see it.
    torsion_step = 3.0 / (8.0**2 + 3.0**2) * 0.2
    assert torsion_step > 10 * np.abs(twist_per_step).max()


@pytest.mark.parametrize("stenosis", [0.3, 0.6])
def test_eccentric_narrowing_shows_only_in_views_that_cut_through_it(stenosis):
    path = straight_path()
    radius = 2.0
    u = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    volume = tube_phantom(path, radius, (50, 50, 100), plaque=(u, stenosis, (18.0, 24.0)))
    cpr = curved_mpr_views(volume, path, n_views=18, width_mm=10.0, pixel_mm=0.2)

    frames = cpr.frames
    lesion_rows = np.flatnonzero((frames.points[:, 2] > 19.5) & (frames.points[:, 2] < 22.5))
    normal_rows = np.flatnonzero((frames.points[:, 2] > 6) & (frames.points[:, 2] < 12))
    widths = band_widths_mm(cpr.images, cpr.pixel_mm)
    theta = np.deg2rad(cpr.angles_deg)
    row = lesion_rows[0]
    cosines = np.abs(
        np.cos(theta) * (frames.normals[row] @ u) + np.sin(theta) * (frames.binormals[row] @ u)
    )

    measured = widths[:, lesion_rows].mean(axis=1)
    # Width along the cut: from -R to min(R, R(1-2s)/|cos|) on the plaque side.
    with np.errstate(divide="ignore"):
        bound = radius * (1 - 2 * stenosis) / cosines
    expected = np.clip(radius + np.minimum(radius, bound), 0, None)
    np.testing.assert_allclose(measured, expected, atol=cpr.pixel_mm)

    through = cosines > 0.99
    assert through.any()
    np.testing.assert_allclose(measured[through], 2 * radius * (1 - stenosis), atol=cpr.pixel_mm)
    np.testing.assert_allclose(widths[:, normal_rows].mean(axis=1), 2 * radius, atol=0.15)
    if stenosis < 0.5:
        missed = cosines < 1 - 2 * stenosis
        np.testing.assert_allclose(measured[missed], 2 * radius, atol=cpr.pixel_mm)


def test_output_size_and_resampling():
    path = straight_path()
    volume = tube_phantom(path, radius=1.5, shape=(50, 50, 100))
    cpr = curved_mpr_views(volume, path, 4, width_mm=8, pixel_mm=0.2, output_size=(64, 32))
    assert cpr.images.shape == (4, 64, 32)
    assert cpr.images.dtype == np.float32
    dense = resample_polyline(np.array([[0, 0, 0], [0, 0, 10.0]]), 0.5)
    assert len(dense) == 21 and np.allclose(np.diff(dense[:, 2]), 0.5)
    with pytest.raises(ValueError):
        rotation_minimising_frames(resample_polyline(np.zeros((3, 3)), 0.5))
