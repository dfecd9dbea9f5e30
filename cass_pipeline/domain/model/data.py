"""Views from the memory-mapped image store, with the paper's augmentations."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from cass_pipeline.domain.anatomy import grade_interval
from cass_pipeline.domain.model.config import ViewChannels
from cass_pipeline.domain.model.network import to_model_input

VIEW_CHANNELS = get_args(ViewChannels)


def or_none(value):
    return None if pd.isna(value) else value


def branch_targets(branch_labels: pd.DataFrame) -> pd.DataFrame:
    """The labelled branches: patient_id, branch, label and the grades the label allows
    (`grade_low`, `grade_high`)."""
    labels = branch_labels.dropna(subset=["label"])
    intervals = [
        grade_interval(c, or_none(low), or_none(high))
        for c, low, high in zip(labels.stenosis_class, labels.pct_low, labels.pct_high, strict=True)
    ]
    return labels[["patient_id", "branch", "label"]].assign(
        grade_low=[low for low, _ in intervals], grade_high=[high for _, high in intervals]
    )


def labelled_views(
    manifest: pd.DataFrame, branch_labels: pd.DataFrame, splits: pd.DataFrame, view_step: int = 1
) -> pd.DataFrame:
    """Manifest rows with their branch label, the grades it allows (`grade_low`,
    `grade_high`) and split; unlabelled branches are left out. `view_step` keeps every n-th
    view of each branch."""
    views = manifest.merge(branch_targets(branch_labels), on=["patient_id", "branch"])
    views = views.merge(splits[["patient_id", "split"]], on="patient_id", how="inner")
    views = views[views.view_index % view_step == 0]
    views = views.astype({"label": "int64", "grade_low": "int64", "grade_high": "int64"})
    return views.sort_values(["patient_id", "branch", "view_index"]).reset_index(drop=True)


def transpose(image: torch.Tensor) -> torch.Tensor:
    """Rows for columns (a function of the module, so that a spawned loader worker can load it)."""
    return image.transpose(-1, -2)


def augmentation(image_size: int) -> v2.Compose:
    """Scale, rotate, blur, brightness, transpose (the paper's list) plus the mirror view."""
    return v2.Compose(
        [
            v2.RandomAffine(degrees=10, scale=(0.9, 1.1)),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.2))], p=0.3),
            v2.ColorJitter(brightness=0.2),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.Lambda(transpose)], p=0.2),
            v2.Resize((image_size, image_size), antialias=True),
        ]
    )


def neighbour_rows(views: pd.DataFrame) -> np.ndarray:
    """(N, 3) positions in `views` of each view's previous view, itself and its next view in
    its branch (by `view_index`; a branch's first and last views stand in for the missing)."""
    frame = views.reset_index(drop=True)
    order = frame.sort_values(["patient_id", "branch", "view_index"], kind="stable").index
    order = order.to_numpy()
    branch = frame.loc[order, ["patient_id", "branch"]].astype(str).agg("/".join, axis=1)
    branch = branch.to_numpy()
    same_before = np.r_[False, branch[1:] == branch[:-1]]
    same_after = np.r_[branch[:-1] == branch[1:], False]
    rows = np.empty((len(frame), 3), np.int64)
    rows[order, 0] = np.where(same_before, np.roll(order, 1), order)
    rows[order, 1] = order
    rows[order, 2] = np.where(same_after, np.roll(order, -1), order)
    return rows


def model_views(images: np.ndarray, views: pd.DataFrame, channels: str) -> np.ndarray:
    """Cleaned views (N, H, W) as the network takes them: as they are (`grey`), or each with
    its neighbours as (N, 3, H, W) (`neighbours`, rows of `views` aligned with `images`)."""
    check_channels(channels)
    return images if channels == "grey" else images[neighbour_rows(views)]


def check_channels(channels: str) -> None:
    if channels not in VIEW_CHANNELS:
        raise ValueError(f"unknown view_channels {channels!r}; choose from {VIEW_CHANNELS}")


class ViewDataset(Dataset):
    """(normalised 3xHxW tensor, label) per manifest row, with its training target row when
    `targets` (N, K) are given, and its branch's index when `bags` (N,) are; the channels
    hold the view, or it and its neighbours (`channels`, as `model_views`); stores opened
    lazily per worker."""

    def __init__(
        self,
        views: pd.DataFrame,
        store_root: Path,
        augment: bool = False,
        targets: np.ndarray | None = None,
        bags: np.ndarray | None = None,
        channels: str = "grey",
    ):
        check_channels(channels)
        self.channel_rows = neighbour_rows(views) if channels == "neighbours" else None
        self.targets = None if targets is None else torch.as_tensor(targets)
        self.bags = None if bags is None else torch.tensor(bags, dtype=torch.long)
        self.paths = views.store_path.to_numpy()
        self.indices = views.store_index.to_numpy()
        labels = views.label.to_numpy().copy() if "label" in views else np.zeros(len(views))
        self.labels = torch.as_tensor(labels, dtype=torch.long)  # unlabelled views: 0
        self.root = Path(store_root)
        self.size = int(views["size"].iloc[0]) if len(views) else 0
        self.transform = augmentation(self.size) if augment else None
        self._stores: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        path = self.paths[i]
        if path not in self._stores:
            self._stores[path] = np.load(self.root / path, mmap_mode="r")
        return np.array(self._stores[path][self.indices[i]])

    def model_image(self, i: int) -> np.ndarray:
        """View `i` as the network takes it: (H, W), or (3, H, W) with its neighbours."""
        if self.channel_rows is None:
            return self.image(i)
        return np.stack([self.image(j) for j in self.channel_rows[i]])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        tensor = torch.from_numpy(self.model_image(i)).float().div_(255.0)
        tensor = tensor if tensor.ndim == 3 else tensor.unsqueeze(0)
        if self.transform is not None:
            tensor = self.transform(tensor).clamp_(0, 1)
        tensor = to_model_input(tensor.unsqueeze(0))[0]
        if self.targets is None:
            return tensor, self.labels[i]
        if self.bags is None:
            return tensor, self.labels[i], self.targets[i]
        return tensor, self.labels[i], self.targets[i], self.bags[i]


def branch_bags(views: pd.DataFrame) -> np.ndarray:
    """The index of each view's branch (patient_id, branch), aligned with `views`."""
    return views.groupby(["patient_id", "branch"], sort=True).ngroup().to_numpy()


class BalancedSampler(Sampler[int]):
    """Draws views with probability inversely proportional to their class frequency; the
    same seed and epoch give the same order; under DDP each rank takes its own shard."""

    def __init__(self, labels: torch.Tensor, seed: int, rank: int = 0, world_size: int = 1):
        counts = torch.bincount(labels, minlength=3).clamp(min=1).double()
        self.weights = (1.0 / counts)[labels]
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.per_rank = len(labels) // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        drawn = torch.multinomial(
            self.weights, self.per_rank * self.world_size, True, generator=generator
        )
        return iter(drawn[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank


class ShuffledSampler(Sampler[int]):
    """A seeded permutation per epoch, sharded by rank (class weights handle imbalance)."""

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.epoch = 0
        self.per_rank = n // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(self.n, generator=generator)[: self.per_rank * self.world_size]
        return iter(order[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank


class BagBatchSampler(Sampler[list[int]]):
    """Batches of whole branches for multiple-instance training: each batch the views of
    `bags_per_batch` branches, drawn by `sampler` (over branches, class-balanced by the branch
    label or shuffled; seeded per epoch, each DDP rank its own share)."""

    def __init__(
        self,
        bags: np.ndarray,
        labels: torch.Tensor,
        bags_per_batch: int,
        balanced: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        order = np.argsort(bags, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(bags[order]) != 0])
        self.rows = np.split(order, starts[1:])
        first = torch.as_tensor([int(labels[rows[0]]) for rows in self.rows])
        self.sampler = (
            BalancedSampler(first, seed, rank, world_size)
            if balanced
            else ShuffledSampler(len(self.rows), seed, rank, world_size)
        )
        self.bags_per_batch = bags_per_batch

    def __iter__(self):
        drawn = list(self.sampler)
        for start in range(0, len(drawn), self.bags_per_batch):
            chosen = drawn[start : start + self.bags_per_batch]
            yield np.concatenate([self.rows[b] for b in chosen]).tolist()

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.bags_per_batch)
