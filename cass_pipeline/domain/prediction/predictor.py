"""Prediction for a patient: export files in, view, branch, artery and patient classes out.

A registered model is a folder (`write_bundle`) holding everything needed to use it: the
ingestion settings (cleanup, minimum views per branch, the series alias table), the class
map, the roll-up rules, the network as ONNX and as PyTorch weights. `Predictor` is the one
inference path: evaluation, `cass predict`, the REST service and the Dagster asset call it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
import yaml
from torch import nn

from cass_pipeline.domain.anatomy import ARTERY_OF_BRANCH, CAD_RADS_OF_CLASS, STENOSIS_CLASSES
from cass_pipeline.domain.imaging.cleanup import CleanupConfig
from cass_pipeline.domain.imaging.config import IngestConfig
from cass_pipeline.domain.imaging.series_names import merged_aliases
from cass_pipeline.domain.imaging.views import SourceFile, assign_branches, read_views
from cass_pipeline.domain.model.aggregation import AttentionPooling, decide_branches
from cass_pipeline.domain.model.calibration import PROBABILITY_COLUMNS, Calibration
from cass_pipeline.domain.model.inference import (
    Engine,
    OnnxEngine,
    TorchEngine,
    export_onnx,
    largest_difference,
    predict_outputs,
    predict_probabilities,
    view_outputs,
)
from cass_pipeline.domain.model.metrics import majority_vote
from cass_pipeline.domain.model.network import build_model
from cass_pipeline.domain.storage import write_text_atomic

BUNDLE_FILE, ALIASES_FILE, ONNX_FILE, WEIGHTS_FILE, ATTENTION_FILE = (
    "bundle.json",
    "series_aliases.yaml",
    "model.onnx",
    "weights.pt",
    "attention.pt",
)
BRANCH_RULES = {
    "vote": "majority vote of its views, a tie going to the most severe tied class",
    "attention": "the attention head's class over its views' embeddings (attention.pt)",
}
ROLLUP_RULES = {
    "branch": "see `aggregation`; probabilities are the mean of its views'",
    "artery": "most severe of its branches (LM folds into LAD, RI into LCX); "
    "probabilities of that branch",
    "patient": "most severe of its arteries; probabilities of that artery",
    "significant_score": "branch: its P(significant); artery and patient: the highest of "
    "their branches'",
    "refer": "a significant class, or significant_score at or above the model's referral "
    "threshold (fitted on validation for the target sensitivity)",
}
#: Largest probability difference allowed between the ONNX export and the PyTorch network.
ONNX_TOLERANCE = 1e-4
#: A model's view predictions on the test split: what evaluation and promotion read.
VIEW_PREDICTION_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("artery", pa.string()),
        ("branch", pa.string()),
        ("view_index", pa.int32()),
        ("label", pa.int8()),
        ("pred", pa.int8()),
        ("branch_pred", pa.int8()),
        *((column, pa.float32()) for column in PROBABILITY_COLUMNS),
        ("model_version", pa.int32()),
    ]
)
#: One table for every level; `level` is patient, artery, branch, view or rejected.
PREDICTION_COLUMNS = [
    "patient",
    "level",
    "artery",
    "branch",
    "view_index",
    "source",
    "stenosis_class",
    *PROBABILITY_COLUMNS,
    "significant_score",
    "refer",
    "views_used",
    "decided_by",
    "cad_rads",
    "reason",
]
INPUT_COLUMNS = ("image", "patient", "branch", "series_name", "view_index", "source")
ENGINES = ("onnxruntime", "pytorch")


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")


@dataclass(frozen=True)
class ModelBundle:
    """What a registered model needs besides its weights."""

    arch: str
    ingest: IngestConfig
    classes: tuple[str, ...] = STENOSIS_CLASSES
    artery_of_branch: dict[str, str] = field(default_factory=lambda: dict(ARTERY_OF_BRANCH))
    recorded_cleanup: str | None = None
    calibration: Calibration = field(default_factory=Calibration)
    aggregation: str = "vote"
    attention: AttentionPooling | None = field(default=None, compare=False, repr=False)

    @property
    def image_size(self) -> int:
        return self.ingest.cleanup.size

    @property
    def cleanup_fingerprint(self) -> str:
        """How the training images were cleaned: recorded at registration (an older cleanup
        algorithm gives another fingerprint for the same settings)."""
        return self.recorded_cleanup or self.ingest.cleanup.fingerprint()

    def cleans_as_trained(self) -> bool:
        """Whether this code's cleanup is the one the model was trained with."""
        return self.cleanup_fingerprint == self.ingest.cleanup.fingerprint()

    def to_json(self) -> dict:
        ingest = asdict(self.ingest)
        ingest.pop("aliases")  # the merged table travels as its own file
        ingest.pop("site_aliases")
        return {
            "arch": self.arch,
            "image_size": self.image_size,
            "ingest": ingest,
            "cleanup_fingerprint": self.cleanup_fingerprint,
            "classes": list(self.classes),
            "artery_of_branch": self.artery_of_branch,
            "rollup": ROLLUP_RULES,
            "aggregation": self.aggregation,
            "aggregation_rule": BRANCH_RULES[self.aggregation],
            "cad_rads_of_class": CAD_RADS_OF_CLASS,
            "calibration": self.calibration.to_json(),
        }

    @classmethod
    def read(cls, folder: Path) -> ModelBundle:
        data = json.loads((folder / BUNDLE_FILE).read_text())
        ingest = dict(data["ingest"])
        cleanup = CleanupConfig(**ingest.pop("cleanup"))
        return cls(
            arch=data["arch"],
            ingest=IngestConfig(cleanup=cleanup, aliases=str(folder / ALIASES_FILE), **ingest),
            classes=tuple(data["classes"]),
            artery_of_branch=data["artery_of_branch"],
            recorded_cleanup=data.get("cleanup_fingerprint"),
            calibration=Calibration.from_json(data.get("calibration")),
            aggregation=data.get("aggregation", "vote"),
            attention=read_attention(folder) if data.get("aggregation") == "attention" else None,
        )

    def check_store(self, fingerprints: Iterable[str]) -> None:
        """Refuse views cleaned otherwise than this bundle cleans (train/serve skew)."""
        found, expected = set(fingerprints), self.cleanup_fingerprint
        if found - {expected}:
            raise ValueError(
                f"the model expects views cleaned as {expected}, the image store holds "
                f"{sorted(found)}: re-run the image ingestion with the model's settings"
            )


def read_attention(folder: Path) -> AttentionPooling:
    state = torch.load(folder / ATTENTION_FILE, map_location="cpu", weights_only=True)
    head = AttentionPooling(state["classify.weight"].shape[1])
    head.load_state_dict(state)
    return head.eval()


def write_bundle(
    model: nn.Module, bundle: ModelBundle, folder: Path, check_images: np.ndarray
) -> float:
    """Write the model folder; the ONNX export is checked against the network on
    `check_images` and refused when a class differs or a probability moves by more than
    `ONNX_TOLERANCE`. Returns the largest difference."""
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    torch.save(model.state_dict(), folder / WEIGHTS_FILE)
    if bundle.aggregation == "attention":
        torch.save(bundle.attention.state_dict(), folder / ATTENTION_FILE)
    export_onnx(model, bundle.image_size, folder / ONNX_FILE)
    site = Path(bundle.ingest.site_aliases) if bundle.ingest.site_aliases else None
    write_text_atomic(
        folder / ALIASES_FILE,
        yaml.safe_dump(merged_aliases(Path(bundle.ingest.aliases), site), sort_keys=True),
    )
    write_text_atomic(folder / BUNDLE_FILE, json.dumps(bundle.to_json(), indent=2))
    difference, changed = largest_difference(
        predict_probabilities(TorchEngine(model), check_images),
        predict_probabilities(OnnxEngine(folder / ONNX_FILE), check_images),
    )
    if changed or difference > ONNX_TOLERANCE:
        raise ValueError(
            f"the ONNX export disagrees with the network: {changed} views change class, "
            f"largest probability difference {difference:.2e} (allowed {ONNX_TOLERANCE:.0e})"
        )
    return difference


def torch_network(folder: Path, arch: str) -> nn.Module:
    """The bundle's PyTorch network (for gradients, GPUs and the ONNX check)."""
    model = build_model(arch, "none").model
    model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval()


@dataclass
class PatientPrediction:
    """The prediction table of one patient and the cleaned views it was made from."""

    patient: str
    table: pd.DataFrame
    images: dict[str, np.ndarray]

    def rows(self, level: str) -> pd.DataFrame:
        return self.table[self.table.level == level].reset_index(drop=True)


class Predictor:
    """The bundle's cleanup, branch assignment, network and roll-up, in that order."""

    def __init__(self, bundle: ModelBundle, engine: Engine, network: Callable[[], nn.Module]):
        self.bundle = bundle
        self.engine = engine
        self._network = network

    @classmethod
    def load(cls, folder: Path, engine: str = "onnxruntime", device: str = "cpu") -> Predictor:
        """A predictor on ONNX Runtime (CPU) or PyTorch (`device`: cpu, cuda, ...), giving
        the bundle's calibrated probabilities."""
        check_engine(engine)
        bundle = ModelBundle.read(folder)
        if engine == "onnxruntime":
            runner: Engine = OnnxEngine(folder / ONNX_FILE)
        else:
            runner = TorchEngine(torch_network(folder, bundle.arch), torch.device(device))
        return cls(
            bundle, bundle.calibration.scaled(runner), lambda: torch_network(folder, bundle.arch)
        )

    def network(self) -> nn.Module:
        """The PyTorch network (Integrated Gradients need gradients)."""
        return self._network()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 3) of views already cleaned with this bundle's cleanup."""
        return predict_probabilities(self.engine, images)

    def score_views(self, views: pd.DataFrame, store_root: Path) -> pd.DataFrame:
        """Stored (already cleaned) views with pred, the probabilities and `branch_pred`, the
        class of their branch; what evaluation scores."""
        probabilities, embeddings = view_outputs(self.engine, views, store_root)
        scored = views.reset_index(drop=True).assign(
            pred=probabilities.argmax(1),
            **dict(zip(PROBABILITY_COLUMNS, probabilities.T, strict=True)),
        )
        return scored.assign(branch_pred=decide_branches(scored, embeddings, self.bundle.attention))

    def predict_files(
        self,
        files: Iterable[SourceFile],
        patient: str,
        threads: int = 2,
        on_file: Callable[[], None] | None = None,
    ) -> PatientPrediction:
        """Read, clean, assign to branches, score and roll up one patient's files."""
        views, rejects = read_views(files, patient, self.bundle.ingest, threads, on_file)
        by_branch, more = assign_branches(views, patient, self.bundle.ingest)
        rejects += more
        images = {b: np.stack([v.image for v in by_branch[b]]) for b in sorted(by_branch)}
        view_rows, decided = [], None
        if images:
            stacked = np.concatenate(list(images.values()))
            probabilities, embeddings = predict_outputs(self.engine, stacked)
            rows = iter(probabilities)
            for branch in images:
                for index, view in enumerate(by_branch[branch]):
                    p = next(rows)
                    view_rows.append(
                        {
                            "view_index": index,
                            "source": view.source_path,
                            "branch": branch,
                            "stenosis_class": self.bundle.classes[int(p.argmax())],
                            **dict(zip(PROBABILITY_COLUMNS, map(float, p), strict=True)),
                        }
                    )
            branches = [row["branch"] for row in view_rows]
            scored = pd.DataFrame(
                {"patient_id": patient, "branch": branches, "pred": probabilities.argmax(1)}
            )
            classes = decide_branches(scored, embeddings, self.bundle.attention)
            decided = {branch: int(c) for branch, c in zip(branches, classes, strict=True)}
        table = roll_up(patient, pd.DataFrame(view_rows), rejects, self.bundle, decided)
        return PatientPrediction(patient, table, images)

    def predict_frame(self, frame: pd.DataFrame, threads: int = 2) -> pd.DataFrame:
        """The prediction table for a request: one row per view with `image` (DICOM, PNG or
        JPEG bytes) and optionally `patient`, `branch` or `series_name`, `view_index`,
        `source`."""
        if "image" not in frame.columns:
            raise ValueError("the request has no 'image' column")
        unknown = set(frame.columns) - set(INPUT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown request columns {sorted(unknown)}; expected {INPUT_COLUMNS}")
        frame = frame.reset_index(drop=True)
        patients = frame["patient"] if "patient" in frame else pd.Series("patient", frame.index)
        tables = []
        for patient, rows in frame.groupby(patients.fillna("patient").astype(str), sort=True):
            records = zip(rows.index, rows.to_dict("records"), strict=True)
            files = [request_file(i, row) for i, row in records]
            tables.append(self.predict_files(files, patient, threads).table)
        return pd.concat(tables, ignore_index=True) if tables else empty_table()


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
    )


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=object) for column in PREDICTION_COLUMNS})


def decisive(rows: pd.DataFrame, classes: tuple[str, ...]) -> pd.Series:
    """The most severe row, ties going to the higher probability of that class."""
    severity = rows.stenosis_class.map(classes.index)
    worst = rows[severity == severity.max()]
    column = f"p_{worst.stenosis_class.iloc[0]}"
    return worst.loc[worst[column].idxmax()]


def most_severe(level: str, rows: pd.DataFrame, part: str, classes: tuple[str, ...]) -> dict:
    """A `level` row taking class and probabilities from the most severe of its `rows`, and
    the highest significance score among them."""
    worst = decisive(rows, classes)
    return {
        "level": level,
        "stenosis_class": worst.stenosis_class,
        **worst[PROBABILITY_COLUMNS].to_dict(),
        "significant_score": float(rows.significant_score.max()),
        "views_used": int(rows.views_used.sum()),
        "decided_by": worst[part],
    }


def with_referral(rows: pd.DataFrame, bundle: ModelBundle) -> pd.DataFrame:
    """`rows` with `refer`: the calibration's decision on each row's significance score."""
    refer = [
        bundle.calibration.refers(score, bundle.classes.index(name))
        for score, name in zip(rows.significant_score, rows.stenosis_class, strict=True)
    ]
    return rows.assign(refer=refer)


def roll_up(
    patient: str,
    views: pd.DataFrame,
    rejects: list[dict],
    bundle: ModelBundle,
    branch_classes: dict[str, int] | None = None,
) -> pd.DataFrame:
    """View rows to branch, artery and patient rows (`ROLLUP_RULES`), plus the rejects; a
    branch's class is `branch_classes[branch]` where given, else the vote of its views."""
    classes = bundle.classes
    rows = []
    if not views.empty:
        for branch, group in views.groupby("branch", sort=True):
            if branch_classes is not None:
                voted = classes[branch_classes[branch]]
            else:
                voted = classes[majority_vote(group.stenosis_class.map(classes.index))]
            rows.append(
                {
                    "level": "branch",
                    "branch": branch,
                    "stenosis_class": voted,
                    **group[PROBABILITY_COLUMNS].mean().to_dict(),
                    "significant_score": float(group.p_significant.mean()),
                    "views_used": len(group),
                }
            )
        order = list(bundle.artery_of_branch)
        branches = pd.DataFrame(rows).sort_values("branch", key=lambda b: b.map(order.index))
        branches["artery"] = branches.branch.map(bundle.artery_of_branch)
        arteries = pd.DataFrame(
            [
                {"artery": artery, **most_severe("artery", group, "branch", classes)}
                for artery, group in branches.groupby("artery", sort=True)
            ]
        )
        top = most_severe("patient", arteries, "artery", classes)
        top["cad_rads"] = CAD_RADS_OF_CLASS[top["stenosis_class"]]
        views = views.assign(level="view", artery=views.branch.map(bundle.artery_of_branch))
        parts = [
            *(with_referral(rows, bundle) for rows in (pd.DataFrame([top]), arteries, branches)),
            views,
        ]
    else:
        parts = [
            pd.DataFrame([{"level": "patient", "reason": "no view could be used", "views_used": 0}])
        ]
    if rejects:
        parts.append(
            pd.DataFrame(
                [
                    {
                        "level": "rejected",
                        "branch": r["branch"],
                        "artery": bundle.artery_of_branch.get(r["branch"]),
                        "source": r["source_path"],
                        "reason": r["reason"],
                    }
                    for r in rejects
                ]
            )
        )
    table = pd.concat([empty_table(), *parts], ignore_index=True)
    table["patient"] = patient
    return table[PREDICTION_COLUMNS].astype(
        {c: float for c in [*PROBABILITY_COLUMNS, "significant_score"]}
    )
