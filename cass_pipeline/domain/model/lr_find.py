"""The learning-rate range test (Smith 2017), as the paper used to pick its learning rate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from cass_pipeline.domain.model.config import TrainConfig
from cass_pipeline.domain.model.data import BalancedSampler, ViewDataset
from cass_pipeline.domain.model.network import build_model
from cass_pipeline.domain.model.targets import output_space
from cass_pipeline.domain.plots import figure_png, pyplot


@dataclass
class LrFindResult:
    curve: pd.DataFrame  # lr, loss, smoothed_loss
    suggested_lr: float


def lr_range_test(
    views: pd.DataFrame,
    store_root: Path,
    config: TrainConfig,
    start_lr: float = 1e-7,
    end_lr: float = 1.0,
    steps: int = 100,
    diverge: float = 4.0,
) -> LrFindResult:
    """Raise the learning rate exponentially batch by batch on the train views; stop when the
    smoothed loss exceeds `diverge` times its best. Suggests the rate of steepest descent."""
    torch.manual_seed(config.seed)
    train_views = views[views.split == "train"].reset_index(drop=True)
    outputs = output_space(config.target)
    dataset = ViewDataset(train_views, store_root, True, outputs.targets(train_views))
    labels = torch.as_tensor(train_views.label.to_numpy().copy())
    sampler = BalancedSampler(labels, config.seed)
    model = build_model(config.arch, config.weights, outputs.size).model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=start_lr)
    factor = (end_lr / start_lr) ** (1 / max(1, steps - 1))
    rows, smoothed, best, step = [], 0.0, np.inf, 0
    while step < steps:
        for images, _, targets in DataLoader(
            dataset, batch_size=config.batch_size, sampler=sampler
        ):
            lr = start_lr * factor**step
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = outputs.loss(model(images), targets).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            smoothed = 0.9 * smoothed + 0.1 * loss.item()
            debiased = smoothed / (1 - 0.9 ** (step + 1))
            rows.append({"lr": lr, "loss": loss.item(), "smoothed_loss": debiased})
            best = min(best, debiased)
            step += 1
            if step >= steps or debiased > diverge * best:
                step = steps
                break
        sampler.set_epoch(step)
    curve = pd.DataFrame(rows)
    gradient = np.gradient(curve.smoothed_loss.to_numpy(), np.log10(curve.lr.to_numpy()))
    usable = slice(2, max(3, len(curve) - 3))
    suggested = float(curve.lr.iloc[usable].iloc[int(np.argmin(gradient[usable]))])
    return LrFindResult(curve, suggested)


def lr_curve_png(result: LrFindResult, arch: str) -> bytes:
    """The smoothed loss against the learning rate, the suggestion marked."""
    fig, axis = pyplot().subplots(figsize=(6, 3.5))
    axis.plot(result.curve.lr, result.curve.smoothed_loss)
    axis.axvline(result.suggested_lr, linestyle="--", color="grey")
    axis.set(
        xscale="log",
        xlabel="learning rate",
        ylabel="smoothed training loss",
        title=f"LR range test ({arch}); steepest descent at {result.suggested_lr:.1e}",
    )
    fig.tight_layout()
    return figure_png(fig, dpi=100)
