"""What a patient's prediction looks like to its reader: `prediction.json` and `report.png`.

Both are made from the prediction table alone (plus the cleaned views for the picture), so a
REST client builds the same document from the service's answer. Neither holds an identifier:
the patient is named by its pseudonym and the views are shown after the text cleanup.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from cass_pipeline.domain.anatomy import STENOSIS_CLASSES
from cass_pipeline.domain.imaging.views import PatientSource
from cass_pipeline.domain.model.explain import integrated_gradients, overlay
from cass_pipeline.domain.plots import figure_png, pyplot
from cass_pipeline.domain.prediction.predictor import PatientPrediction, Predictor
from cass_pipeline.domain.storage import write_bytes_atomic, write_text_atomic

SCHEMA = "cass-prediction/1"
CLASS_COLOURS = {"no_stenosis": "#2e7d32", "non_significant": "#f9a825", "significant": "#c62828"}
STRIP_VIEWS = 12


def probabilities(row: dict) -> dict[str, float] | None:
    values = {c: row.get(f"p_{c}") for c in STENOSIS_CLASSES}
    if any(v is None or pd.isna(v) for v in values.values()):
        return None
    return {c: round(float(v), 6) for c, v in values.items()}


def number(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def text(value) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


def triage(row: dict) -> dict:
    """The row's significance score and whether it is referred at the model's operating point."""
    score = row.get("significant_score")
    refer = row.get("refer")
    return {
        "significant_score": None if score is None or pd.isna(score) else round(float(score), 6),
        "refer": None if refer is None or pd.isna(refer) else bool(refer),
    }


def prediction_document(table: pd.DataFrame, model: dict) -> dict:
    """The `prediction.json` of one patient's prediction table (schema in the README)."""
    level = {name: rows for name, rows in table.groupby("level", sort=False)}
    empty = table.iloc[0:0]
    top = level["patient"].iloc[0].to_dict()
    views, rejected = level.get("view", empty), level.get("rejected", empty)
    branches = {}
    for row in level.get("branch", empty).to_dict("records"):
        own = views[views.branch == row["branch"]].sort_values("view_index")
        branches[row["branch"]] = {
            "artery": row["artery"],
            "class": row["stenosis_class"],
            "probabilities": probabilities(row),
            **triage(row),
            "views_used": number(row["views_used"]),
            "votes": {c: int((own.stenosis_class == c).sum()) for c in STENOSIS_CLASSES},
            "views": [
                {
                    "view_index": number(view["view_index"]),
                    "source": view["source"],
                    "class": view["stenosis_class"],
                    "probabilities": probabilities(view),
                }
                for view in own.to_dict("records")
            ],
            "views_rejected": [
                {"source": r["source"], "reason": r["reason"]}
                for r in rejected[rejected.branch == row["branch"]].to_dict("records")
            ],
        }
    arteries = {
        row["artery"]: {
            "class": row["stenosis_class"],
            "probabilities": probabilities(row),
            **triage(row),
            "decided_by": row["decided_by"],
            "views_used": number(row["views_used"]),
        }
        for row in level.get("artery", empty).to_dict("records")
    }
    return {
        "schema": SCHEMA,
        "patient": str(top["patient"]),
        "model": model,
        "patient_class": text(top["stenosis_class"]),
        "cad_rads": text(top["cad_rads"]),
        "probabilities": probabilities(top),
        **triage(top),
        "decided_by": text(top["decided_by"]),
        "views_used": number(top["views_used"]),
        "note": text(top["reason"]),
        "arteries": arteries,
        "branches": branches,
        "rejected": [
            {"source": r["source"], "branch": text(r["branch"]), "reason": r["reason"]}
            for r in rejected.to_dict("records")
        ],
    }


def decisive_views(prediction: PatientPrediction) -> dict[str, int]:
    """Per branch, the view index that voted for the branch's class most confidently."""
    views = prediction.rows("view")
    picks = {}
    for row in prediction.rows("branch").itertuples(index=False):
        own = views[(views.branch == row.branch) & (views.stenosis_class == row.stenosis_class)]
        picks[row.branch] = int(own.loc[own[f"p_{row.stenosis_class}"].idxmax(), "view_index"])
    return picks


def explain_decisive_views(
    network: nn.Module, prediction: PatientPrediction, steps: int = 32
) -> dict[str, np.ndarray]:
    """Integrated Gradients overlays (BGR) of each branch's decisive view, for its class."""
    branches = prediction.rows("branch")
    classes = dict(zip(branches.branch, branches.stenosis_class, strict=True))
    overlays = {}
    for branch, index in decisive_views(prediction).items():
        image = prediction.images[branch][index]
        target = STENOSIS_CLASSES.index(classes[branch])
        overlays[branch] = overlay(image, integrated_gradients(network, image, target, steps))
    return overlays


@dataclass(frozen=True)
class PatientReport:
    document: dict
    report_png: bytes

    def write(self, folder: Path) -> None:
        """`prediction.json` and `report.png`, each written atomically."""
        write_text_atomic(folder / "prediction.json", json.dumps(self.document, indent=2))
        write_bytes_atomic(folder / "report.png", self.report_png)


def predict_folder(
    predictor: Predictor,
    folder: Path,
    patient: str,
    model: dict,
    explain_steps: int = 0,
    on_file: Callable[[], None] | None = None,
) -> PatientReport:
    """One patient's export folder (series in sub-folders, or DICOM files that name their
    series) to its prediction document and report picture; `explain_steps` > 0 adds the
    Integrated Gradients overlays."""
    source = PatientSource(patient, mpr_dir=folder)
    prediction = predictor.predict_files(source.source_files(), patient, on_file=on_file)
    document = prediction_document(prediction.table, model)
    overlays = (
        explain_decisive_views(predictor.network(), prediction, explain_steps)
        if explain_steps and prediction.images
        else None
    )
    return PatientReport(document, render_report(prediction, document, overlays))


def render_report(
    prediction: PatientPrediction, document: dict, overlays: dict[str, np.ndarray] | None = None
) -> bytes:
    """One page (PNG): the patient summary, then per branch a strip of cleaned views, every
    view's vote, the class probabilities and, with `overlays` (BGR), the Integrated Gradients
    picture of the decisive view."""
    branches = list(document["branches"])
    rows = max(1, len(branches))
    fig = pyplot().figure(figsize=(12, 1.9 + 1.25 * rows), dpi=80)
    grid = fig.add_gridspec(
        rows + 1,
        3,
        height_ratios=[1.6] + [1.25] * rows,
        width_ratios=[2.3, 8, 1.2 if overlays else 0.01],
    )
    header = fig.add_subplot(grid[0, :])
    header.axis("off")
    title, *details = summary_lines(document)
    header.text(
        0,
        0.95,
        title,
        fontsize=15,
        weight="bold",
        va="top",
        color=CLASS_COLOURS.get(document["patient_class"], "black"),
    )
    header.text(0, 0.55, "\n".join(details), fontsize=10, va="top")
    for i, branch in enumerate(branches):
        info = document["branches"][branch]
        left = fig.add_subplot(grid[i + 1, 0])
        probability_bars(left, branch, info)
        middle = fig.add_subplot(grid[i + 1, 1])
        middle.imshow(view_strip(prediction.images[branch], info))
        middle.axis("off")
        middle.set_anchor("W")
        if overlays and branch in overlays:
            right = fig.add_subplot(grid[i + 1, 2])
            right.imshow(overlays[branch][..., ::-1])
            right.set_title("decisive view, IG", fontsize=7)
            right.axis("off")
    fig.tight_layout()
    return figure_png(fig)


def referral_line(document: dict) -> str:
    """Whether the patient is referred, on which score and at which operating point."""
    if document["refer"] is None:
        return "Triage: no decision (no view could be scored)"
    model = document["model"]
    threshold = model.get("referral_threshold")
    rule = (
        f"refer at a significant class or P >= {threshold:.3f}, set on validation for patient "
        f"sensitivity >= {model.get('target_sensitivity', 0.95):.2f}"
        if threshold is not None
        else "refer at a significant class (no threshold was needed or fitted)"
    )
    verdict = "REFER" if document["refer"] else "routine"
    return f"Triage: {verdict} (P(significant) {document['significant_score']:.2f}; {rule})"


def summary_lines(document: dict) -> list[str]:
    """The header: the patient's class first, then the model, the arteries and the rejects."""
    model = document["model"]
    if document["patient_class"] is None:
        first = f"Patient {document['patient']}: no prediction ({document['note']})"
    else:
        first = (
            f"Patient {document['patient']}: {document['patient_class'].replace('_', ' ')} "
            f"(CAD-RADS {document['cad_rads']}), decided by {document['decided_by']}"
        )
    arteries = "   ".join(
        f"{name}: {a['class'].replace('_', ' ')} (p {a['probabilities'][a['class']]:.2f}, "
        f"{a['decided_by']})"
        for name, a in document["arteries"].items()
    )
    return [
        first,
        referral_line(document),
        f"Model {model.get('name')} version {model.get('version')}"
        + (f" @{model['alias']}" if model.get("alias") else "")
        + f", {model.get('engine')}, cleanup {model.get('cleanup_fingerprint')}",
        arteries or "no artery could be scored",
        f"{document['views_used'] or 0} views used, {len(document['rejected'])} rejected "
        "(reasons in prediction.json). A second opinion, not a diagnosis.",
    ]


def probability_bars(axis, branch: str, info: dict) -> None:
    values = [info["probabilities"][c] for c in STENOSIS_CLASSES]
    axis.barh(range(3), values, color=[CLASS_COLOURS[c] for c in STENOSIS_CLASSES])
    axis.set(xlim=(0, 1), yticks=range(3), yticklabels=["no", "non-sig", "sig"])
    axis.invert_yaxis()
    axis.tick_params(labelsize=7)
    axis.set_title(
        f"{branch}: {info['class'].replace('_', ' ')} ({info['views_used']} views)",
        fontsize=9,
        color=CLASS_COLOURS[info["class"]],
        loc="left",
    )


def rgb(stenosis_class: str) -> np.ndarray:
    colour = CLASS_COLOURS[stenosis_class]
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], np.uint8)


def view_strip(images: np.ndarray, info: dict) -> np.ndarray:
    """RGB: up to `STRIP_VIEWS` evenly spaced views side by side, each over a bar in the
    colour of its vote; under them one cell per view of the branch, in its vote's colour."""
    n, size = len(images), images.shape[1]
    bar = max(3, size // 12)
    classes = [v["class"] for v in info["views"]]
    picks = np.unique(np.linspace(0, n - 1, min(n, STRIP_VIEWS)).round().astype(int))
    tiles = []
    for k in picks:
        view = np.repeat(images[k][..., None], 3, axis=2)
        tiles += [
            np.concatenate([view, np.broadcast_to(rgb(classes[k]), (bar, size, 3))]),
            np.full((size + bar, 3, 3), 255, np.uint8),
        ]
    strip = np.concatenate(tiles[:-1], axis=1)
    width = strip.shape[1]
    cells = np.repeat([rgb(c) for c in classes], -(-width // n), axis=0)[:width]
    votes = np.broadcast_to(cells, (bar, width, 3))
    gap = np.full((3, width, 3), 255, np.uint8)
    return np.concatenate([strip, gap, votes])


def terminal_lines(document: dict, name: str, version) -> list[str]:
    """What `cass predict` prints: the patient, the triage, a line per branch, the rejects."""
    lines = [
        f"patient {document['patient']}: {document['patient_class']} "
        f"(CAD-RADS {document['cad_rads']}), model {name} version {version}",
        referral_line(document),
    ]
    for branch_name, branch in document["branches"].items():
        p = branch["probabilities"]
        lines.append(
            f"  {branch_name:<8} {branch['class']:<16} "
            + " ".join(f"{p[c]:.2f}" for c in p)
            + f"  ({branch['views_used']} views)"
        )
    if document["rejected"]:
        lines.append(f"  {len(document['rejected'])} files rejected (reasons in prediction.json)")
    return lines
