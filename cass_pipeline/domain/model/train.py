"""Training: Adam, gradient accumulation, early stopping on validation branch-level weighted F1,
checkpoints every epoch (a killed run resumes to the same result), single process or DDP.

Every epoch is seeded by (seed, epoch) alone, so a resumed run replays exactly what an
uninterrupted one would have done. Under `torchrun` (WORLD_SIZE > 1) the same function runs
with DistributedDataParallel (nccl on GPUs, gloo on CPU); rank 0 writes checkpoints.
The test split is never read here.
"""

from __future__ import annotations

import math
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
from torch.utils.data import DataLoader

from cass_pipeline.domain.evaluation import branch_level, weighted_f1
from cass_pipeline.domain.model.aggregation import AGGREGATIONS
from cass_pipeline.domain.model.data import BalancedSampler, ShuffledSampler, ViewDataset
from cass_pipeline.domain.model.inference import TorchEngine, view_probabilities
from cass_pipeline.domain.model.network import build_model
from cass_pipeline.domain.storage import atomic_path, settings_hash


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run (logged whole to MLflow)."""

    arch: str = "shufflenet_v2_x1_0"
    weights: str = "auto"
    lr: float = 1e-4
    lr_schedule: str = "constant"  # constant | cosine (to 0 at the last epoch)
    batch_size: int = 32
    accumulation_steps: int = 1
    epochs: int = 30
    patience: int = 5
    view_step: int = 1
    imbalance: str = "sampler"  # sampler | class_weights | none
    aggregation: str = "vote"  # vote | attention (a head over view embeddings, after training)
    num_workers: int = 0
    seed: int = 7
    device: str = "auto"
    channels_last: bool = True
    amp: bool = True  # used on CUDA only
    time_budget_s: float | None = None

    def fingerprint(self) -> str:
        return settings_hash(asdict(self))


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


def distributed_context() -> tuple[int, int]:
    """(rank, world size), initialising the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def pick_device(config: TrainConfig, rank: int) -> torch.device:
    if config.device != "auto":
        return torch.device(config.device)
    if torch.cuda.is_available():
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of `epoch`: constant, or a cosine from `lr` towards 0 over `epochs`
    (a function of the epoch alone, so a resumed run continues the same curve)."""
    if config.lr_schedule == "constant":
        return config.lr
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
    raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}; choose constant or cosine")


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def train(
    config: TrainConfig,
    views: pd.DataFrame,
    store_root: Path,
    checkpoint_dir: Path,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train on the 'train' rows of `views`, select on the 'validation' rows."""
    if (views.split == "test").any():
        raise ValueError("the test split must not reach training")
    if config.aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {config.aggregation!r}; choose {AGGREGATIONS}")
    rank, world = distributed_context()
    device = pick_device(config, rank)
    train_views = views[views.split == "train"].reset_index(drop=True)
    val_views = views[views.split == "validation"].reset_index(drop=True)
    if train_views.empty or val_views.empty:
        raise ValueError(
            f"need train and validation views, got {len(train_views)} and {len(val_views)}"
        )

    torch.manual_seed(config.seed)
    built = build_model(config.arch, config.weights)
    model = built.model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    core = model
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    train_labels = torch.as_tensor(train_views.label.to_numpy().copy())
    weight = None
    if config.imbalance == "class_weights":
        counts = torch.bincount(train_labels, minlength=3).clamp(min=1).float()
        weight = (counts.sum() / (3 * counts)).to(device)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    sampler = (
        BalancedSampler(train_labels, config.seed, rank, world)
        if config.imbalance == "sampler"
        else ShuffledSampler(len(train_views), config.seed, rank, world)
    )
    train_set = ViewDataset(train_views, store_root, augment=True)
    loader_args = {
        "batch_size": config.batch_size,
        "num_workers": config.num_workers,
        "persistent_workers": False,
        "pin_memory": device.type == "cuda",
    }

    last_path, best_path = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
    history: list[EpochRecord] = []
    start_epoch, best_f1, best_epoch, resumed = 0, -1.0, -1, None
    if last_path.is_file():
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        if state["config_fingerprint"] == config.fingerprint() and not state.get("finished"):
            core.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            history = [EpochRecord(**h) for h in state["history"]]
            start_epoch, best_f1, best_epoch = (
                state["epoch"] + 1,
                state["best_f1"],
                state["best_epoch"],
            )
            resumed = state["epoch"]

    started = time.monotonic()
    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        tick = time.monotonic()
        torch.manual_seed(config.seed * 1000 + epoch)
        sampler.set_epoch(epoch)
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(config, epoch)
        loader = DataLoader(
            train_set,
            sampler=sampler,
            generator=torch.Generator().manual_seed(config.seed * 1000 + epoch),
            **loader_args,
        )
        model.train()
        total, seen = 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        for step, (images, targets) in enumerate(loader):
            images, targets = images.to(device, non_blocking=True), targets.to(device)
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, enabled=use_amp):
                loss = loss_fn(model(images), targets)
            scaler.scale(loss / config.accumulation_steps).backward()
            if (step + 1) % config.accumulation_steps == 0 or step + 1 == len(loader):
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            total += loss.item() * len(targets)
            seen += len(targets)
        train_seconds = time.monotonic() - tick

        engine = TorchEngine(core, device)
        probabilities = view_probabilities(engine, val_views, store_root, config.batch_size)
        labels = val_views.label.to_numpy()
        picked = probabilities[np.arange(len(labels)), labels]
        val_loss = float(-np.log(np.clip(picked, 1e-12, None)).mean())
        scored = val_views.assign(pred=probabilities.argmax(1))
        branches = branch_level(scored)
        record = EpochRecord(
            epoch=epoch,
            train_loss=total / max(1, seen),
            val_loss=val_loss,
            val_view_accuracy=float((probabilities.argmax(1) == labels).mean()),
            val_branch_f1=weighted_f1(branches.label, branches.pred),
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
                save_checkpoint(best_path, {"model": core.state_dict(), "epoch": epoch})
            save_checkpoint(
                last_path,
                {
                    "model": core.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch,
                    "best_f1": best_f1,
                    "best_epoch": best_epoch,
                    "history": [asdict(h) for h in history],
                    "config_fingerprint": config.fingerprint(),
                    "finished": finished,
                },
            )
        if on_epoch is not None and rank == 0:
            on_epoch(record)
        if finished:
            stopped_early = out_of_patience and epoch + 1 < config.epochs
            break
    if world > 1:
        dist.barrier()
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    core.load_state_dict(best["model"])
    return TrainResult(
        core.cpu().eval(), built.weights_used, best_epoch, best_f1, history, stopped_early, resumed
    )
