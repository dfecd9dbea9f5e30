"""GPU check: two epochs of the real training loop at 224 and 512 px with AMP and
channels_last, training images/s beside data-loader images/s; under torchrun, the same on
every device with DDP over nccl. Run through `benchmarks/gpu_check.sh`.
Usage: python benchmarks/gpu_check.py [--sizes 224 512] [--epochs 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from training_throughput import BATCH, fake_store, loader_rate

from cass_pipeline.domain.model.data import ViewDataset
from cass_pipeline.domain.model.train import TrainConfig, distributed_context, train
from cass_pipeline.layout import DataLayout


def synthetic_views(root: Path, size: int, patients: int) -> pd.DataFrame:
    """A store of random views: three quarters of the patients train, the rest validate."""
    views = fake_store(root, size, patients=patients, views=50)
    number = views.store_path.str.extract(r"P(\d+)")[0].astype(int)
    return views.assign(
        patient_id=views.store_path.str.removesuffix(".npy"),
        branch=["LAD", "RCA"] * (len(views) // 2),
        view_index=views.store_index,
        split=["train" if n < patients * 3 // 4 else "validation" for n in number],
    )


@contextmanager
def shared_folder(root: Path, world: int) -> Iterator[Path]:
    """A folder every rank sees, removed once all are done with it."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        yield root
    finally:
        if world > 1:
            torch.distributed.barrier()
        if distributed_context()[0] == 0:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--patients", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    rank, world = distributed_context()
    if rank == 0:
        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
        print(f"{world} process(es), {name}, torch {torch.__version__}")
        print(f"{'px':>5}{'train images/s':>16}{'loader images/s':>17}{'epoch s':>9}")
    for size in args.sizes:
        run = os.environ.get("TORCHELASTIC_RUN_ID", str(os.getpid()))  # one folder for all ranks
        with shared_folder(
            Path(tempfile.gettempdir()) / f"cass-gpu-check-{run}-{size}", world
        ) as root:
            if rank == 0:
                views = synthetic_views(root, size, args.patients)
                manifest = DataLayout(root, root).manifest
                manifest.parent.mkdir(parents=True, exist_ok=True)
                views.to_parquet(manifest)
            if world > 1:
                torch.distributed.barrier()
            views = pd.read_parquet(DataLayout(root, root).manifest)
            config = TrainConfig(
                arch="shufflenet_v2_x1_0",
                weights="none",
                lr=1e-3,
                batch_size=args.batch_size,
                epochs=args.epochs,
                patience=args.epochs,
                num_workers=args.workers,
                device=args.device,
                amp=True,
                channels_last=True,
            )
            start = time.perf_counter()
            result = train(config, views, root, root / "checkpoints")
            seconds = (time.perf_counter() - start) / args.epochs
            if rank == 0:
                train_views = views[views.split == "train"]
                batches = min(20, len(train_views) // BATCH - 1)
                dataset = ViewDataset(train_views, root, augment=True)
                loader = loader_rate(dataset, args.workers, batches)
                best = max(h.images_per_s for h in result.history)
                print(f"{size:>5}{best:>16.0f}{loader:>17.0f}{seconds:>9.1f}")


if __name__ == "__main__":
    main()
