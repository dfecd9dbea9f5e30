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

    from cass_pipeline.domain.prediction.document import PredictionDocument
    from cass_pipeline.domain.prediction.predictor import PatientPrediction


@dataclass(frozen=True)
class PredictedPatient:
    """One patient's prediction, its document (`document.prediction_document`) and, where
    asked for, the Integrated Gradients overlays (BGR) of each branch's decisive view."""

    prediction: PatientPrediction
    document: PredictionDocument
    overlays: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class OutputWriter:
    """One output format: the file it writes in the patient's folder and how it is drawn."""

    file_name: str
    description: str
    #: The file's bytes, or None when the patient has nothing for it (no explanations).
    render: Callable[[PredictedPatient], bytes | None]

    def write(self, patient: PredictedPatient, folder: Path) -> Written | None:
        """The file written, or None (and an older one removed, never left stale)."""
        data = self.render(patient)
        if data is None:
            (folder / self.file_name).unlink(missing_ok=True)
            return None
        written = Written(folder / self.file_name, data)
        write_bytes_atomic(written.path, written.data)
        return written


@dataclass(frozen=True)
class Written:
    """A file an output writer wrote, and its bytes (the UI shows the picture without
    reading it back)."""

    path: Path
    data: bytes


def prediction_json(patient: PredictedPatient) -> bytes:
    return json.dumps(patient.document, indent=2).encode("utf-8")


class PixelTextError(ValueError):
    """A picture that is not written: OCR reads an identifier in it, or could not read it."""


def overlays_read(patient: PredictedPatient):
    """What OCR reads on the Integrated Gradients pictures, for the patient's identifiers."""
    from cass_pipeline.domain.imaging.pixel_text import PixelText, check_pixels

    if not patient.overlays:
        return PixelText()
    pictures = {f"{branch}/IG": image for branch, image in patient.overlays.items()}
    return check_pixels(pictures, patient.prediction.identifiers)


def report_png(patient: PredictedPatient) -> bytes:
    """The page, drawn only when OCR read no identifier on the views it shows (read by the
    predictor) nor on the Integrated Gradients pictures."""
    from cass_pipeline.domain.prediction.picture import render_report

    checked = patient.prediction.pixel_text.merge(overlays_read(patient))
    if checked.problem() is not None:
        raise PixelTextError(f"report.png not written: {checked.problem()}")
    return render_report(patient.prediction, patient.document, patient.overlays)


def explanations_png(patient: PredictedPatient) -> bytes | None:
    """Each branch's decisive view with its Integrated Gradients at a readable size, or None
    without explanations; drawn only when OCR read no identifier on them."""
    from cass_pipeline.domain.prediction.picture import render_explanations

    if not patient.overlays:
        return None
    problem = overlays_read(patient).problem()
    if problem is not None:
        raise PixelTextError(f"explanations.png not written: {problem}")
    return render_explanations(patient.prediction, patient.document, patient.overlays)


WRITERS: dict[str, OutputWriter] = {
    "json": OutputWriter(
        "prediction.json", "the prediction document (docs/prediction.md)", prediction_json
    ),
    "png": OutputWriter(
        "report.png", "one page: summary, each branch's views, votes, probabilities", report_png
    ),
    "explanations": OutputWriter(
        "explanations.png",
        "each branch's decisive view with its Integrated Gradients, 256 px (with --explain)",
        explanations_png,
    ),
}
#: Every format, in the order written when none is chosen.
OUTPUT_FORMATS: tuple[str, ...] = tuple(WRITERS)


def output_writers(formats: Iterable[str] = OUTPUT_FORMATS) -> dict[str, OutputWriter]:
    """The writers of the chosen formats, refusing an unknown one before any work."""
    formats = list(formats)
    unknown = sorted(set(formats) - set(WRITERS))
    if unknown:
        raise ValueError(f"unknown output formats {unknown}; choose from {list(WRITERS)}")
    return {name: WRITERS[name] for name in formats}


def write_outputs(
    patient: PredictedPatient, folder: Path, writers: dict[str, OutputWriter]
) -> dict[str, Written]:
    """Each writer's file written into `folder`, by format (a format with nothing to write
    for this patient is left out)."""
    written = {name: writer.write(patient, folder) for name, writer in writers.items()}
    return {name: file for name, file in written.items() if file is not None}
