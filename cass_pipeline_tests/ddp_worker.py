"""Run by the DDP test under torchrun: train on the tiny data, save this rank's weights."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from cass_pipeline.domain.model.train import train
from cass_pipeline_tests.helpers import layout_of, tiny_config, training_views

if __name__ == "__main__":
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    views = training_views(root)
    train_views = views[views.split != "test"]
    result = train(tiny_config(epochs=2), train_views, layout_of(root).images, out / "checkpoints")
    torch.save(result.model.state_dict(), out / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
