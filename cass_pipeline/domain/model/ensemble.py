"""A fold ensemble as one model: K networks trained by K-fold cross-validation, each on the
other folds' patients, served together (nnU-Net's default).

Members are averaged in logit space, as test-time augmentation averages its views: the mean
of the members' logits is a normalised geometric mean of their probabilities, and it commutes
with the ensemble's one temperature, so calibrating before or after averaging is the same.
Embeddings are the members' side by side; the ensemble head gives each member's attention
head its own part and averages their logits.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cass_pipeline.domain.model.aggregation import AttentionPooling
from cass_pipeline.domain.model.inference import CPU, Engine, TorchEngine


class EnsembleEngine:
    """Member engines as one: mean logits, embeddings concatenated member by member."""

    def __init__(self, members: list[Engine]):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = members
        self.name = f"{members[0].name} x{len(members)}"

    def logits(self, images: np.ndarray) -> np.ndarray:
        return np.mean([member.logits(images) for member in self.members], axis=0)

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scored = [member.outputs(images) for member in self.members]
        return (
            np.mean([logits for logits, _ in scored], axis=0),
            np.concatenate([embeddings for _, embeddings in scored], axis=1),
        )


class NetworkEnsemble(nn.Module):
    """The members' PyTorch networks: `forward` gives their mean logits (what Integrated
    Gradients explain)."""

    def __init__(self, networks: list[nn.Module]):
        super().__init__()
        self.networks = nn.ModuleList(networks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([network(images) for network in self.networks]).mean(0)


class EnsembleHead(nn.Module):
    """The members' attention heads over the ensemble's concatenated view embeddings (n, K*D):
    each reads its member's D columns; their logits are averaged."""

    def __init__(self, heads: list[AttentionPooling]):
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.widths = [head.classify.in_features for head in heads]

    def forward(self, bag: torch.Tensor) -> torch.Tensor:
        parts = torch.split(bag, self.widths, dim=-1)
        logits = [head(part) for head, part in zip(self.heads, parts, strict=True)]
        return torch.stack(logits).mean(0)


def torch_engine(network: nn.Module, device: torch.device = CPU) -> Engine:
    """A PyTorch engine for one network or for a `NetworkEnsemble` (one engine per member)."""
    if isinstance(network, NetworkEnsemble):
        return EnsembleEngine([TorchEngine(member, device) for member in network.networks])
    return TorchEngine(network, device)


def members_of(network: nn.Module) -> list[nn.Module]:
    """The networks a model is made of: an ensemble's members, else the network itself."""
    return list(network.networks) if isinstance(network, NetworkEnsemble) else [network]


def heads_of(head: nn.Module | None, members: int) -> list[nn.Module | None]:
    """Each member's attention head (None for every member of a voting model)."""
    if head is None:
        return [None] * members
    return list(head.heads) if isinstance(head, EnsembleHead) else [head]
