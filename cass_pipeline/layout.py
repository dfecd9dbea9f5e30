"""Where every table and folder of the pipeline lives: the one map of `raw/` and `processed/`.

Pure module (no dagster, no mlflow): assets, the CLI, the training entry point, benchmarks
and tests all find a table here, and it travels as JSON to torchrun workers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

PARQUET = ".parquet"
#: Synthetic cohorts' ground truth, one table each (and the overlay masks), under
#: raw/ground_truth.
GROUND_TRUTH = "ground_truth"
GROUND_TRUTH_TABLES = ("patients", "branches", "views")
#: Each synthetic patient's overlay masks, `<case>.png` (`cohort.overlay_masks_path`).
OVERLAYS = f"{GROUND_TRUTH}/overlays"
MPR, REPORTS, VOLUMES, CENTRELINES = "mpr", "reports", "volumes", "centrelines"
REVIEWS = "reviews"
#: The folders of a raw export that CASS reads; files elsewhere are a wrong layout.
RAW_FOLDERS = (MPR, VOLUMES, CENTRELINES, REPORTS, REVIEWS)
IMAGES, STORE = "images", "store"
#: Under `images/`: the generations, and the link to the published one (`generations.py`).
GENERATIONS, CURRENT = "generations", "current"
#: What an image store of a CASS before generations left directly under `images/`, removed
#: once a generation is published in its place.
FLAT_IMAGE_STORE = (
    STORE,
    "examples",
    *(f"{name}{PARQUET}" for name in ("manifest", "rejects", "pixel_text")),
    "ingest.json",
)


def dicom_outbox(dicom_dir: Path) -> Path:
    """Each inbox patient's SR and key image until every destination has them."""
    return Path(dicom_dir) / "outbox"


def dicom_node_health(dicom_dir: Path) -> Path:
    """The DICOM node's heartbeat (JSON), rewritten every few seconds while it runs."""
    return Path(dicom_dir) / "node_health.json"


def dicom_rejects(dicom_dir: Path) -> Path:
    """What the DICOM node refused or quarantined, under its folder (the key holder's side)."""
    return Path(dicom_dir) / f"dicom_rejects{PARQUET}"


def ground_truth_table(raw: Path, name: str) -> Path:
    """A ground-truth table of a synthetic cohort written to `raw`."""
    return Path(raw) / GROUND_TRUTH / f"{name}{PARQUET}"


def store_name(patient: str) -> str:
    """The file of a patient's cleaned views in the image store."""
    return f"{patient}.npy"


def store_entry(patient: str) -> str:
    """A patient's image store relative to its generation (`DataLayout.images`), as the
    manifest names it."""
    return f"{STORE}/{store_name(patient)}"


@dataclass(frozen=True)
class RawLayout:
    """The folders of one raw export (or of a cohort being written): curved MPR images,
    reports, volumes with their centrelines."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def mpr(self) -> Path:
        return self.root / MPR

    @property
    def reports(self) -> Path:
        return self.root / REPORTS

    @property
    def volumes(self) -> Path:
        return self.root / VOLUMES

    @property
    def reviews(self) -> Path:
        """A reviewer's label overrides (`domain/reports/review.py`)."""
        return self.root / REVIEWS

    @property
    def centrelines(self) -> Path:
        return self.root / CENTRELINES

    def mpr_folder(self, patient: str) -> Path:
        return self.mpr / patient

    def report_file(self, patient: str) -> Path:
        return self.reports / f"{patient}.txt"

    def volume_file(self, patient: str) -> Path:
        return self.volumes / f"{patient}.nii.gz"

    def centreline_file(self, patient: str) -> Path:
        return self.centrelines / f"{patient}.json"


@dataclass(frozen=True)
class DataLayout:
    """Raw inputs and processed outputs of one pipeline, and every path derived from them."""

    raw: Path
    processed: Path
    #: The image generation read or written (`domain/generations.py`); None: the published.
    generation: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "raw", Path(self.raw))
        object.__setattr__(self, "processed", Path(self.processed))

    def as_json(self) -> dict[str, str | None]:
        return {
            "raw": str(self.raw),
            "processed": str(self.processed),
            "generation": self.generation,
        }

    @classmethod
    def from_json(cls, data: dict[str, str | None]) -> DataLayout:
        return cls(Path(data["raw"]), Path(data["processed"]), data.get("generation"))

    def at_generation(self, generation: str | None) -> DataLayout:
        """This layout reading (or writing) the image generation `generation`."""
        return replace(self, generation=generation)

    def ground_truth(self, name: str) -> Path:
        return ground_truth_table(self.raw, name)

    @property
    def raw_folders(self) -> RawLayout:
        """The folders of the raw export (`mpr/`, `reports/`, `volumes/`, `centrelines/`)."""
        return RawLayout(self.raw)

    # Images: generations of cleaned views in a per-patient store, their manifest and rejects.
    @property
    def image_generations(self) -> Path:
        """The folder of the image generations and of the link to the published one."""
        return self.processed / IMAGES

    @property
    def images(self) -> Path:
        """The image generation this layout reads: its own, else the published one."""
        if self.generation is None:
            return self.image_generations / CURRENT
        return self.image_generations / GENERATIONS / self.generation

    @property
    def image_store(self) -> Path:
        return self.images / STORE

    @property
    def manifest(self) -> Path:
        return self.images / f"manifest{PARQUET}"

    @property
    def image_rejects(self) -> Path:
        return self.images / f"rejects{PARQUET}"

    @property
    def image_examples(self) -> Path:
        return self.images / "examples"

    @property
    def pixel_text(self) -> Path:
        """Per patient, what OCR read on the stored views (no text read is kept)."""
        return self.images / f"pixel_text{PARQUET}"

    @property
    def ingest_settings(self) -> Path:
        """Ingestion settings saved beside the store (training bundles them with the model)."""
        return self.images / "ingest.json"

    # Reports: de-identified text, labels and rejects.
    @property
    def reports(self) -> Path:
        return self.processed / "reports"

    def report_table(self, name: str) -> Path:
        return self.reports / f"{name}{PARQUET}"

    @property
    def branch_labels(self) -> Path:
        return self.report_table("branch_labels")

    @property
    def patient_labels(self) -> Path:
        return self.report_table("patient_labels")

    @property
    def report_rejects(self) -> Path:
        return self.report_table("report_rejects")

    @property
    def label_review(self) -> Path:
        return self.report_table("label_review")

    # Model: patient splits and the training run's checkpoints.
    @property
    def splits(self) -> Path:
        return self.processed / "model" / f"splits{PARQUET}"

    @property
    def checkpoints(self) -> Path:
        return self.processed / "model" / "checkpoints"

    # Evaluation of the challenger on the test split.
    @property
    def evaluation(self) -> Path:
        return self.processed / "evaluation"

    @property
    def test_predictions(self) -> Path:
        return self.evaluation / f"test_predictions{PARQUET}"

    @property
    def patient_ranking(self) -> Path:
        return self.evaluation / f"patient_ranking{PARQUET}"

    @property
    def onnx_parity(self) -> Path:
        return self.evaluation / "onnx_parity.json"

    @property
    def evaluation_report(self) -> Path:
        return self.evaluation / "evaluation.json"

    @property
    def promotion(self) -> Path:
        return self.evaluation / "promotion.json"

    @property
    def explanations(self) -> Path:
        return self.evaluation / "explanations"

    # The champion on another site's export (`external_validation`).
    @property
    def external_predictions(self) -> Path:
        return self.evaluation / f"external_predictions{PARQUET}"

    @property
    def external_report(self) -> Path:
        return self.evaluation / "external.json"

    # Predictions of the champion for patients arriving in the inbox.
    @property
    def predictions(self) -> Path:
        """One folder per inbox patient (its pseudonym): prediction.json, report.png."""
        return self.processed / "predictions"

    def prediction(self, patient: str) -> Path:
        return self.predictions / patient

    @property
    def inbox_refusals(self) -> Path:
        """Inbox studies not scored, with the reason (keyed names only)."""
        return self.processed / f"inbox_refusals{PARQUET}"

    @property
    def worklist(self) -> Path:
        return self.processed / "worklist.parquet"

    @property
    def reader_agreement(self) -> Path:
        """CASS against its readers' verdicts, per week (the review app's reading room)."""
        return self.processed / "reader_agreement.parquet"

    @property
    def reader_labels(self) -> Path:
        """The branch classes readers gave, when they may train (`review/cohort.py`)."""
        return self.processed / f"reader_labels{PARQUET}"

    @property
    def reader_label_rejects(self) -> Path:
        """Judged patients whose verdicts cannot label them, with the reason."""
        return self.processed / f"reader_label_rejects{PARQUET}"
