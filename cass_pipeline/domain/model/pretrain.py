"""Self-supervised pretraining of the view network on unlabelled views (SimCLR, Chen et al.
2020): two augmentations of each view are pulled together and pushed from the rest of the
batch (NT-Xent). Hospitals hold far more exports than parsed reports, and ImageNet weights
cannot be downloaded here; the weights it writes start training as `weights: <path>`.

The views are those of every patient outside the test split, labelled or not (a report held
for review, or none at all, still gives views).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from cass_pipeline.domain.model.config import PretrainSettings
from cass_pipeline.domain.model.data import ViewDataset, augmentation
from cass_pipeline.domain.model.network import build_model, embed, to_model_input
from cass_pipeline.domain.storage import atomic_path


def unlabelled_views(manifest: pd.DataFrame, splits: pd.DataFrame, view_step: int) -> pd.DataFrame:
    """Manifest rows of every patient not in the test split (a patient without a split, e.g.
    without a usable report, included); every `view_step`-th view of a branch."""
    tested = set(splits.patient_id[splits.split == "test"])
    views = manifest[~manifest.patient_id.isin(tested) & (manifest.view_index % view_step == 0)]
    return views.sort_values(["patient_id", "branch", "view_index"]).reset_index(drop=True)


class TwoViews(Dataset):
    """Two independent augmentations of each stored view (a random crop, then the training
    augmentations), normalised as the network takes them."""

    def __init__(self, views: pd.DataFrame, store_root: Path):
        self.store = ViewDataset(views, store_root)
        size = self.store.size
        self.transform = v2.Compose(
            [v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True), augmentation(size)]
        )

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        tensor = torch.from_numpy(self.store.image(i)).float().div_(255.0).unsqueeze(0)
        first, second = (self.transform(tensor).clamp_(0, 1) for _ in range(2))
        return to_model_input(first)[0], to_model_input(second)[0]


def nt_xent(projections: torch.Tensor, temperature: float) -> torch.Tensor:
    """The SimCLR loss of 2N projections, rows k and k + N being two views of one image."""
    z = nn.functional.normalize(projections, dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    n = len(z) // 2
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return nn.functional.cross_entropy(similarity, partner)


@dataclass(frozen=True)
class PretrainResult:
    weights: Path
    views: int
    losses: list[float]


def pretrain(
    views: pd.DataFrame, store_root: Path, settings: PretrainSettings, out: Path
) -> PretrainResult:
    """SimCLR on `views`; writes the network's state dict (its head untrained) to `out`
    atomically and returns the mean loss of each epoch."""
    torch.manual_seed(settings.seed)
    model = build_model(settings.arch, "none").model
    dim = embed(model.eval(), torch.zeros(2, 3, 64, 64)).shape[1]
    projector = nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, 128))
    parameters = [*model.parameters(), *projector.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=settings.lr, weight_decay=1e-6)
    pairs = TwoViews(views, store_root)
    losses = []
    for epoch in range(settings.epochs):
        model.train()
        generator = torch.Generator().manual_seed(settings.seed * 1000 + epoch)
        loader = DataLoader(
            pairs, batch_size=settings.batch_size, shuffle=True, drop_last=True, generator=generator
        )
        epoch_losses = []
        for first, second in loader:
            loss = nt_xent(
                projector(embed(model, torch.cat([first, second]))), settings.temperature
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_losses.append(loss.item())
        losses.append(float(np.mean(epoch_losses)) if epoch_losses else float("nan"))
    with atomic_path(out, suffix=".pt") as tmp:
        torch.save(model.state_dict(), tmp)
    return PretrainResult(out, len(views), losses)
