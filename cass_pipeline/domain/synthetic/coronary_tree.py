"""A patient's coronary tree on an ellipsoidal heart: centrelines, radii, lesions, confounders.

Vessels run on the epicardial surface, parametrised by polar angle theta (0 at the base, 180
at the apex) and azimuth phi (90 anterior, 0 left lateral, -90 posterior, 180 right).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cass_pipeline.domain.anatomy import class_of_percent
from cass_pipeline.domain.imaging.cpr import Frames, resample_polyline, rotation_minimising_frames
from cass_pipeline.domain.synthetic.config import SynthConfig


@dataclass(frozen=True)
class BranchPath:
    """How a branch runs: its parent and where it leaves it, the (theta, phi) it heads to."""

    parent: str | None
    start_fraction: float
    start: tuple[float, float] | None  # (theta, phi) for roots
    end: tuple[float, float]  # absolute, or relative to the start when `relative`
    radius: tuple[float, float]
    relative: bool = False


RIGHT_DOMINANT = {
    "LM": BranchPath(None, 0.0, (22, 118), (30, 96), (2.1, 2.0)),
    "LAD": BranchPath("LM", 1.0, None, (165, 92), (1.8, 0.8)),
    "D-1": BranchPath("LAD", 0.18, None, (40, -50), (1.1, 0.6), relative=True),
    "D-2": BranchPath("LAD", 0.36, None, (40, -45), (1.0, 0.6), relative=True),
    "D-3": BranchPath("LAD", 0.55, None, (35, -40), (0.9, 0.6), relative=True),
    "RI": BranchPath("LM", 1.0, None, (95, 68), (1.1, 0.6)),
    "LCX": BranchPath("LM", 1.0, None, (40, -35), (1.6, 0.8)),
    "OM-1": BranchPath("LCX", 0.25, None, (60, -8), (1.1, 0.6), relative=True),
    "OM-2": BranchPath("LCX", 0.5, None, (60, -8), (1.1, 0.6), relative=True),
    "OM-3": BranchPath("LCX", 0.75, None, (55, -8), (1.0, 0.6), relative=True),
    "RCA": BranchPath(None, 0.0, (24, 150), (42, 268), (1.9, 1.3)),
    "PDA-RCA": BranchPath("RCA", 1.0, None, (140, 270), (1.2, 0.6)),
    "PLV-RCA": BranchPath("RCA", 0.97, None, (62, 320), (1.2, 0.7)),
}
LEFT_DOMINANT = {
    **{k: v for k, v in RIGHT_DOMINANT.items() if k not in {"PDA-RCA", "PLV-RCA"}},
    "LCX": BranchPath("LM", 1.0, None, (42, -95), (1.7, 1.1)),
    "RCA": BranchPath(None, 0.0, (24, 150), (40, 215), (1.5, 0.8)),
    "PDA-LCX": BranchPath("LCX", 1.0, None, (140, -93), (1.2, 0.6)),
    "PLV-LCX": BranchPath("LCX", 0.85, None, (70, -60), (1.1, 0.6)),
}

#: Share of patients with the branch in the anatomy (always for the four main vessels).
ANATOMY_RATE = {
    "D-1": 0.95,
    "D-2": 0.6,
    "D-3": 0.15,
    "RI": 0.15,
    "OM-1": 0.5,
    "OM-2": 0.6,
    "OM-3": 0.2,
}
#: Share of present branches exported as an MPR series, after the paper's Table 1
#: (per 828 patients: LAD 822, D-1 729, D-2 356, D-3 68, LCX 639, OM-1 81, OM-2 281, OM-3 75,
#: RCA 91, PLV-RCA 609, PDA-RCA 71, PDA-LCX 17, PLV-LCX 15; LM and RI never).
EXPORT_RATE = {
    "LM": 0.0,
    "LAD": 0.99,
    "D-1": 0.93,
    "D-2": 0.72,
    "D-3": 0.55,
    "RI": 0.0,
    "LCX": 0.77,
    "OM-1": 0.2,
    "OM-2": 0.57,
    "OM-3": 0.45,
    "RCA": 0.11,
    "PDA-RCA": 0.1,
    "PLV-RCA": 0.87,
    "PDA-LCX": 0.14,
    "PLV-LCX": 0.12,
}
RIGHT_DOMINANCE_RATE = 0.85
HEALTHY_PATIENT_RATE = 0.3
#: Per-branch class probabilities in a patient with disease; with the healthy share this
#: gives about 72% / 21% / 7% of branches no / non-significant / significant stenosis.
DISEASED_BRANCH_CLASS_P = (0.6, 0.3, 0.1)
PLAQUE_TYPES = ("soft", "calcified", "mixed")


@dataclass(frozen=True)
class Lesion:
    """A focal eccentric lesion of known percent diameter stenosis."""

    stenosis_pct: float
    plaque: str
    position: float
    length_mm: float
    angle_deg: float
    eccentricity: float
    high_risk: bool


@dataclass
class Branch:
    """A branch centreline (dense, rotation-minimising frames), radii and findings."""

    name: str
    frames: Frames
    radius: tuple[float, float]
    exported: bool
    lesion: Lesion | None = None
    stent: tuple[float, float] | None = None
    bridge: tuple[float, float] | None = None

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(np.diff(self.frames.points, axis=0), axis=1).sum())

    @property
    def stenosis_pct(self) -> float:
        return self.lesion.stenosis_pct if self.lesion else 0.0

    @property
    def stenosis_class(self) -> str:
        return class_of_percent(self.stenosis_pct)

    def fraction_index(self, fraction: float) -> int:
        return round(fraction * (len(self.frames.points) - 1))


@dataclass(frozen=True)
class Heart:
    """Ellipsoidal left ventricle: centre (mm) and semi-axes (lateral, anterior, long)."""

    centre: np.ndarray
    axes: np.ndarray

    def surface(
        self, theta_deg: np.ndarray, phi_deg: np.ndarray, lift_mm: np.ndarray
    ) -> np.ndarray:
        """Points at (theta, phi) on the ellipsoid, lifted along the outward normal."""
        theta, phi = np.deg2rad(theta_deg), np.deg2rad(phi_deg)
        unit = np.stack(
            [np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], 1
        )
        on_surface = unit * self.axes
        normal = on_surface / self.axes**2
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        return self.centre + on_surface + normal * np.asarray(lift_mm)[:, None]


@dataclass
class PatientAnatomy:
    """Everything the volume renderer, the exporter and the report writer need."""

    heart: Heart
    dominance: str
    branches: dict[str, Branch]
    calcium_spots: list[tuple[np.ndarray, float]]
    veins: list[Branch]
    contrast_hu: float
    fat_mm: float
    agatston: float


def smooth_wiggle(rng: np.random.Generator, t: np.ndarray, amplitude: float) -> np.ndarray:
    """A smooth random offset: two sinusoids of random phase, zero at t = 0."""
    out = np.zeros_like(t)
    for _ in range(2):
        frequency, phase = rng.uniform(0.6, 2.2), rng.uniform(0, 2 * np.pi)
        out += (
            rng.uniform(0.3, 1.0)
            * amplitude
            * (np.sin(2 * np.pi * frequency * t + phase) - np.sin(phase))
        )
    return out


def build_anatomy(config: SynthConfig, rng: np.random.Generator) -> PatientAnatomy:
    """Draw one patient's heart, coronary tree, lesions and confounders."""
    level = config.level
    heart = Heart(centre=np.zeros(3), axes=np.array([38.0, 36.0, 50.0]) * rng.uniform(0.9, 1.1))
    dominance = "right" if rng.random() < RIGHT_DOMINANCE_RATE else "left"
    layout = RIGHT_DOMINANT if dominance == "right" else LEFT_DOMINANT
    scale = rng.uniform(0.9, 1.1)

    angles: dict[str, np.ndarray] = {}
    branches: dict[str, Branch] = {}
    for name, path in layout.items():
        if rng.random() >= ANATOMY_RATE.get(name, 1.0):
            continue
        if path.parent is not None and path.parent not in angles:
            continue
        if path.parent is None:
            start = np.array(path.start, dtype=float)
        else:
            parent = angles[path.parent]
            start = parent[min(len(parent) - 1, int(path.start_fraction * (len(parent) - 1)))]
        end = start + np.array(path.end) if path.relative else np.array(path.end, dtype=float)
        t = np.linspace(0, 1, 240)
        theta = start[0] + (end[0] - start[0]) * t + smooth_wiggle(rng, t, 2.5)
        phi = start[1] + (end[1] - start[1]) * t + smooth_wiggle(rng, t, 3.0)
        angles[name] = np.stack([theta, phi], axis=1)
        radius = (path.radius[0] * scale, path.radius[1] * scale)
        lift = np.linspace(radius[0], radius[1], len(t)) + 0.8
        surface = heart.surface(theta, phi, lift)
        frames = rotation_minimising_frames(resample_polyline(surface, config.cpr_pixel_mm))
        exported = bool(rng.random() < EXPORT_RATE.get(name, 0.0))
        branches[name] = Branch(name, frames, radius, exported)

    draw_lesions(branches, level, rng)
    stents_and_bridges(branches, config, rng)
    calcium = calcium_spots(branches, config, rng)
    veins = neighbouring_veins(branches, config, rng)
    agatston = sum(
        rng.uniform(20, 160)
        * (b.stenosis_pct / 50)
        * (1.0 if b.lesion.plaque == "calcified" else 0.5)
        for b in branches.values()
        if b.lesion and b.lesion.plaque != "soft"
    )
    return PatientAnatomy(
        heart,
        dominance,
        branches,
        calcium,
        veins,
        contrast_hu=rng.uniform(*config.site.contrast_hu),
        fat_mm=rng.uniform(6, 12),
        agatston=round(float(agatston), 0),
    )


def draw_lesions(branches: dict[str, Branch], level, rng: np.random.Generator) -> None:
    """Assign each branch a class, then a lesion of that class (none for no stenosis)."""
    healthy = rng.random() < HEALTHY_PATIENT_RATE
    for branch in branches.values():
        label = 0 if healthy else rng.choice(3, p=DISEASED_BRANCH_CLASS_P)
        if label == 0:
            continue
        if label == 1:
            pct = rng.integers(level.non_significant_pct[0], level.non_significant_pct[1] + 1)
        elif rng.random() < level.occlusion_rate:
            pct = 100
        else:
            pct = rng.integers(level.significant_pct[0], level.significant_pct[1] + 1)
        plaque = str(rng.choice(PLAQUE_TYPES, p=(0.3, 0.4, 0.3)))
        branch.lesion = Lesion(
            stenosis_pct=float(pct),
            plaque=plaque,
            position=float(rng.uniform(0.2, 0.75)),
            length_mm=float(rng.uniform(4, 12)),
            angle_deg=float(rng.uniform(0, 360)),
            eccentricity=float(rng.uniform(*level.eccentricity)),
            high_risk=bool(plaque != "calcified" and pct >= 40 and rng.random() < 0.2),
        )


def stents_and_bridges(branches: dict[str, Branch], config: SynthConfig, rng) -> None:
    """A patent stent on a lesion-free main vessel; a myocardial bridge on the mid LAD."""
    level, toggles = config.level, config.confounders
    if toggles.stents and rng.random() < level.stent_rate:
        candidates = [b for n, b in branches.items() if n in {"LAD", "LCX", "RCA"} and not b.lesion]
        if candidates:
            branch = candidates[rng.integers(len(candidates))]
            start = rng.uniform(0.1, 0.4)
            branch.stent = (start, start + rng.uniform(12, 22) / branch.length_mm)
    lad = branches.get("LAD")
    if toggles.myocardial_bridging and lad is not None and rng.random() < level.bridge_rate:
        start = rng.uniform(0.4, 0.55)
        lad.bridge = (start, start + rng.uniform(12, 25) / lad.length_mm)
        if lad.lesion and abs(lad.lesion.position - start) < 0.3:
            lad.lesion = None


def calcium_spots(branches, config: SynthConfig, rng) -> list[tuple[np.ndarray, float]]:
    """Calcified nodules in the fat beside vessels (not in the lumen): confound calcified plaque."""
    if (
        not config.confounders.calcium_near_vessels
        or rng.random() >= config.level.calcium_near_vessel_rate
    ):
        return []
    spots = []
    names = sorted(branches)
    for _ in range(rng.integers(1, 5)):
        branch = branches[names[rng.integers(len(names))]]
        i = branch.fraction_index(rng.uniform(0.1, 0.9))
        angle = rng.uniform(0, 2 * np.pi)
        direction = (
            np.cos(angle) * branch.frames.normals[i] + np.sin(angle) * branch.frames.binormals[i]
        )
        distance = branch.radius[0] + rng.uniform(2.0, 4.0)
        spots.append((branch.frames.points[i] + distance * direction, float(rng.uniform(0.7, 1.6))))
    return spots


def neighbouring_veins(branches, config: SynthConfig, rng) -> list[Branch]:
    """Cardiac veins running beside the LAD / LCX, less opacified than the arteries."""
    if (
        not config.confounders.neighbouring_vessels
        or rng.random() >= config.level.neighbour_vein_rate
    ):
        return []
    veins = []
    for name in ("LAD", "LCX"):
        artery = branches.get(name)
        if artery is None:
            continue
        angle = rng.uniform(0, 2 * np.pi)
        offset = np.cos(angle) * artery.frames.normals + np.sin(angle) * artery.frames.binormals
        points = artery.frames.points + offset * rng.uniform(4.0, 6.0)
        frames = rotation_minimising_frames(resample_polyline(points[::8], config.cpr_pixel_mm))
        veins.append(Branch(f"vein-{name}", frames, (2.0, 1.2), exported=False))
    return veins


def apparent_stenosis(lesion: Lesion | None, view_angle_deg: np.ndarray) -> np.ndarray:
    """Percent diameter narrowing seen along each view's cut through the lesion's worst point.

    The lumen is a circle of radius R(1 - k) cut by a chord on the plaque side, where the
    concentric part k = (1 - e) s and the eccentric part e s add up to the stenosis s.
    """
    angles = np.asarray(view_angle_deg, dtype=float)
    if lesion is None:
        return np.zeros_like(angles)
    s = lesion.stenosis_pct / 100
    concentric, eccentric = (1 - lesion.eccentricity) * s, lesion.eccentricity * s
    r_lumen = 1 - concentric
    cosine = np.abs(np.cos(np.deg2rad(angles - lesion.angle_deg)))
    with np.errstate(divide="ignore", invalid="ignore"):
        reach = np.where(cosine > 1e-9, (r_lumen - 2 * eccentric) / cosine, np.inf)
    width = r_lumen + np.clip(reach, -r_lumen, r_lumen)
    return np.round(100 * (1 - width / 2), 1)
