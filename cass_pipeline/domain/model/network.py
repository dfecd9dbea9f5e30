"""ShuffleNet V2 with a class or grade head on grey MPR views, and the one input transform.

Grey views are replicated to three channels (or stand between their neighbours, built by
`data.model_views`) and normalised with the ImageNet statistics, everywhere: training,
evaluation and serving call `to_model_input`. Each architecture family
is one `Backbone` in `BACKBONES`; everything else reaches the network through `embed` and
`classify`, never through a family's own layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import torch
import torchvision
from torch import nn

from cass_pipeline.domain.anatomy import N_CLASSES
from cass_pipeline.domain.model.config import Architecture

ARCHITECTURES = get_args(Architecture)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@dataclass(frozen=True)
class BuiltModel:
    model: nn.Module
    weights_used: str


#: (grey / 255 - mean) / std as one multiply-add per pixel and channel, for uint8 views.
UINT8_SCALE, UINT8_SHIFT = 1.0 / (255.0 * STD), -MEAN / STD


def to_model_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 views (N, H, W) or float (N, H, W) in 0..1 -> normalised float (N, 3, H, W)."""
    tensor = torch.as_tensor(images)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)
    if tensor.dtype == torch.uint8:
        return tensor.float() * UINT8_SCALE + UINT8_SHIFT
    return (tensor.expand(-1, 3, -1, -1) - MEAN) / STD


def shufflenet_v2_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """ShuffleNet V2 up to its global pooling."""
    x = model.maxpool(model.conv1(images))
    x = model.conv5(model.stage4(model.stage3(model.stage2(x))))
    return x.mean([2, 3])


@dataclass(frozen=True)
class Backbone:
    """An architecture family: its torchvision network class, the view embedding (up to the
    global pooling) and the attribute of the linear class head that reads it."""

    network: type[nn.Module]
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    head: str


BACKBONES: dict[str, Backbone] = {
    "shufflenet_v2": Backbone(torchvision.models.ShuffleNetV2, shufflenet_v2_features, "fc"),
}


def backbone_of(model: nn.Module) -> Backbone:
    found = [b for b in BACKBONES.values() if isinstance(model, b.network)]
    if not found:
        raise TypeError(f"no backbone for {type(model).__name__}; add it to BACKBONES")
    return found[0]


def embed(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The view embedding, so that `model(x) == classify(model, embed(model, x))`."""
    return backbone_of(model).features(model, images)


def embedding_size(model: nn.Module) -> int:
    """The length of the view embedding (what the class head reads)."""
    return getattr(model, backbone_of(model).head).in_features


def classify(model: nn.Module, embeddings: torch.Tensor) -> torch.Tensor:
    """The class logits of view embeddings (the network's own head)."""
    return getattr(model, backbone_of(model).head)(embeddings)


def imagenet_cache_file(arch: str) -> Path:
    """Where torch.hub keeps the ImageNet weights of `arch` once downloaded."""
    weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def load_backbone_weights(model: nn.Module, state: dict) -> None:
    """Load weights, dropping a classification head of another size (e.g. ImageNet's 1000)."""
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    head = f"{backbone_of(model).head}."
    missing = [k for k in own if k not in state and not k.startswith(head)]
    if missing:
        raise ValueError(f"weights do not fit the architecture: missing {missing[:3]}...")
    model.load_state_dict(state, strict=False)


def build_model(arch: str, weights: str, outputs: int = N_CLASSES) -> BuiltModel:
    """`arch` with a head of `outputs` (3 classes, 6 grades); `weights`: auto (ImageNet when
    cached, else none), imagenet (must be obtainable), none, or a path to a state dict;
    `weights_used` records which."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")
    model = getattr(torchvision.models, arch)(weights=None)
    head = backbone_of(model).head
    setattr(model, head, nn.Linear(getattr(model, head).in_features, outputs))
    if weights == "none":
        return BuiltModel(model, "none")
    if weights in {"auto", "imagenet"}:
        cached = imagenet_cache_file(arch)
        if cached.is_file():
            load_backbone_weights(model, torch.load(cached, map_location="cpu", weights_only=True))
            return BuiltModel(model, f"imagenet ({cached})")
        if weights == "auto":
            return BuiltModel(model, "none (no ImageNet weights in the torch cache)")
        try:
            enum = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
            state = enum.get_state_dict(progress=False)
        except Exception as error:
            raise RuntimeError(
                f"ImageNet weights for {arch} cannot be downloaded here ({error}); "
                f"put them at {cached} or pass a path"
            ) from error
        load_backbone_weights(model, state)
        return BuiltModel(model, "imagenet (downloaded)")
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    load_backbone_weights(model, torch.load(path, map_location="cpu", weights_only=True))
    return BuiltModel(model, f"path ({path.resolve()})")
