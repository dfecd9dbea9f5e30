"""Settings of the synthetic cohort, its presets and what `difficulty` changes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal, get_args

from cass_pipeline.domain.storage import settings_hash

#: Bumped whenever generator code changes what a patient's files contain.
GENERATOR_VERSION = 4
Difficulty = Literal["easy", "standard", "hard"]
ImageFormat = Literal["dicom", "png"]
#: How the workstation writes its views: grey with white text (the paper's), an RGB secondary
#: capture with the overlay in colour, grey in a window that saturates calcium and contrast,
#: or grey stored inverted (MONOCHROME1, DICOM only).
ExportStyle = Literal[
    "grey",
    "no_overlay",
    "grey_overlay",
    "colour_overlay",
    "saturated",
    "monochrome1",
    "ct_16bit",
    "multiframe",
    "jpeg",
    "jpeg2000",
    "jpegls",
]
#: The styles that only DICOM can carry (a photometric interpretation, CT values, frames, a
#: transfer syntax).
DICOM_STYLES = ("monochrome1", "ct_16bit", "multiframe", "jpeg", "jpeg2000", "jpegls")


@dataclass(frozen=True)
class DifficultySettings:
    """What a difficulty level sets: image noise, lesion ranges, eccentricity, confounder rates."""

    noise_hu: float
    blur_mm: float
    non_significant_pct: tuple[int, int]
    significant_pct: tuple[int, int]
    occlusion_rate: float
    eccentricity: tuple[float, float]
    calcium_near_vessel_rate: float
    stent_rate: float
    bridge_rate: float
    neighbour_vein_rate: float


#: easy: little noise, lesions far from the 50% boundary and mostly concentric, no confounders.
#: standard: CT-like noise, the whole CAD-RADS ranges, eccentric lesions, confounders sometimes.
#: hard: more noise and blur, strongly eccentric lesions, confounders often.
DIFFICULTIES: dict[str, DifficultySettings] = {
    "easy": DifficultySettings(12.0, 0.5, (25, 45), (60, 95), 0.0, (0.0, 0.4), 0.0, 0.0, 0.0, 0.0),
    "standard": DifficultySettings(
        25.0, 0.6, (10, 49), (50, 99), 0.1, (0.3, 0.8), 0.3, 0.1, 0.1, 0.3
    ),
    "hard": DifficultySettings(40.0, 0.8, (5, 49), (50, 99), 0.1, (0.7, 1.0), 0.6, 0.2, 0.2, 0.6),
}


@dataclass(frozen=True)
class Confounders:
    """Toggles for the structures that make real MPR images hard (rates come from difficulty)."""

    calcium_near_vessels: bool = True
    stents: bool = True
    myocardial_bridging: bool = True
    neighbouring_vessels: bool = True


#: How radiologists write reports (`reports.BODIES`); a site writes some of them, one per
#: patient in turn.
REPORT_STYLES = (
    "structured",
    "narrative",
    "scct",
    "label_table",
    "template",
    "dictation",
    "coded",
)


@dataclass(frozen=True)
class SiteProfile:
    """What differs from one hospital to the next besides its patients: the scanner (noise
    level and grain, reconstruction kernel), the contrast timing, and how its radiologists
    write reports. The default is the internal site, as every cohort before sites was."""

    name: str = "internal"
    #: Noise as a multiple of the difficulty's, and its grain (smoothing, in voxels).
    noise_scale: float = 1.0
    noise_grain: float = 0.7
    #: A softer kernel's blur added (in quadrature) to the difficulty's, in mm.
    kernel_blur_mm: float = 0.0
    #: Lumen attenuation range (HU): a bolus caught early or late is dimmer.
    contrast_hu: tuple[float, float] = (350.0, 480.0)
    report_styles: tuple[str, ...] = REPORT_STYLES


#: A second hospital for external validation: another vendor's softer kernel and coarser
#: noise, a later bolus, a colour overlay export, and reports written in three of the styles.
EXTERNAL_SITE = SiteProfile(
    name="external",
    noise_scale=1.3,
    noise_grain=1.1,
    kernel_blur_mm=0.35,
    contrast_hu=(280.0, 400.0),
    report_styles=("scct", "label_table", "dictation"),
)


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a cohort; the same config and seed give the same bytes."""

    n_patients: int = 100
    n_views: int = 8
    image_size: int = 128
    voxel_mm: float = 0.6
    view_width_mm: float = 24.0
    cpr_pixel_mm: float = 0.25
    difficulty: Difficulty = "standard"
    image_format: ImageFormat = "dicom"
    export_style: ExportStyle = "grey"
    confounders: Confounders = field(default_factory=Confounders)
    write_volumes: bool = False
    seed: int = 7
    site: SiteProfile = field(default_factory=SiteProfile)

    @property
    def level(self) -> DifficultySettings:
        return DIFFICULTIES[self.difficulty]

    def fingerprint(self) -> str:
        """Hash of the generator version and the settings that shape a patient's files."""
        shaping = asdict(replace(self, n_patients=0)) | {"generator_version": GENERATOR_VERSION}
        if self.site == SiteProfile():
            shaping.pop("site")  # cohorts generated before sites keep their fingerprint
        return settings_hash(shaping)


PRESETS: dict[str, SynthConfig] = {
    # Sized so that the whole pipeline (synthesis to evaluation) stays under 10 min on 2 cores:
    # easy lesions in a 12 mm wide view, learnable from scratch in a few CPU minutes.
    "demo": SynthConfig(difficulty="easy", view_width_mm=12.0),
    # The paper's cohort: 828 patients, 50 views per branch, 512 px.
    "paper": SynthConfig(
        n_patients=828,
        n_views=50,
        image_size=512,
        voxel_mm=0.4,
        view_width_mm=30.0,
        cpr_pixel_mm=0.2,
    ),
    # The model-quality benchmark (benchmarks/model_quality.py): standard difficulty, enough
    # patients for 60 in a 30% test split.
    "benchmark": SynthConfig(n_patients=210, difficulty="standard", view_width_mm=12.0),
    # The benchmark's external site (`external_validation`): other patients (seed 11) from
    # a second hospital, 120 px views of a wider field exported with a colour overlay.
    "benchmark-external": SynthConfig(
        n_patients=80,
        difficulty="standard",
        view_width_mm=13.0,
        image_size=120,
        export_style="colour_overlay",
        seed=11,
        site=EXTERNAL_SITE,
    ),
    # A few patients for tests.
    "tiny": SynthConfig(n_patients=4, n_views=4, image_size=64, voxel_mm=0.8),
}


#: The cohort generated when nothing else is asked for (`cass synth`, the raw_cohort asset).
DEFAULT_PRESET = "demo"


def preset(name: str, **overrides) -> SynthConfig:
    """A preset with some fields replaced (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    config = replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
    if config.difficulty not in DIFFICULTIES:
        raise ValueError(
            f"unknown difficulty {config.difficulty!r}; choose from {sorted(DIFFICULTIES)}"
        )
    if config.image_format not in ("dicom", "png"):
        raise ValueError(f"unknown image format {config.image_format!r}; choose dicom or png")
    if config.export_style not in get_args(ExportStyle):
        raise ValueError(
            f"unknown export style {config.export_style!r}; choose from {get_args(ExportStyle)}"
        )
    if config.export_style in DICOM_STYLES and config.image_format != "dicom":
        raise ValueError(f"export style {config.export_style} is written as DICOM only")
    unknown = set(config.site.report_styles) - set(REPORT_STYLES)
    if unknown or not config.site.report_styles:
        raise ValueError(f"report styles must be some of {REPORT_STYLES}, not {sorted(unknown)}")
    if config.n_patients < 1 or config.n_views < 1 or config.image_size < 16:
        raise ValueError("need at least one patient, one view and 16 px images")
    return config
