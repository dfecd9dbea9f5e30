"""Cross-validated figures: each fold's out-of-fold figures, their mean and spread over the
folds, and the figures of all folds' out-of-fold predictions pooled (nnU-Net reports the
same two), at segment, artery and patient level and, for a grade model, CAD-RADS."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cass_pipeline.domain.evaluation.grades import grade_metrics
from cass_pipeline.domain.model.metrics import LEVELS, evaluate

KEYS = ("accuracy", "f1_weighted")
#: The patient CAD-RADS figures cross-validation reports (`grade_metrics`).
CAD_RADS_KEYS = ("accuracy", "kappa_linear", "rule_out_auc", "hold_out_auc")


def fold_figures(predictions: pd.DataFrame, bootstrap: int = 0, seed: int = 0) -> dict:
    """Segment, artery and patient figures of out-of-fold view predictions (`evaluate`), and
    under `cad_rads` the CAD-RADS figures (None for a three-class model)."""
    return {
        **evaluate(predictions, bootstrap=bootstrap, seed=seed),
        "cad_rads": grade_metrics(predictions, bootstrap, seed),
    }


def figure_rows(figures: dict) -> dict[tuple[str, str], float | None]:
    """One fold's (or the pooled) figures by (level, figure): the levels' accuracy and
    weighted F1, then the patient CAD-RADS figures when there are grades."""
    rows = {(level, key): figures[level][key] for level in LEVELS for key in KEYS}
    grades = figures.get("cad_rads")
    if grades is not None:
        rows |= {("cad_rads", key): grades["patient"][key] for key in CAD_RADS_KEYS}
    return rows


def fold_spread(per_fold: list[dict]) -> dict:
    """Per level and figure: mean, standard deviation, lowest and highest over the folds
    (folds where a figure is undefined, e.g. an AUC without both classes, left out)."""
    spread: dict = {}
    rows = [figure_rows(f) for f in per_fold]
    for level, key in rows[0]:
        values = [r[level, key] for r in rows if r[level, key] is not None]
        spread.setdefault(level, {})[key] = {
            "mean": float(np.mean(values)) if values else None,
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "min": float(np.min(values)) if values else None,
            "max": float(np.max(values)) if values else None,
            "folds": len(values),
        }
    return spread


def shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def crossval_markdown(per_fold: list[dict], pooled: dict) -> str:
    """The figures per level: each fold, mean +- SD over folds, and pooled out-of-fold (with
    its 95% interval when bootstrapped)."""
    spread = fold_spread(per_fold)
    rows, pooled_rows = [figure_rows(f) for f in per_fold], figure_rows(pooled)
    folds = " | ".join(f"fold {k}" for k in range(len(per_fold)))
    lines = [
        f"| level | figure | {folds} | mean +- SD | pooled (n) |",
        "|---" * (len(per_fold) + 4) + "|",
    ]
    for level, key in pooled_rows:
        cells = " | ".join(shown(r[level, key]) for r in rows)
        s = spread[level][key]
        group = pooled["cad_rads"]["patient"] if level == "cad_rads" else pooled[level]
        low_high = group.get("ci95", {}).get(key)
        interval = f" [{low_high[0]:.2f}-{low_high[1]:.2f}]" if low_high else ""
        lines.append(
            f"| {level} | {key} | {cells} | {shown(s['mean'])} +- {s['std']:.3f} | "
            f"{shown(pooled_rows[level, key])}{interval} ({group['n']}) |"
        )
    return "\n".join(lines)


def logged_figures(per_fold: list[dict], pooled: dict) -> dict[str, float]:
    """The parent run's metrics: cv_<level>_<figure>_mean / _std and cv_pooled_<level>_<figure>
    (figures undefined in every fold left out)."""
    spread = fold_spread(per_fold)
    figures = {}
    for (level, key), value in figure_rows(pooled).items():
        s = spread[level][key]
        if s["mean"] is not None:
            figures[f"cv_{level}_{key}_mean"] = s["mean"]
            figures[f"cv_{level}_{key}_std"] = s["std"]
        if value is not None:
            figures[f"cv_pooled_{level}_{key}"] = value
    return figures
