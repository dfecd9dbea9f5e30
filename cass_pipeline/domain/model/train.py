"""Training: Adam, gradient accumulation, early stopping on validation branch-level weighted F1,
checkpoints every epoch (a killed run resumes to the same result), single process or DDP.

Views learn their branch's label one by one; under `aggregation: attention_end_to_end` the
batches are whole branches and the attention head learns with the network (multiple-instance
learning: the label belongs to the branch), the view head still trained beside it.

Every epoch is seeded by (seed, epoch) alone, so a resumed run replays exactly what an
uninterrupted one would have done. Under `torchrun` (WORLD_SIZE > 1) the same function runs
with DistributedDataParallel (nccl on GPUs, gloo on CPU); rank 0 writes checkpoints.
The test split is never read here.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, DataLoader

from cass_pipeline.domain.anatomy import N_CLASSES
from cass_pipeline.domain.device import training_threads
from cass_pipeline.domain.model.aggregation import AGGREGATIONS, AttentionPooling, decide_branches
from cass_pipeline.domain.model.config import END_TO_END, TrainConfig
from cass_pipeline.domain.model.data import (
    BagBatchSampler,
    BalancedSampler,
    ShuffledSampler,
    ViewDataset,
    branch_bags,
)
from cass_pipeline.domain.model.inference import TorchEngine, view_outputs
from cass_pipeline.domain.model.metrics import branch_level, weighted_f1
from cass_pipeline.domain.model.network import build_model, classify, embed, embedding_size
from cass_pipeline.domain.model.targets import OutputSpace, interval_nll, output_space
from cass_pipeline.domain.storage import atomic_path


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_view_accuracy: float
    val_branch_f1: float
    seconds: float
    images_per_s: float


@dataclass
class TrainResult:
    model: nn.Module
    weights_used: str
    best_epoch: int
    best_val_branch_f1: float
    history: list[EpochRecord] = field(default_factory=list)
    stopped_early: bool = False
    resumed_from_epoch: int | None = None
    #: The attention head trained end to end with the network (else None).
    head: AttentionPooling | None = None


def distributed_context() -> tuple[int, int]:
    """(rank, world size), initialising the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def loader_workers(config: TrainConfig) -> int:
    """The data-loader processes to start: none in a daemonic process (a Dask worker's), which
    may not start processes; the views are then loaded inline."""
    return 0 if multiprocessing.current_process().daemon else config.num_workers


def pick_device(config: TrainConfig, rank: int) -> torch.device:
    """The device to train on; on the CPU, its threads sized with the data-loader workers."""
    if config.device != "auto":
        device = torch.device(config.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", rank % torch.cuda.device_count())
    else:
        device = torch.device("cpu")
    threads = training_threads(loader_workers(config)) if device.type == "cpu" else None
    if threads:
        torch.set_num_threads(threads)
    return device


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of `epoch`: constant, or a cosine from `lr` towards 0 over `epochs`
    (a function of the epoch alone, so a resumed run continues the same curve)."""
    if config.lr_schedule == "constant":
        return config.lr
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
    raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}; choose constant or cosine")


class CheckpointMismatchError(ValueError):
    """A checkpoint written under other training settings."""


@dataclass
class Checkpoint:
    """The state at the end of an epoch: enough to resume exactly where the run stopped."""

    model: dict
    optimizer: dict
    scaler: dict
    epoch: int
    best_f1: float
    best_epoch: int
    history: list[EpochRecord]
    config_fingerprint: str
    finished: bool
    head: dict | None = None

    def save(self, path: Path) -> None:
        state = {name: getattr(self, name) for name in self.__dataclass_fields__}
        state["history"] = [asdict(h) for h in self.history]
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> Checkpoint:
        """The checkpoint at `path`; `CheckpointMismatchError` when it was written under other
        settings (their fingerprints differ)."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state["config_fingerprint"] != fingerprint:
            raise CheckpointMismatchError(
                f"{path} was written under settings {state['config_fingerprint']}, "
                f"not {fingerprint}"
            )
        state["history"] = [EpochRecord(**h) for h in state["history"]]
        return cls(**state)


def unfinished_checkpoint(path: Path, fingerprint: str) -> Checkpoint | None:
    """The interrupted run to continue: a checkpoint of these settings that did not finish."""
    if not path.is_file():
        return None
    try:
        checkpoint = Checkpoint.load(path, fingerprint)
    except CheckpointMismatchError:
        return None
    return None if checkpoint.finished else checkpoint


@dataclass(frozen=True)
class TargetLoss:
    """The output space's loss, averaged over the batch; under `class_weights` each view
    weighs by the inverse frequency of its class."""

    outputs: OutputSpace
    class_weight: torch.Tensor | None

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        losses = self.outputs.loss(logits, targets)
        if self.class_weight is None:
            return losses.mean()
        weight = self.class_weight[labels]
        return (losses * weight).sum() / weight.sum()


def build_loss(config: TrainConfig, train_labels: torch.Tensor, device) -> TargetLoss:
    """The loss of `config.target`, weighted by inverse class frequency under `class_weights`."""
    weight = None
    if config.imbalance == "class_weights":
        counts = torch.bincount(train_labels, minlength=N_CLASSES).clamp(min=1).float()
        weight = (counts.sum() / (N_CLASSES * counts)).to(device)
    return TargetLoss(output_space(config.target), weight)


def build_sampler(config: TrainConfig, train_labels: torch.Tensor, rank: int, world: int):
    """Class-balanced draws under `sampler`, else a plain shuffle; this rank's share."""
    if config.imbalance == "sampler":
        return BalancedSampler(train_labels, config.seed, rank, world)
    return ShuffledSampler(len(train_labels), config.seed, rank, world)


class BagNetwork(nn.Module):
    """The network and an attention head trained together: views in, their logits and the
    logits of each branch (`bags`, consecutive indices) out."""

    def __init__(self, network: nn.Module, head: AttentionPooling):
        super().__init__()
        self.network, self.head = network, head

    def forward(self, images: torch.Tensor, bags: torch.Tensor):
        embeddings = embed(self.network, images)
        _, members = torch.unique_consecutive(bags, return_inverse=True)
        pooled = [self.head(embeddings[members == b]) for b in range(int(members.max()) + 1)]
        return classify(self.network, embeddings), torch.stack(pooled), members


@dataclass
class Trainer:
    """The network (and an end-to-end attention head), its optimiser and how one epoch
    feeds it."""

    config: TrainConfig
    model: nn.Module  # DDP-wrapped under torchrun; a BagNetwork when trained end to end
    core: nn.Module  # the bare network (what is saved and evaluated)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: TargetLoss
    device: torch.device
    use_amp: bool
    head: AttentionPooling | None = None

    def batch_loss(self, batch: list[torch.Tensor]) -> torch.Tensor:
        """The views' loss, plus under end-to-end training their branches' (each branch's
        target is that of its views)."""
        images, labels, targets, *bags = (t.to(self.device, non_blocking=True) for t in batch)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, enabled=self.use_amp):
            if not bags:
                return self.loss_fn(self.model(images), labels, targets)
            logits, bag_logits, members = self.model(images, bags[0])
        starts = torch.ones_like(members, dtype=torch.bool)
        starts[1:] = members[1:] != members[:-1]
        bag_loss = self.loss_fn.outputs.loss(bag_logits, targets[starts]).mean()
        return self.loss_fn(logits, labels, targets) + bag_loss

    def train_one_epoch(self, loader: DataLoader, lr: float) -> tuple[float, int]:
        """One pass over `loader` at `lr`; (summed loss, images seen) on this rank."""
        config, optimizer = self.config, self.optimizer
        for group in optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        total, seen = 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(loader):
            loss = self.batch_loss(batch)
            self.scaler.scale(loss / config.accumulation_steps).backward()
            if (step + 1) % config.accumulation_steps == 0 or step + 1 == len(loader):
                self.scaler.step(optimizer)
                self.scaler.update()
                optimizer.zero_grad(set_to_none=True)
            total += loss.item() * len(batch[0])
            seen += len(batch[0])
        return total, seen

    def checkpoint(self, epoch: int, best: tuple[float, int], history, finished: bool):
        return Checkpoint(
            self.core.state_dict(),
            self.optimizer.state_dict(),
            self.scaler.state_dict(),
            epoch,
            *best,
            list(history),
            self.config.fingerprint(),
            finished,
            None if self.head is None else self.head.state_dict(),
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        self.core.load_state_dict(checkpoint.model)
        if self.head is not None:
            self.head.load_state_dict(checkpoint.head)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.scaler.load_state_dict(checkpoint.scaler)


def build_trainer(
    config: TrainConfig, train_labels: torch.Tensor, device, world: int
) -> tuple[Trainer, str]:
    """The seeded network on `device` (with its attention head under end-to-end training;
    DDP when `world` > 1), Adam, the loss; and which weights it started from."""
    torch.manual_seed(config.seed)
    outputs = output_space(config.target)
    built = build_model(config.arch, config.weights, outputs.size)
    core = built.model.to(device)
    if config.channels_last:
        core = core.to(memory_format=torch.channels_last)
    head, model = None, core
    if config.aggregation == END_TO_END:
        head = AttentionPooling(embedding_size(core), outputs.size).to(device)
        model = BagNetwork(core, head)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    use_amp = config.amp and device.type == "cuda"
    trainer = Trainer(
        config,
        model,
        core,
        torch.optim.Adam(model.parameters(), lr=config.lr),
        torch.amp.GradScaler("cuda", enabled=use_amp),
        build_loss(config, train_labels, device),
        device,
        use_amp,
        head,
    )
    return trainer, built.weights_used


def validate(
    trainer: Trainer, val_views: pd.DataFrame, store_root: Path, outputs: OutputSpace
) -> tuple[float, float, float]:
    """(loss: -log P(the label's outputs), view class accuracy, branch-level weighted F1 of
    the vote, or of the end-to-end head) on the validation views."""
    engine = TorchEngine(trainer.core, trainer.device)
    probabilities, embeddings = view_outputs(
        engine, val_views, store_root, trainer.config.view_channels, trainer.config.batch_size
    )
    loss = float(interval_nll(probabilities, outputs.allowed(val_views)).mean())
    voted = val_views.assign(pred=probabilities.argmax(1))
    classes = outputs.classes_of(voted.pred)
    head = None if trainer.head is None else trainer.head.eval()
    decided = outputs.classes_of(decide_branches(voted, embeddings, head))
    branches = branch_level(voted.assign(pred=classes, branch_pred=decided))
    accuracy = float((classes == val_views.label.to_numpy()).mean())
    return loss, accuracy, weighted_f1(branches.label, branches.pred)


def split_views(views: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and validation rows; the test split must never be here."""
    if (views.split == "test").any():
        raise ValueError("the test split must not reach training")
    train_views = views[views.split == "train"].reset_index(drop=True)
    val_views = views[views.split == "validation"].reset_index(drop=True)
    if train_views.empty or val_views.empty:
        raise ValueError(
            f"need train and validation views, got {len(train_views)} and {len(val_views)}"
        )
    return train_views, val_views


def training_batches(
    config: TrainConfig,
    train_views: pd.DataFrame,
    train_labels: torch.Tensor,
    store_root: Path,
    rank: int,
    world: int,
) -> tuple[ViewDataset, BatchSampler | BagBatchSampler]:
    """The training views and their batches (each drawn by its `sampler`): `batch_size`
    views, class-balanced or shuffled, or under end-to-end training whole branches, about
    `batch_size` views a batch."""
    targets = output_space(config.target).targets(train_views)
    if config.aggregation != END_TO_END:
        sampler = build_sampler(config, train_labels, rank, world)
        dataset = ViewDataset(train_views, store_root, True, targets, None, config.view_channels)
        return dataset, BatchSampler(sampler, config.batch_size, drop_last=False)
    bags = branch_bags(train_views)
    views_per_bag = int(np.bincount(bags).mean())
    batches = BagBatchSampler(
        bags,
        train_labels,
        max(1, config.batch_size // views_per_bag),
        config.imbalance == "sampler",
        config.seed,
        rank,
        world,
    )
    dataset = ViewDataset(train_views, store_root, True, targets, bags, config.view_channels)
    return dataset, batches


def epoch_loader(
    dataset: ViewDataset,
    batches: BatchSampler | BagBatchSampler,
    config: TrainConfig,
    epoch: int,
    device: torch.device,
) -> DataLoader:
    """This epoch's batches, seeded by (seed, epoch) alone so that a resumed run replays them."""
    torch.manual_seed(config.seed * 1000 + epoch)
    batches.sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_sampler=batches,
        generator=torch.Generator().manual_seed(config.seed * 1000 + epoch),
        num_workers=loader_workers(config),
        persistent_workers=False,
        pin_memory=device.type == "cuda",
    )


def train(
    config: TrainConfig,
    views: pd.DataFrame,
    store_root: Path,
    checkpoint_dir: Path,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train on the 'train' rows of `views`, select on the 'validation' rows."""
    if config.aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {config.aggregation!r}; choose {AGGREGATIONS}")
    rank, world = distributed_context()
    device = pick_device(config, rank)
    train_views, val_views = split_views(views)
    train_labels = torch.as_tensor(train_views.label.to_numpy().copy())
    trainer, weights_used = build_trainer(config, train_labels, device, world)
    train_set, batches = training_batches(
        config, train_views, train_labels, store_root, rank, world
    )
    outputs = output_space(config.target)

    last_path, best_path = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
    history: list[EpochRecord] = []
    start_epoch, best_f1, best_epoch, resumed = 0, -1.0, -1, None
    interrupted = unfinished_checkpoint(last_path, config.fingerprint())
    if interrupted is not None:
        trainer.restore(interrupted)
        history, resumed = interrupted.history, interrupted.epoch
        start_epoch, best_f1, best_epoch = resumed + 1, interrupted.best_f1, interrupted.best_epoch

    started = time.monotonic()
    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        tick = time.monotonic()
        loader = epoch_loader(train_set, batches, config, epoch, device)
        total, seen = trainer.train_one_epoch(loader, epoch_lr(config, epoch))
        train_seconds = time.monotonic() - tick
        val_loss, val_accuracy, val_f1 = validate(trainer, val_views, store_root, outputs)
        record = EpochRecord(
            epoch=epoch,
            train_loss=total / max(1, seen),
            val_loss=val_loss,
            val_view_accuracy=val_accuracy,
            val_branch_f1=val_f1,
            seconds=time.monotonic() - tick,
            images_per_s=seen * world / max(train_seconds, 1e-9),
        )
        history.append(record)
        improved = record.val_branch_f1 > best_f1
        if improved:
            best_f1, best_epoch = record.val_branch_f1, epoch
        out_of_patience = epoch - best_epoch >= config.patience
        out_of_time = (
            config.time_budget_s is not None and time.monotonic() - started > config.time_budget_s
        )
        finished = out_of_patience or out_of_time or epoch + 1 == config.epochs
        if rank == 0:
            if improved:
                save_best(best_path, trainer, epoch)
            trainer.checkpoint(epoch, (best_f1, best_epoch), history, finished).save(last_path)
        if on_epoch is not None and rank == 0:
            on_epoch(record)
        if finished:
            stopped_early = out_of_patience and epoch + 1 < config.epochs
            break
    if world > 1:
        dist.barrier()
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    trainer.core.load_state_dict(best["model"])
    head = trainer.head
    if head is not None:
        head.load_state_dict(best["head"])
        head = head.cpu().eval()
    return TrainResult(
        trainer.core.cpu().eval(),
        weights_used,
        best_epoch,
        best_f1,
        history,
        stopped_early,
        resumed,
        head,
    )


def save_best(path: Path, trainer: Trainer, epoch: int) -> None:
    """The weights (and end-to-end head) of the best epoch so far (what the run returns)."""
    state = {"model": trainer.core.state_dict(), "epoch": epoch}
    if trainer.head is not None:
        state["head"] = trainer.head.state_dict()
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
