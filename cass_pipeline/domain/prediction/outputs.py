"""What one patient's prediction is written as: one registry of writers, a format an entry.

Each writer renders the predicted patient to the bytes of one file and writes it atomically;
`cass predict --output` and the inbox asset's `outputs` offer exactly the formats listed here
(docs/extending.md says how to add one). A renderer imports what it draws with when it runs,
so listing the formats costs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cass_pipeline.domain.storage import write_bytes_atomic

if TYPE_CHECKING:
    import numpy as np

    from cass_pipeline.domain.prediction.predictor import PatientPrediction


@dataclass(frozen=True)
class PredictedPatient:
    """One patient's prediction, its document (`document.prediction_document`) and, where
    asked for, the Integrated Gradients overlays (BGR) of each branch's decisive view."""

    prediction: PatientPrediction
    document: dict
    overlays: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class OutputWriter:
    """One output format: the file it writes in the patient's folder and how it is drawn."""

    file_name: str
    description: str
    render: Callable[[PredictedPatient], bytes]

    def write(self, patient: PredictedPatient, folder: Path) -> Path:
        path = folder / self.file_name
        write_bytes_atomic(path, self.render(patient))
        return path


def prediction_json(patient: PredictedPatient) -> bytes:
    return json.dumps(patient.document, indent=2).encode("utf-8")


def report_png(patient: PredictedPatient) -> bytes:
    from cass_pipeline.domain.prediction.picture import render_report

    return render_report(patient.prediction, patient.document, patient.overlays)


WRITERS: dict[str, OutputWriter] = {
    "json": OutputWriter(
        "prediction.json", "the prediction document (docs/prediction.md)", prediction_json
    ),
    "png": OutputWriter(
        "report.png", "one page: summary, each branch's views, votes, probabilities", report_png
    ),
}
#: Every format, in the order written when none is chosen.
OUTPUT_FORMATS: tuple[str, ...] = tuple(WRITERS)


def write_outputs(
    patient: PredictedPatient, folder: Path, formats: Iterable[str] = OUTPUT_FORMATS
) -> dict[str, Path]:
    """The chosen formats written into `folder`, by format."""
    formats = list(formats)
    unknown = sorted(set(formats) - set(WRITERS))
    if unknown:
        raise ValueError(f"unknown output formats {unknown}; choose from {list(WRITERS)}")
    return {name: WRITERS[name].write(patient, folder) for name in formats}
