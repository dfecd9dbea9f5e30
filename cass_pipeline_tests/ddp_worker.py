"""Run by the DDP test under torchrun: train on the tiny data, save this rank's weights."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from cass_pipeline.domain.model.train import TrainConfig, train
from cass_pipeline_tests.conftest import training_views

if __name__ == "__main__":
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    views = training_views(root)
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
