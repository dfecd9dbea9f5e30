"""One patient's export folder to its prediction: what `cass predict` and the inbox asset run
before writing the outputs (`outputs.py`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cass_pipeline.domain.imaging.views import PatientSource
from cass_pipeline.domain.prediction.document import prediction_document
from cass_pipeline.domain.prediction.outputs import PredictedPatient
from cass_pipeline.domain.prediction.picture import explain_decisive_views
from cass_pipeline.domain.prediction.predictor import Predictor


def predict_folder(
    predictor: Predictor,
    folder: Path,
    patient: str,
    model: dict,
    explain_steps: int = 0,
    on_file: Callable[[], None] | None = None,
) -> PredictedPatient:
    """One patient's export folder (series in sub-folders, or DICOM files that name their
    series) predicted, with its document; `explain_steps` > 0 adds the Integrated Gradients
    overlays of the decisive views. The folder's name is an identifier the pixel check looks
    for besides the DICOM headers'."""
    source = PatientSource(patient, mpr_dir=folder)
    prediction = predictor.predict_files(
        source.source_files(), patient, on_file=on_file, identifiers={folder.name}
    )
    overlays = (
        explain_decisive_views(predictor, prediction, explain_steps)
        if explain_steps and prediction.images
        else None
    )
    pixel_check = prediction.pixel_text.to_json(timed=False)
    document = prediction_document(prediction.table, model, pixel_check)
    return PredictedPatient(prediction, document, overlays)
