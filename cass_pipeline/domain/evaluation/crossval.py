"""Cross-validated figures: each fold's out-of-fold figures, their mean and spread over the
folds, and the figures of all folds' out-of-fold predictions pooled (nnU-Net reports the
same two)."""

from __future__ import annotations

import numpy as np

from cass_pipeline.domain.model.metrics import LEVELS

KEYS = ("accuracy", "f1_weighted")


def fold_spread(per_fold: list[dict]) -> dict:
    """Per level and figure: mean, standard deviation, lowest and highest over the folds."""
    spread: dict = {}
    for level in LEVELS:
        for key in KEYS:
            values = [f[level][key] for f in per_fold if f[level][key] is not None]
            spread.setdefault(level, {})[key] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "min": float(np.min(values)),
                "max": float(np.max(values)),
                "folds": len(values),
            }
    return spread


def crossval_markdown(per_fold: list[dict], pooled: dict) -> str:
    """The figures per level: each fold, mean +- SD over folds, and pooled out-of-fold."""
    spread = fold_spread(per_fold)
    folds = " | ".join(f"fold {k}" for k in range(len(per_fold)))
    lines = [
        f"| level | figure | {folds} | mean +- SD | pooled (n) |",
        "|---" * (len(per_fold) + 4) + "|",
    ]
    for level in LEVELS:
        for key in KEYS:
            cells = " | ".join(f"{f[level][key]:.3f}" for f in per_fold)
            s = spread[level][key]
            lines.append(
                f"| {level} | {key} | {cells} | {s['mean']:.3f} +- {s['std']:.3f} | "
                f"{pooled[level][key]:.3f} ({pooled[level]['n']}) |"
            )
    return "\n".join(lines)


def logged_figures(per_fold: list[dict], pooled: dict) -> dict[str, float]:
    """The parent run's metrics: cv_<level>_<figure>_mean / _std and cv_pooled_<level>_<figure>."""
    spread = fold_spread(per_fold)
    figures = {}
    for level in LEVELS:
        for key in KEYS:
            figures[f"cv_{level}_{key}_mean"] = spread[level][key]["mean"]
            figures[f"cv_{level}_{key}_std"] = spread[level][key]["std"]
            figures[f"cv_pooled_{level}_{key}"] = pooled[level][key]
    return figures
