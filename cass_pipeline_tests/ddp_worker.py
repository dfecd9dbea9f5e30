"""Run by the DDP test under torchrun: train on the tiny data, save this rank's weights."""

import sys
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist

from cass_pipeline.domain.model.data import labelled_views
from cass_pipeline.domain.model.train import TrainConfig, train

if __name__ == "__main__":
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    views = labelled_views(
        pd.read_parquet(root / "images" / "manifest.parquet"),
        pd.read_parquet(root / "reports" / "branch_labels.parquet"),
        pd.read_parquet(root / "model" / "splits.parquet"),
    )
    config = TrainConfig(
        arch="shufflenet_v2_x0_5",
        weights="none",
        lr=1e-3,
        batch_size=8,
        epochs=2,
        patience=10,
        channels_last=False,
    )
    result = train(config, views[views.split != "test"], root, out / "checkpoints")
    torch.save(result.model.state_dict(), out / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
