"""What the network predicts: the paper's three classes, or the six CAD-RADS grades (an
ordinal head trained on the report's percent range), and how its outputs become classes.

A grade label is an interval over the grades ("<50%" allows minimal and mild): `grade`
trains on the likelihood of the allowed grades, `soft_grade` on soft ordinal targets (the
allowed grades, and their neighbours with weight exp(-2 d^2) at distance d). A class is the
class of its grade, so the paper's three-class comparison stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import numpy as np
import pandas as pd
import torch

from cass_pipeline.domain.anatomy import CLASS_OF_GRADE, GRADES, N_CLASSES, STENOSIS_CLASSES
from cass_pipeline.domain.model.config import Target

TARGETS = get_args(Target)
#: Probability columns of the grades, in grade order (null for three-class models).
GRADE_PROBABILITY_COLUMNS = [f"p_{grade}" for grade in GRADES]


@dataclass(frozen=True)
class OutputSpace:
    """The network's outputs: their names and the class each stands for."""

    target: str
    names: tuple[str, ...]
    class_of_output: tuple[int, ...]

    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def grades(self) -> bool:
        """Whether the outputs are CAD-RADS grades (else the three classes)."""
        return self.names == GRADES

    @property
    def probability_columns(self) -> list[str]:
        return [f"p_{name}" for name in self.names]

    def classes_of(self, outputs) -> np.ndarray:
        """The class index of each output index."""
        return np.asarray(self.class_of_output)[np.asarray(outputs, int)]

    def class_probabilities(self, probabilities: np.ndarray) -> np.ndarray:
        """Output probabilities (N, K) summed into class probabilities (N, 3)."""
        return np.asarray(probabilities) @ np.eye(N_CLASSES)[list(self.class_of_output)]

    def allowed(self, views: pd.DataFrame) -> np.ndarray:
        """(N, K) bool: the outputs each view's label allows (its class, or its grades from
        `grade_low` to `grade_high`)."""
        if not self.grades:
            return np.eye(N_CLASSES, dtype=bool)[views.label.to_numpy(int)]
        index = np.arange(self.size)
        low = views.grade_low.to_numpy(int)[:, None]
        high = views.grade_high.to_numpy(int)[:, None]
        return (index >= low) & (index <= high)

    def targets(self, views: pd.DataFrame) -> np.ndarray:
        """(N, K) float training targets: the allowed outputs, or under `soft_grade` soft
        ordinal targets summing to 1."""
        allowed = self.allowed(views)
        if self.target != "soft_grade":
            return allowed.astype(np.float32)
        index = np.arange(self.size)
        low = views.grade_low.to_numpy(int)[:, None]
        high = views.grade_high.to_numpy(int)[:, None]
        distance = np.maximum(low - index, 0) + np.maximum(index - high, 0)
        weights = np.exp(-2.0 * distance**2)
        return (weights / weights.sum(1, keepdims=True)).astype(np.float32)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-view loss: -log P(allowed outputs), or the cross-entropy with soft targets."""
        log_p = torch.log_softmax(logits.float(), dim=1)
        if self.target == "soft_grade":
            return -(targets * log_p).sum(1)
        return -torch.logsumexp(log_p.masked_fill(targets <= 0, float("-inf")), dim=1)


OUTPUT_SPACES = {
    "class": OutputSpace("class", STENOSIS_CLASSES, tuple(range(N_CLASSES))),
    "grade": OutputSpace("grade", GRADES, CLASS_OF_GRADE),
    "soft_grade": OutputSpace("soft_grade", GRADES, CLASS_OF_GRADE),
}


def output_space(target: str) -> OutputSpace:
    if target not in OUTPUT_SPACES:
        raise ValueError(f"unknown target {target!r}; choose from {TARGETS}")
    return OUTPUT_SPACES[target]


def output_map(outputs: OutputSpace) -> dict:
    """What each output index stands for, and its class (a registered model's class map)."""
    return {
        "target": outputs.target,
        "outputs": dict(enumerate(outputs.names)),
        "class_of_output": {i: STENOSIS_CLASSES[c] for i, c in enumerate(outputs.class_of_output)},
    }


def interval_nll(probabilities: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """-log of the probability of the allowed outputs, per row (NumPy)."""
    mass = (np.asarray(probabilities, np.float64) * allowed).sum(1)
    return -np.log(np.clip(mass, 1e-12, None))
