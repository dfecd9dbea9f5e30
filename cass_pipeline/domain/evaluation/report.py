"""A model's evaluation on the test split, whole: metrics per level with the vote beside the
model's own aggregation, calibration and operating point, the patient ranking, and how it
renders (Markdown tables, confusion matrices, reliability diagram)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa

from cass_pipeline.domain.evaluation.grades import grade_markdown, grade_metrics
from cass_pipeline.domain.model.calibration import Calibration, calibration_report, patient_ranking
from cass_pipeline.domain.model.metrics import LEVELS, PAPER_NOTE, PAPER_TABLE2, evaluate
from cass_pipeline.domain.model.targets import OutputSpace
from cass_pipeline.domain.plots import figure_png, pyplot

#: The test patients by significance score, as a triage worklist would order them.
RANKING_SCHEMA = pa.schema(
    [
        ("rank", pa.int32()),
        ("patient_id", pa.string()),
        ("score", pa.float64()),
        ("refer", pa.bool_()),
        ("cad_rads", pa.string()),
        ("significant", pa.bool_()),
    ]
)
#: Metrics of each level logged on the training run.
METRIC_KEYS = ("accuracy", "f1_weighted")
#: Operating-point figures and the names they are logged under.
TRIAGE_METRICS = {
    "ece_before": "test_ece_before",
    "ece_after": "test_ece_after",
    "sensitivity": "test_referral_sensitivity",
    "specificity": "test_referral_specificity",
    "roc_auc": "test_patient_roc_auc",
}


def vote_views(predictions: pd.DataFrame) -> pd.DataFrame:
    """Predictions without the model's branch decisions: evaluation falls back to the vote."""
    return predictions.drop(columns="branch_pred")


@dataclass(frozen=True)
class EvaluationReport:
    """What evaluating one model's test predictions gives."""

    metrics: dict
    vote: dict
    on_test: dict
    all_healthy: dict
    calibration: Calibration
    aggregation: str
    ranking: pd.DataFrame
    grades: dict | None = None

    def document(self, version: int, run_id: str) -> dict:
        """evaluation.json: what promotion and later readers need."""
        return {
            "model_version": version,
            "run_id": run_id,
            "metrics": self.metrics,
            "aggregation": self.aggregation,
            "vote_metrics": self.vote,
            "calibration": self.calibration.to_json(),
            "calibration_test": self.on_test,
            "cad_rads": self.grades,
        }

    def logged_metrics(self) -> dict:
        """Metrics for the training run (None ones are left out when logged)."""
        metrics, vote, on_test = self.metrics, self.vote, self.on_test
        return (
            {f"test_{level}_{key}": metrics[level][key] for level in LEVELS for key in METRIC_KEYS}
            | {f"test_{level}_f1_weighted_vote": vote[level]["f1_weighted"] for level in LEVELS}
            | {name: on_test[key] for key, name in TRIAGE_METRICS.items()}
            | self.logged_grade_metrics()
        )

    def logged_grade_metrics(self) -> dict:
        if self.grades is None:
            return {}
        patient, branch = self.grades["patient"], self.grades["branch"]
        return {
            "test_cad_rads_kappa_linear": patient["kappa_linear"],
            "test_cad_rads_accuracy": patient["accuracy"],
            "test_rule_out_auc": patient["rule_out_auc"],
            "test_hold_out_auc": patient["hold_out_auc"],
            "test_branch_grade_accuracy": branch["grade_accuracy"],
            "test_branch_grade_mae": branch["mean_absolute_grade_error"],
        }

    def artifacts(self, document: dict) -> dict[str, bytes]:
        return {
            "evaluation.json": json.dumps(document).encode(),
            "confusion.png": self.confusion_png,
            "reliability.png": self.reliability_png,
            "patient_ranking.csv": self.ranking.to_csv(index=False).encode(),
            "table.md": (
                f"{self.metrics_markdown}\n\n{self.grade_markdown}\n\n{self.triage_markdown}\n"
            ).encode(),
        }

    @cached_property
    def metrics_markdown(self) -> str:
        return metrics_markdown(self.metrics)

    @cached_property
    def grade_markdown(self) -> str:
        return grade_markdown(self.grades)

    @cached_property
    def triage_markdown(self) -> str:
        return triage_markdown(self.calibration, self.on_test)

    @cached_property
    def confusion_png(self) -> bytes:
        return confusion_png(self.metrics)

    @cached_property
    def reliability_png(self) -> bytes:
        return reliability_png(self.on_test)

    @cached_property
    def aggregation_markdown(self) -> str:
        """Weighted F1 per level with the model's aggregation beside the paper's vote."""
        lines = ["| level | this model | majority vote |", "|---|---|---|"]
        for level in LEVELS:
            ours, voted = self.metrics[level]["f1_weighted"], self.vote[level]["f1_weighted"]
            lines.append(f"| {level} | {ours:.3f} | {voted:.3f} |")
        return "\n".join(lines)


def evaluate_model(
    predictions: pd.DataFrame,
    calibration: Calibration,
    aggregation: str,
    outputs: OutputSpace,
    bootstrap: int,
) -> EvaluationReport:
    """Evaluate test predictions (with their `branch_pred`, and grades from a grade model) of
    a model calibrated so, deciding branches by `aggregation` over `outputs`."""
    return EvaluationReport(
        metrics=evaluate(predictions, bootstrap),
        vote=evaluate(vote_views(predictions), bootstrap=0),
        on_test=calibration_report(predictions, calibration, outputs),
        all_healthy=evaluate(vote_views(predictions).assign(pred=0), bootstrap=0),
        calibration=calibration,
        aggregation=aggregation,
        ranking=patient_ranking(predictions, calibration)[RANKING_SCHEMA.names],
        grades=grade_metrics(predictions, bootstrap),
    )


def metrics_markdown(metrics: dict) -> str:
    lines = [
        "| level | n | accuracy (95% CI) | weighted F1 (95% CI) | paper acc / F1 | "
        "diagonal no / non-sig / sig | significant called no_stenosis |",
        "|---|---|---|---|---|---|---|",
    ]
    for level in LEVELS:
        m = metrics[level]
        ci = m.get("ci95", {})
        acc_ci = "–".join(f"{v:.2f}" for v in ci.get("accuracy", []))
        f1_ci = "–".join(f"{v:.2f}" for v in ci.get("f1_weighted", []))
        diagonal = " / ".join(f"{m['confusion_matrix'][k][k]:.2f}" for k in range(3))
        missed = m["significant_called_no_stenosis"]
        paper = PAPER_TABLE2[level]
        lines.append(
            f"| {level} | {m['n']} | {m['accuracy']:.3f} ({acc_ci}) | "
            f"{m['f1_weighted']:.3f} ({f1_ci}) | {paper[0]:.2f} / {paper[1]:.2f} | "
            f"{diagonal} | {'-' if missed is None else f'{missed:.2f}'} |"
        )
    return "\n".join([*lines, "", PAPER_NOTE])


def triage_markdown(calibration: Calibration, on_test: dict) -> str:
    """Calibration error before and after, and the operating point on validation and test."""
    threshold = calibration.referral_threshold
    fitted = calibration.validation or {}

    def rate(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    return "\n".join(
        [
            f"Temperature {calibration.temperature:.3f} ({calibration.fitted_on}); referral "
            "threshold on patient P(significant) "
            + ("none (refers by class)" if threshold is None else f"{threshold:.3f}")
            + f", chosen for sensitivity >= {calibration.target_sensitivity:.2f}."
            + (f" **Not reliable: {calibration.unreliable}.**" if calibration.unreliable else ""),
            "",
            "| split | patients (significant) | ECE before | ECE after | sensitivity | "
            "specificity | ROC AUC |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {name} | {m.get('patients', '-')} ({m.get('significant_patients', '-')}) | "
                f"{rate(m.get('ece_before'))} | {rate(m.get('ece_after'))} | "
                f"{rate(m.get('sensitivity'))} | {rate(m.get('specificity'))} | "
                f"{rate(m.get('roc_auc'))} |"
                for name, m in (("validation", fitted), ("test", on_test))
            ),
        ]
    )


def confusion_png(metrics: dict) -> bytes:
    """Confusion matrices of the three levels: the share of each true class (colour, first
    line) and the count (second line), so that a share of a handful of cases shows as such."""
    fig, axes = pyplot().subplots(1, 3, figsize=(11, 3.8))
    short = ["no", "non-sig", "sig"]
    for axis, level in zip(axes, LEVELS, strict=True):
        matrix = np.array(metrics[level]["confusion_matrix"])
        counts = np.array(metrics[level]["confusion_counts"])
        axis.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            colour = "white" if value > 0.5 else "black"
            label = f"{value:.2f}\n({counts[i, j]})"
            axis.text(j, i, label, ha="center", va="center", color=colour, fontsize=9)
        axis.set(
            xticks=range(3),
            yticks=range(3),
            xticklabels=short,
            yticklabels=short,
            xlabel="predicted",
            ylabel="truth",
            title=f"{level} (n={metrics[level]['n']})",
        )
    fig.tight_layout()
    return figure_png(fig)


def reliability_png(on_test: dict) -> bytes:
    """Accuracy against confidence per bin, before and after temperature scaling, each
    calibrated point labelled with its number of views, and the views per bin below: a bin
    of three views says little."""
    fig, (axis, below) = pyplot().subplots(
        2, 1, figsize=(4.4, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for when, style in (("before", "o--"), ("after", "s-")):
        table = pd.DataFrame(on_test[f"reliability_{when}"]).dropna()
        ece = on_test[f"ece_{when}"]
        axis.plot(table.confidence, table.accuracy, style, label=f"{when} (ECE {ece:.3f})")
    after = pd.DataFrame(on_test["reliability_after"])
    for row in after.dropna().itertuples():
        axis.annotate(f"{row.count}", (row.confidence, row.accuracy), fontsize=7,
                      textcoords="offset points", xytext=(3, -9))  # fmt: skip
    axis.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    axis.set_title("test views: reliability (n views per point)", fontsize=10)
    axis.legend(fontsize=8)
    width = 1 / max(1, len(after))
    below.bar(after.bin_low + width / 2, after["count"], width=width * 0.9, color="tab:blue")
    below.set(xlabel="confidence (top class)", ylabel="views")
    fig.tight_layout()
    return figure_png(fig)


def paper_comparison_lines(metrics: dict) -> list[str]:
    """Accuracy and weighted F1 per level beside the paper's (`cass evaluate`)."""
    lines = [f"{'level':<9}{'n':>5}{'accuracy':>10}{'F1 (w)':>9}   paper acc / F1"]
    for level in LEVELS:
        m, paper = metrics[level], PAPER_TABLE2[level]
        lines.append(
            f"{level:<9}{m['n']:>5}{m['accuracy']:>10.3f}{m['f1_weighted']:>9.3f}   "
            f"{paper[0]:.2f} / {paper[1]:.2f}"
        )
    return lines
