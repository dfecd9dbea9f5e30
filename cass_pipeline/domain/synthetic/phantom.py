"""Render a patient's anatomy into a CCTA-like volume in HU.

Lung, epicardial fat, myocardium, contrast-filled cavities and aortic root, sternum and ribs;
vessels with an eccentric lesion profile, stents, intramyocardial (bridged) segments,
calcified nodules; then blur (the scanner's point spread) and correlated noise.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from cass_pipeline.domain.imaging.cpr import Volume
from cass_pipeline.domain.synthetic.config import SynthConfig
from cass_pipeline.domain.synthetic.coronary_tree import Branch, PatientAnatomy

HU = {
    "lung": -850.0,
    "fat": -90.0,
    "myocardium": 110.0,
    "bone": 650.0,
    "marrow": 220.0,
    "soft_plaque": 40.0,
    "calcium": 850.0,
    "stent": 1400.0,
    "vein": 180.0,
}
SLEEVE_MM = 1.5


def render_volume(anatomy: PatientAnatomy, config: SynthConfig, rng: np.random.Generator) -> Volume:
    """The patient's volume, covering every vessel with room for the widest view."""
    vox = config.voxel_mm
    points = np.concatenate([b.frames.points for b in anatomy.branches.values()])
    margin = config.view_width_mm / 2 + 3
    low, high = points.min(0) - margin, points.max(0) + margin
    shape = tuple(int(np.ceil(n)) for n in (high - low) / vox)
    volume = Volume.from_spacing(np.empty(shape, np.float32), (vox,) * 3, tuple(low))
    data = background(anatomy, volume)

    vessels = [*anatomy.branches.values(), *anatomy.veins]
    for branch in vessels:
        stamp_vessel(data, volume, branch, anatomy, sleeve_only=True)
    for branch in vessels:
        stamp_vessel(data, volume, branch, anatomy, sleeve_only=False)
    for centre, radius in anatomy.calcium_spots:
        stamp_sphere(data, volume, centre, radius, HU["calcium"])

    site = config.site
    data = ndimage.gaussian_filter(
        data, math.hypot(config.level.blur_mm, site.kernel_blur_mm) / vox
    )
    grain = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), site.noise_grain)
    data += grain * (config.level.noise_hu * site.noise_scale / grain.std())
    return Volume(data=data.astype(np.float32), affine=volume.affine)


def world_grid(volume: Volume) -> list[np.ndarray]:
    """Open-mesh world coordinates (x, y, z) of the voxel centres."""
    spacing, origin = volume.spacing, volume.affine[:3, 3]
    return [
        (np.arange(n) * spacing[i] + origin[i]).reshape([-1 if j == i else 1 for j in range(3)])
        for i, n in enumerate(volume.data.shape)
    ]


def background(anatomy: PatientAnatomy, volume: Volume) -> np.ndarray:
    """Lung, fat, myocardium, blood pools, aortic root, sternum and ribs."""
    x, y, z = world_grid(volume)
    heart = anatomy.heart
    ax = heart.axes
    rho = np.sqrt((x / ax[0]) ** 2 + (y / ax[1]) ** 2 + (z / ax[2]) ** 2)
    depth = (rho - 1) * ax.mean()  # approximate signed distance to the epicardium (mm)
    data = np.full(volume.data.shape, HU["lung"], np.float32)
    data[depth < anatomy.fat_mm] = HU["fat"]

    rv_centre = np.array([-0.55, 0.35, 0.05]) * ax
    rv = np.sqrt(
        ((x - rv_centre[0]) / (0.75 * ax[0])) ** 2
        + ((y - rv_centre[1]) / (0.8 * ax[1])) ** 2
        + ((z - rv_centre[2]) / (0.85 * ax[2])) ** 2
    )
    data[rv < 1.0] = HU["myocardium"]
    data[rv < 0.9] = anatomy.contrast_hu * 0.75
    data[depth < 0] = HU["myocardium"]
    data[depth < -9.0] = anatomy.contrast_hu

    aorta_xy = np.array([-0.2, 0.15]) * ax[:2]
    aorta = np.hypot(x - aorta_xy[0], y - aorta_xy[1]) < 13.0
    data[np.broadcast_to(aorta & (z > 0.75 * ax[2]), data.shape)] = anatomy.contrast_hu

    chest_y = ax[1] + anatomy.fat_mm + 8.0
    sternum = (np.abs(x + 5) < 14) & (y > chest_y) & (y < chest_y + 12)
    data[np.broadcast_to(sternum, data.shape)] = HU["bone"]
    data[
        np.broadcast_to(
            sternum & (np.abs(x + 5) < 11) & (y > chest_y + 2.5) & (y < chest_y + 9.5), data.shape
        )
    ] = HU["marrow"]
    for rib_z in (-30.0, -5.0, 20.0, 45.0):
        rib = np.hypot(y - (chest_y + 4), z - rib_z) < 5.0
        data[np.broadcast_to(rib & (np.abs(x + 5) > 14), data.shape)] = HU["bone"]
    return data


def candidate_voxels(volume: Volume, points: np.ndarray, reach_mm: float) -> np.ndarray:
    """Flat indices of voxels within about `reach_mm` of any of `points`."""
    vox = volume.spacing[0]
    gaps = np.linalg.norm(np.diff(points, axis=0), axis=1) if len(points) > 1 else np.ones(1)
    step = max(1, int(vox / max(float(gaps.mean()), 1e-6)))
    centres = np.round(volume.world_to_voxel(points[::step])).astype(np.int64)
    m = int(np.ceil(reach_mm / vox))
    offsets = np.stack(np.meshgrid(*[np.arange(-m, m + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    offsets = offsets[np.linalg.norm(offsets, axis=1) <= m + 0.5]
    idx = (centres[:, None, :] + offsets[None]).reshape(-1, 3)
    shape = np.array(volume.data.shape)
    idx = idx[np.all((idx >= 0) & (idx < shape), axis=1)]
    mask = np.zeros(volume.data.size, bool)
    mask[np.ravel_multi_index(idx.T, volume.data.shape)] = True
    return np.flatnonzero(mask)


def stamp_vessel(data, volume: Volume, branch: Branch, anatomy: PatientAnatomy, sleeve_only: bool):
    """Blend one vessel in: first its fat (or myocardial) sleeve, then lumen and plaque."""
    frames = branch.frames
    n = len(frames.points)
    fraction = np.linspace(0, 1, n)
    radius = branch.radius[0] + (branch.radius[1] - branch.radius[0]) * fraction
    in_bridge = np.zeros(n, bool)
    if branch.bridge:
        in_bridge = (fraction >= branch.bridge[0]) & (fraction <= branch.bridge[1])
        radius = np.where(in_bridge, radius * 0.9, radius)

    reach = float(radius.max()) + SLEEVE_MM + (2.5 if branch.bridge else 0.0) + volume.spacing[0]
    flat = candidate_voxels(volume, frames.points, reach)
    world = (
        np.stack(np.unravel_index(flat, data.shape), 1) @ volume.affine[:3, :3].T
        + volume.affine[:3, 3]
    )
    _, nearest = cKDTree(frames.points).query(world)
    v = world - frames.points[nearest]
    tangent = frames.tangents[nearest]
    along_t = np.einsum("ij,ij->i", v, tangent)
    perp = v - along_t[:, None] * tangent
    beyond_end = ((nearest == 0) & (along_t < 0)) | ((nearest == n - 1) & (along_t > 0))
    rho = np.where(beyond_end, np.linalg.norm(v, axis=1), np.linalg.norm(perp, axis=1))
    r = radius[nearest]
    vox = volume.spacing[0]

    def inside(limit):
        return np.clip((limit - rho) / vox + 0.5, 0.0, 1.0)

    if sleeve_only:
        sleeve = inside(r + SLEEVE_MM + (2.5 if branch.bridge else 0.0))
        tissue = np.where(in_bridge[nearest], HU["myocardium"], HU["fat"])
        data.flat[flat] = data.flat[flat] * (1 - sleeve) + tissue * sleeve
        return

    vessel = inside(r)
    lumen = vessel.copy()
    plaque_hu = np.full(len(flat), HU["soft_plaque"], np.float32)
    lesion = branch.lesion
    if lesion is not None:
        arc = fraction[nearest] * branch.length_mm
        centre = lesion.position * branch.length_mm
        profile = np.where(
            np.abs(arc - centre) < lesion.length_mm / 2,
            0.5 * (1 + np.cos(2 * np.pi * (arc - centre) / lesion.length_mm)),
            0.0,
        )
        s = lesion.stenosis_pct / 100 * profile
        concentric, eccentric = (1 - lesion.eccentricity) * s, lesion.eccentricity * s
        alpha = np.deg2rad(lesion.angle_deg)
        u = np.cos(alpha) * frames.normals[nearest] + np.sin(alpha) * frames.binormals[nearest]
        along_u = np.einsum("ij,ij->i", perp, u)
        r_lumen = r * (1 - concentric)
        cut = np.clip((r_lumen - 2 * r * eccentric - along_u) / vox + 0.5, 0.0, 1.0)
        lumen = inside(r_lumen) * np.where(s > 1e-3, cut, 1.0)
        if lesion.plaque == "calcified":
            plaque_hu[:] = HU["calcium"]
        elif lesion.plaque == "mixed":
            plaque_hu = np.where(along_u > r * (1 - eccentric), HU["calcium"], HU["soft_plaque"])
    plaque = np.clip(vessel - lumen, 0.0, 1.0)

    is_vein = branch.name.startswith("vein")
    lumen_hu = HU["vein"] if is_vein else anatomy.contrast_hu * (1 - 0.15 * fraction[nearest])
    values = data.flat[flat] * (1 - vessel) + lumen_hu * lumen + plaque_hu * plaque
    if branch.stent:
        in_stent = (fraction[nearest] >= branch.stent[0]) & (fraction[nearest] <= branch.stent[1])
        angle = np.arctan2(
            np.einsum("ij,ij->i", perp, frames.binormals[nearest]),
            np.einsum("ij,ij->i", perp, frames.normals[nearest]),
        )
        mesh = np.abs(np.sin(4 * angle + 2 * np.pi * fraction[nearest] * branch.length_mm / 1.6))
        strut = in_stent & (np.abs(rho - r) < 0.25) & (mesh > 0.5)
        values = np.where(strut, HU["stent"], values)
    data.flat[flat] = values


def stamp_sphere(data, volume: Volume, centre: np.ndarray, radius: float, value: float) -> None:
    """A partial-volumed sphere of `value` HU."""
    flat = candidate_voxels(volume, centre[None], radius + 1)
    world = (
        np.stack(np.unravel_index(flat, data.shape), 1) @ volume.affine[:3, :3].T
        + volume.affine[:3, 3]
    )
    weight = np.clip(
        (radius - np.linalg.norm(world - centre, axis=1)) / volume.spacing[0] + 0.5, 0, 1
    )
    data.flat[flat] = data.flat[flat] * (1 - weight) + value * weight
