"""Training images/s beside data-loader images/s (the loader must be at least 3x faster).

The loader reads memory-mapped stores and applies the training augmentations, without the
model; the training step runs forward, backward and Adam on batches already in memory.
Usage: python benchmarks/training_throughput.py [--sizes 128 224] [--arch shufflenet_v2_x1_0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from cass_pipeline.domain.anatomy import STENOSIS_CLASSES, grade_interval
from cass_pipeline.domain.model.data import ViewDataset
from cass_pipeline.domain.model.network import build_model

BATCH = 32


def fake_store(root: Path, size: int, patients: int = 16, views: int = 40) -> pd.DataFrame:
    """Random views in `patients` stores, labelled by class and by the grades it allows."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(patients):
        np.save(root / f"P{p}.npy", rng.integers(0, 250, (views, size, size), dtype=np.uint8))
        rows += [
            {"store_path": f"P{p}.npy", "store_index": v, "label": v % 3, "size": size}
            for v in range(views)
        ]
    frame = pd.DataFrame(rows)
    intervals = [grade_interval(STENOSIS_CLASSES[c], None, None) for c in frame.label]
    return frame.assign(
        grade_low=[low for low, _ in intervals], grade_high=[high for _, high in intervals]
    )


def loader_rate(dataset: ViewDataset, workers: int, batches: int) -> float:
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)
    iterator = iter(loader)
    next(iterator)
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        images, _ = next(iterator)
        seen += len(images)
    return seen / (time.perf_counter() - start)


def train_rate(arch: str, size: int, steps: int, channels_last: bool) -> float:
    model = build_model(arch, "none").model.train()
    images = torch.randn(BATCH, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, 3, (BATCH,))
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    loss_fn = nn.CrossEntropyLoss()
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        optimizer.zero_grad()
        loss_fn(model(images), targets).backward()
        optimizer.step()
    return steps * BATCH / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--arch", default="shufflenet_v2_x1_0")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"{args.arch}, batch {BATCH}, {torch.get_num_threads()} threads")
    print(
        f"{'size':>5}{'train img/s':>13}{'loader 0 workers':>18}{'loader 1 worker':>17}"
        f"{'ratio (0 w.)':>14}"
    )
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            views = fake_store(Path(tmp), size)
            dataset = ViewDataset(views, Path(tmp), augment=True)
            inline = loader_rate(dataset, 0, 12)
            worker = loader_rate(dataset, 1, 12)
        training = train_rate(args.arch, size, args.steps, channels_last=True)
        print(
            f"{size:>5}{training:>13.0f}{inline:>18.0f}{worker:>17.0f}{inline / training:>13.1f}x"
        )
    print("\ngoal: loader at least 3x the training step rate (the loader is never the bottleneck)")


if __name__ == "__main__":
    main()
