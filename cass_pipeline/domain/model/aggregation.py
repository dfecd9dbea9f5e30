"""How a branch's views become one decision: the paper's majority vote, or attention pooling
over the views' embeddings (multiple-instance learning, gated attention as in Ilse et al.,
2018), trained on branch labels: after the view network on its frozen embeddings
(`attention`), or with it (`attention_end_to_end`, in `train`), on the same split.

The attention head learns which views show the lesion, where the vote counts every view the
same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import numpy as np
import pandas as pd
import torch
from torch import nn

from cass_pipeline.domain.anatomy import N_CLASSES
from cass_pipeline.domain.model.config import Aggregation
from cass_pipeline.domain.model.metrics import majority_vote, weighted_f1
from cass_pipeline.domain.model.targets import OutputSpace

AGGREGATIONS = get_args(Aggregation)


class AttentionPooling(nn.Module):
    """Gated attention over a bag of view embeddings (n, d) -> output logits (K,)."""

    def __init__(self, dim: int, outputs: int = N_CLASSES, hidden: int = 64, dropout: float = 0.25):
        super().__init__()
        self.value = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh())
        self.gate = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid())
        self.score = nn.Linear(hidden, 1)
        self.drop = nn.Dropout(dropout)
        self.classify = nn.Linear(dim, outputs)

    def weights(self, bag: torch.Tensor) -> torch.Tensor:
        """Attention weight of each view (summing to 1)."""
        return torch.softmax(self.score(self.value(bag) * self.gate(bag)).squeeze(-1), dim=0)

    def forward(self, bag: torch.Tensor) -> torch.Tensor:
        pooled = (self.weights(bag).unsqueeze(-1) * bag).sum(0)
        return self.classify(self.drop(pooled))


@dataclass(frozen=True)
class Bags:
    """Branches as bags: each one's view embeddings, its class label and its training target
    over the outputs."""

    embeddings: list[np.ndarray]
    labels: np.ndarray
    targets: np.ndarray

    @classmethod
    def of(cls, views: pd.DataFrame, embeddings: np.ndarray, outputs: OutputSpace) -> Bags:
        """Group view rows (patient_id, branch, label, grades) and their embeddings by
        branch."""
        views = views.reset_index(drop=True)
        groups = views.groupby(["patient_id", "branch"], sort=True).indices
        first = views.iloc[[rows[0] for rows in groups.values()]]
        return cls(
            [embeddings[rows] for rows in groups.values()],
            first.label.to_numpy(int),
            outputs.targets(first),
        )


def attention_probabilities(head: AttentionPooling, bag: np.ndarray) -> np.ndarray:
    """Output probabilities (K,) of one branch from its view embeddings."""
    device = next(head.parameters()).device
    with torch.no_grad():
        logits = head.eval()(torch.as_tensor(bag, dtype=torch.float32, device=device))
    return torch.softmax(logits, 0).cpu().numpy()


def branch_outputs(head: AttentionPooling, bags: list[np.ndarray]) -> np.ndarray:
    """The attention head's output (class or grade index) of each bag."""
    return np.array([int(attention_probabilities(head, bag).argmax()) for bag in bags])


def decide_branches(
    views: pd.DataFrame, embeddings: np.ndarray | None, head: AttentionPooling | None
) -> np.ndarray:
    """The output (class or grade) of each view's branch, aligned with `views` (patient_id,
    branch, pred in the model's outputs): the vote of the branch's `pred`, or `head`'s over
    the branch's embeddings."""
    views = views.reset_index(drop=True)
    groups = views.groupby(["patient_id", "branch"], sort=True).indices
    if head is None:
        decisions = [majority_vote(views.pred.to_numpy()[rows]) for rows in groups.values()]
    else:
        decisions = branch_outputs(head, [embeddings[rows] for rows in groups.values()])
    decided = np.empty(len(views), int)
    for rows, value in zip(groups.values(), decisions, strict=True):
        decided[rows] = value
    return decided


def fit_attention(
    train: Bags,
    validation: Bags,
    outputs: OutputSpace,
    seed: int = 7,
    epochs: int = 40,
    lr: float = 1e-3,
) -> tuple[AttentionPooling, float]:
    """Train the head on the training bags (`outputs`' loss, class-balanced), keep the epoch
    with the best validation branch weighted F1; returns the head and that F1."""
    torch.manual_seed(seed)
    head = AttentionPooling(train.embeddings[0].shape[1], outputs.size)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-2)
    counts = np.bincount(train.labels, minlength=N_CLASSES).clip(min=1)
    class_weight = counts.sum() / (N_CLASSES * counts)
    bags = [torch.as_tensor(b, dtype=torch.float32) for b in train.embeddings]
    targets = torch.as_tensor(train.targets)
    generator = torch.Generator().manual_seed(seed)
    best, best_f1 = None, -1.0
    for _ in range(epochs):
        head.train()
        for i in torch.randperm(len(bags), generator=generator).tolist():
            optimizer.zero_grad()
            loss = outputs.loss(head(bags[i]).unsqueeze(0), targets[i : i + 1])
            (loss * float(class_weight[train.labels[i]])).sum().backward()
            optimizer.step()
        decided = outputs.classes_of(branch_outputs(head, validation.embeddings))
        f1 = weighted_f1(validation.labels, decided)
        if f1 > best_f1:
            best, best_f1 = {k: v.clone() for k, v in head.state_dict().items()}, f1
    head.load_state_dict(best)
    return head.eval(), best_f1
