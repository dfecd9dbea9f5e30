"""The model card of a registered version: what it is for, what it learnt from, how good it
is on what, how its probabilities and referrals are set, and what it cannot say. Written by
the evaluation as `model_card.md` on the training run and as the version's description in
the registry, so that whoever loads `models:/cass-stenosis@champion` reads it first."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from cass_pipeline.domain.anatomy import STENOSIS_CLASSES
from cass_pipeline.domain.model.calibration import Calibration
from cass_pipeline.domain.model.metrics import LEVELS, PAPER_NOTE
from cass_pipeline.domain.model.splits import from_readers

INTENDED_USE = (
    "A second opinion on coronary stenosis from curved MPR views of a CCTA study, for "
    "research and for a physician who reads it beside the images. Not a diagnosis, not "
    "cleared for clinical use."
)
NOT_MEASURED = "not measured for this version"


@dataclass(frozen=True)
class CardFacts:
    """What the card states, gathered by the evaluation."""

    version: int
    run_id: str
    arch: str
    target: str
    image_size: int
    data_source: str
    splits: pd.DataFrame
    metrics: dict
    grades: dict | None
    on_test: dict
    calibration: Calibration
    #: Networks served together (a fold ensemble's members), and the cross-validated
    #: figures of its training run (`crossval_markdown`) when it was cross-validated.
    members: int = 1
    cross_validation: str | None = None


def interval(metric: dict, key: str) -> str:
    value, ci = metric.get(key), (metric.get("ci95") or {}).get(key)
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")


READER_ROW = " (labelled by readers)"


def training_table(splits: pd.DataFrame) -> list[str]:
    """Patients per split and class, those readers labelled in a row of their own."""
    by_reader = from_readers(splits)
    splits = splits.assign(split=splits.split.mask(by_reader, splits.split + READER_ROW))
    counts = splits.pivot_table(
        index="split", columns="patient_class", values="patient_id", aggfunc="count", fill_value=0
    )
    classes = [c for c in STENOSIS_CLASSES if c in counts.columns]
    lines = ["| split | patients | " + " | ".join(classes) + " |"]
    lines.append("|---" * (len(classes) + 2) + "|")
    for split, row in counts.iterrows():
        cells = " | ".join(str(int(row[c])) for c in classes)
        lines.append(f"| {split} | {int(row.sum())} | {cells} |")
    return lines


def figures_table(metrics: dict) -> list[str]:
    lines = ["| level | n | accuracy (95% CI) | weighted F1 (95% CI) |", "|---|---|---|---|"]
    for level in LEVELS:
        m = metrics[level]
        lines.append(
            f"| {level} | {m['n']} | {interval(m, 'accuracy')} | {interval(m, 'f1_weighted')} |"
        )
    return lines


def grade_lines(grades: dict | None) -> list[str]:
    if grades is None:
        return ["A three-class model: no CAD-RADS grades; its category is a range."]
    patient = grades["patient"]
    return [
        f"CAD-RADS 2.0 on {patient['n']} test patients: linearly weighted kappa "
        f"{interval(patient, 'kappa_linear')}, accuracy {interval(patient, 'accuracy')}, "
        f"rule-out AUC {interval(patient, 'rule_out_auc')}, hold-out AUC "
        f"{interval(patient, 'hold_out_auc')}."
    ]


def calibration_lines(calibration: Calibration, on_test: dict) -> list[str]:
    threshold = calibration.referral_threshold

    def shown(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        f"- Temperature {calibration.temperature:.3f}, {calibration.fitted_on}.",
        f"- Expected calibration error on the test views: {shown(on_test.get('ece_before'))} "
        f"before, {shown(on_test.get('ece_after'))} after.",
        "- Referral: a patient is referred when its class is significant"
        + (
            f" or its P(significant) is at least {threshold:.3f}"
            if threshold is not None
            else " (no threshold fitted)"
        )
        + f", chosen for sensitivity >= {calibration.target_sensitivity:.2f} on validation; "
        f"on test: sensitivity {shown(on_test.get('sensitivity'))}, specificity "
        f"{shown(on_test.get('specificity'))} over {on_test.get('patients', '-')} patients.",
    ]
    if calibration.unreliable:
        lines.append(f"- **Calibration not reliable: {calibration.unreliable}.**")
    return lines


def cross_validation_lines(markdown: str | None) -> list[str]:
    """The run's cross-validated figures (out of fold, per fold and pooled), when any."""
    if markdown is None:
        return []
    return [
        "## Cross-validated on the training and validation patients (out of fold)",
        markdown,
        "",
    ]


def reader_limit(splits: pd.DataFrame) -> list[str]:
    """What the card says of the training patients readers labelled, if any."""
    count = int(from_readers(splits).sum())
    if not count:
        return []
    return [
        f"- {count} training patients were labelled by readers' verdicts on CASS's own answers "
        "(the reading room): their studies were chosen by CASS being used, not by a draw."
    ]


def known_limits(facts: CardFacts) -> list[str]:
    test = int((facts.splits.split == "test").sum())
    limits = [
        f"- Tested on {test} patients of one site ({facts.data_source}): the intervals are wide "
        "and say nothing about another hospital's scanners, exports or reports.",
        f"- Cross-validated figures: {'above' if facts.cross_validation else NOT_MEASURED}. "
        f"External-site figures: {NOT_MEASURED} until `external_validation` adds them below.",
        "- Labels come from rule-based reading of the reports; a report held for review is not "
        "trained on.",
        *reader_limit(facts.splits),
        f"- {PAPER_NOTE}",
    ]
    if facts.calibration.unreliable:
        limits.append(f"- The calibration is {facts.calibration.unreliable}.")
    return limits


def model_card(facts: CardFacts) -> str:
    """The card as Markdown."""
    return "\n".join(
        [
            f"# CASS stenosis model, version {facts.version}",
            "",
            "## Intended use",
            INTENDED_USE,
            "",
            "## Model",
            f"{facts.arch}, {facts.target} outputs, {facts.image_size}-px views"
            + (
                f", a fold ensemble of {facts.members} networks (their mean logits)"
                if facts.members > 1
                else ""
            )
            + f"; MLflow run {facts.run_id}.",
            "",
            f"## Training data ({facts.data_source})",
            *training_table(facts.splits),
            "",
            "## How good, on the test split",
            *figures_table(facts.metrics),
            "",
            *grade_lines(facts.grades),
            "",
            *cross_validation_lines(facts.cross_validation),
            "## Calibration and the referral operating point",
            *calibration_lines(facts.calibration, facts.on_test),
            "",
            "## Known limits",
            *known_limits(facts),
            "",
        ]
    )


def card_tags(facts: CardFacts) -> dict[str, str]:
    """The registry tags that state the card's key facts (searchable in MLflow)."""
    patient = facts.metrics["patient"]
    tags = {
        "intended_use": "second opinion, research; not a diagnosis",
        "data_source": facts.data_source,
        "training_patients": str(int((facts.splits.split == "train").sum())),
        "test_patients": str(int((facts.splits.split == "test").sum())),
        "test_patient_f1_weighted": f"{patient['f1_weighted']:.3f}",
        "calibration_reliable": "no" if facts.calibration.unreliable else "yes",
        "cross_validated": "yes" if facts.cross_validation else "no",
        "ensemble_members": str(facts.members),
        "external_validation": "no",
    }
    if facts.grades is not None:
        kappa = facts.grades["patient"].get("kappa_linear")
        tags["test_cad_rads_kappa_linear"] = "-" if kappa is None else f"{kappa:.3f}"
    return tags


EXTERNAL_HEADING = "## External site"


def with_external(card: str, site: str, patients: int, table: str) -> str:
    """The card with its external-site section (internal and external figures side by
    side), replacing an earlier one."""
    kept = card.split(f"\n{EXTERNAL_HEADING}")[0].rstrip("\n")
    return (
        f"{kept}\n\n{EXTERNAL_HEADING}\n{patients} patients of the site `{site}`, scored from "
        f"their raw export as served and labelled from the site's own reports.\n\n{table}\n"
    )
