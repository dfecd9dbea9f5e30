"""Prediction for a patient: export files in, view, branch, artery and patient classes out.

`Predictor` is the one inference path over a registered model's folder (`bundle.py`):
evaluation, `cass predict`, the REST service and the Dagster asset call it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from torch import nn

from cass_pipeline.domain.anatomy import GRADES
from cass_pipeline.domain.imaging.pixel_text import PixelText, check_pixels, first_middle_last
from cass_pipeline.domain.imaging.views import SourceFile, assign_branches, read_views
from cass_pipeline.domain.model.aggregation import decide_branches
from cass_pipeline.domain.model.calibration import PROBABILITY_COLUMNS
from cass_pipeline.domain.model.data import model_views
from cass_pipeline.domain.model.inference import (
    Engine,
    predict_outputs,
    predict_probabilities,
    view_outputs,
)
from cass_pipeline.domain.model.targets import GRADE_PROBABILITY_COLUMNS
from cass_pipeline.domain.prediction.bundle import ModelBundle, network_runner, torch_network
from cass_pipeline.domain.prediction.config import PredictSettings, check_engine
from cass_pipeline.domain.prediction.rollup import empty_table, roll_up

#: A model's view predictions on the test split: what evaluation and promotion read.
VIEW_PREDICTION_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("artery", pa.string()),
        ("branch", pa.string()),
        ("view_index", pa.int32()),
        ("label", pa.int8()),
        ("grade_low", pa.int8()),
        ("grade_high", pa.int8()),
        ("pred", pa.int8()),
        ("branch_pred", pa.int8()),
        ("grade_pred", pa.int8()),
        ("branch_grade", pa.int8()),
        *((column, pa.float32()) for column in PROBABILITY_COLUMNS),
        *((column, pa.float32()) for column in GRADE_PROBABILITY_COLUMNS),
        ("model_version", pa.int32()),
    ]
)
INPUT_COLUMNS = ("image", "patient", "branch", "series_name", "view_index", "source")


#: Views of a branch that `report.png` shows, evenly spaced (`strip_views`).
STRIP_VIEWS = 12


def strip_views(count: int) -> list[int]:
    """The positions of the views `report.png` shows of a branch with `count` views."""
    return np.unique(
        np.linspace(0, count - 1, min(count, STRIP_VIEWS)).round().astype(int)
    ).tolist()


@dataclass
class PatientPrediction:
    """The prediction table of one patient, the cleaned views it was made from, what OCR read
    on the views an output shows, and the identifiers it looked for (in memory only)."""

    patient: str
    table: pd.DataFrame
    images: dict[str, np.ndarray]
    pixel_text: PixelText = field(default_factory=PixelText)
    identifiers: frozenset[str] = frozenset()

    def rows(self, level: str) -> pd.DataFrame:
        return self.table[self.table.level == level].reset_index(drop=True)


class Predictor:
    """The bundle's cleanup, branch assignment, network and roll-up, in that order."""

    def __init__(self, bundle: ModelBundle, engine: Engine, network: Callable[[], nn.Module]):
        self.bundle = bundle
        self.engine = engine
        self._network = network

    @classmethod
    def load(
        cls, folder: Path, engine: str = PredictSettings.engine, device: str = "cpu"
    ) -> Predictor:
        """A predictor on ONNX Runtime (CPU) or PyTorch (`device`: cpu, cuda, ...), giving
        the bundle's calibrated probabilities."""
        check_engine(engine)
        bundle = ModelBundle.read(folder)
        runner = network_runner(folder, bundle, engine, device)
        return cls(bundle, bundle.engine(runner), lambda: torch_network(folder, bundle))

    def network(self) -> nn.Module:
        """The PyTorch network (Integrated Gradients need gradients)."""
        return self._network()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Output probabilities (N, K: the bundle's grades or classes) of views already
        cleaned with this bundle's cleanup."""
        return predict_probabilities(self.engine, images)

    def probabilities_by_column(self, probabilities: np.ndarray) -> dict[str, np.ndarray]:
        """Class probabilities, and grade probabilities (NaN for a three-class model), of
        output probabilities (N, K), by column."""
        outputs = self.bundle.outputs
        classes = outputs.class_probabilities(probabilities)
        grades = (
            probabilities if outputs.grades else np.full((len(probabilities), len(GRADES)), np.nan)
        )
        return {
            **dict(zip(PROBABILITY_COLUMNS, classes.T, strict=True)),
            **dict(zip(GRADE_PROBABILITY_COLUMNS, grades.T, strict=True)),
        }

    def score_views(self, views: pd.DataFrame, store_root: Path) -> pd.DataFrame:
        """Stored (already cleaned) views with their probabilities, class (`pred`) and grade
        (`grade_pred`), and their branch's as the model decides it (`branch_pred`,
        `branch_grade`; grades null for a three-class model); what evaluation scores."""
        channels = self.bundle.view_channels
        probabilities, embeddings = view_outputs(self.engine, views, store_root, channels)
        outputs = self.bundle.outputs
        voted = views.reset_index(drop=True).assign(pred=probabilities.argmax(1))
        branches = decide_branches(voted, embeddings, self.bundle.attention)
        no_grade = pd.array([pd.NA] * len(voted), dtype="Int8")
        return voted.assign(
            pred=outputs.classes_of(voted.pred),
            branch_pred=outputs.classes_of(branches),
            grade_pred=voted.pred if outputs.grades else no_grade,
            branch_grade=branches if outputs.grades else no_grade,
            **self.probabilities_by_column(probabilities),
        )

    def predict_files(
        self,
        files: Iterable[SourceFile],
        patient: str,
        threads: int = 2,
        on_file: Callable[[], None] | None = None,
        identifiers: Iterable[str] = (),
    ) -> PatientPrediction:
        """Read, clean, assign to branches, score and roll up one patient's files; OCR reads
        the views `report.png` would show for the headers' `identifiers` and those given."""
        views, rejects = read_views(files, patient, self.bundle.ingest, threads, on_file)
        by_branch, more = assign_branches(views, patient, self.bundle.ingest)
        rejects += more
        images = {b: np.stack([v.image for v in by_branch[b]]) for b in sorted(by_branch)}
        known = frozenset(identifiers).union(*(v.identifiers for v in views))
        shown = {
            f"{branch}/{k}": stack[k]
            for branch, stack in images.items()
            for k in sorted({*strip_views(len(stack)), *first_middle_last(len(stack))})
        }
        pixel_text = check_pixels(shown, known)
        view_rows, decided = pd.DataFrame(), None
        if images:
            inputs = self.model_views(images)
            probabilities, embeddings = predict_outputs(self.engine, inputs)
            view_rows = self.view_rows({b: by_branch[b] for b in images}, probabilities)
            scored = view_rows.assign(patient_id=patient, pred=probabilities.argmax(1))
            branches = decide_branches(scored, embeddings, self.bundle.attention)
            decided = dict(zip(scored.branch, branches.tolist(), strict=True))
        table = roll_up(patient, view_rows, rejects, self.bundle, decided)
        return PatientPrediction(patient, table, images, pixel_text, known)

    def model_views(self, images: dict[str, np.ndarray]) -> np.ndarray:
        """A patient's cleaned views by branch (each stack in view order), concatenated as the
        network takes them (`model_views`: with their neighbours under `neighbours`)."""
        order = pd.DataFrame(
            [(branch, k) for branch, stack in images.items() for k in range(len(stack))],
            columns=["branch", "view_index"],
        )
        stacked = np.concatenate(list(images.values()))
        return model_views(stacked, order.assign(patient_id=""), self.bundle.view_channels)

    def view_rows(self, by_branch: dict[str, list], probabilities: np.ndarray) -> pd.DataFrame:
        """One row per view, in the order of `by_branch` (that of `probabilities`): source,
        class, grade and probabilities."""
        outputs = self.bundle.outputs
        picked = probabilities.argmax(1)
        views = [
            (branch, index, view.source_path)
            for branch, stack in by_branch.items()
            for index, view in enumerate(stack)
        ]
        return pd.DataFrame(
            {
                "view_index": [index for _, index, _ in views],
                "source": [source for _, _, source in views],
                "branch": [branch for branch, _, _ in views],
                "stenosis_class": [self.bundle.classes[c] for c in outputs.classes_of(picked)],
                "grade": [outputs.names[k] if outputs.grades else None for k in picked],
                **self.probabilities_by_column(probabilities),
            }
        )

    def predict_frame(self, frame: pd.DataFrame, threads: int = 2) -> pd.DataFrame:
        """The prediction table for a request: one row per view with `image` (DICOM, PNG or
        JPEG bytes) and optionally `patient`, `branch` or `series_name`, `view_index`,
        `source`."""
        check_request_columns(list(frame.columns))
        frame = frame.reset_index(drop=True)
        patients = frame["patient"] if "patient" in frame else pd.Series("patient", frame.index)
        tables = []
        for patient, rows in frame.groupby(patients.fillna("patient").astype(str), sort=True):
            records = zip(rows.index, rows.to_dict("records"), strict=True)
            files = [request_file(i, row) for i, row in records]
            tables.append(self.predict_files(files, patient, threads).table)
        return pd.concat(tables, ignore_index=True) if tables else empty_table()


class RequestColumnsError(ValueError):
    """A request's columns the predictor cannot take; `unknown` names those it does not know."""

    def __init__(self, message: str, unknown: tuple[str, ...] = ()):
        super().__init__(message)
        self.unknown = unknown


def check_request_columns(columns: list[str]) -> None:
    """Refuse a request with columns the predictor does not know (named, 40 characters of
    each at most) or without `image`."""
    unknown = tuple(c for c in columns if c not in INPUT_COLUMNS)
    if unknown:
        names = [c[:40] for c in unknown[:10]]
        raise RequestColumnsError(
            f"unknown request columns {names}; expected some of {list(INPUT_COLUMNS)}", unknown
        )
    if "image" not in columns:
        raise RequestColumnsError("the request has no 'image' column")


def present(row: dict, key: str):
    """A request value, None when the column is absent or the cell empty."""
    value = row.get(key)
    return None if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) else value


def request_file(index: int, row: dict) -> SourceFile:
    """A request row as a source file; its series is the stated branch or series name."""
    data = row["image"]
    if not isinstance(data, bytes | bytearray):
        raise ValueError(f"row {index}: 'image' must be bytes (base64 in JSON)")
    branch, series = present(row, "branch"), present(row, "series_name")
    view_index = present(row, "view_index")
    return SourceFile(
        path=str(present(row, "source") or f"row-{index}"),
        series=str(series or branch or ""),
        data=bytes(data),
        branch=None if branch is None else str(branch),
        view_index=None if view_index is None else int(view_index),
        stated=True,
    )
