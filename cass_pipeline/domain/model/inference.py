"""Where the network runs, and its predictions on cleaned views.

PyTorch (training, GPUs, gradients) and ONNX Runtime (CPU serving) both take cleaned uint8
views and apply the one input transform `to_model_input` (the ONNX graph holds it); validation
during training, evaluation, serving and `cass explain` all turn views into probabilities
through `predict_probabilities`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from cass_pipeline.domain.device import thread_wait, usable_cpus
from cass_pipeline.domain.model.data import ViewDataset
from cass_pipeline.domain.model.network import classify, embed, to_model_input

CPU = torch.device("cpu")
ONNX_INPUT, ONNX_OUTPUT, ONNX_EMBEDDINGS = "images", "logits", "embeddings"


#: Pixels per inference batch: about 4 views at 512 px, 64 at 128 px (measured fastest for
#: ONNX Runtime on 2 CPU cores, where larger batches fall out of the caches).
BATCH_PIXELS = 2**20
#: Views read from the image store at a time.
STORE_CHUNK = 64


class Engine(Protocol):
    """Runs the network on cleaned uint8 views (N, H, W), or (N, 3, H, W) with their
    neighbours (`model_views`): logits (N, K), and with them the view embeddings (N, D) that
    learned aggregation pools."""

    name: str

    def logits(self, images: np.ndarray) -> np.ndarray: ...

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class ViewsToLogits(nn.Module):
    """The network behind the one input transform, as exported: uint8 views in, logits and
    embeddings out."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = embed(self.network, to_model_input(images))
        return classify(self.network, embeddings), embeddings


class TorchEngine:
    """The PyTorch module, channels_last, on `device`."""

    name = "pytorch"

    def __init__(self, model: nn.Module, device: torch.device = CPU):
        self.model = model.eval().to(device)
        self.device = device

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.outputs(images)[0]

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = to_model_input(np.ascontiguousarray(images)).to(self.device)
        with torch.no_grad():
            batch = batch.contiguous(memory_format=torch.channels_last)
            embeddings = embed(self.model, batch)
            logits = classify(self.model, embeddings)
        return logits.float().cpu().numpy(), embeddings.float().cpu().numpy()


class OnnxEngine:
    """An exported `ViewsToLogits` in ONNX Runtime on the CPU, using every usable core by
    default; its threads wait as `CASS_THREAD_WAIT` says (`device.py`)."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or usable_cpus()
        spin = "1" if thread_wait() == "spin" else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.has_embeddings = ONNX_EMBEDDINGS in {o.name for o in self.session.get_outputs()}

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([ONNX_OUTPUT], {ONNX_INPUT: np.ascontiguousarray(images)})[0]

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and embeddings; a graph exported before embeddings were (logits only, enough
        for the vote) gives embeddings of width 0."""
        feed = {ONNX_INPUT: np.ascontiguousarray(images)}
        if not self.has_embeddings:
            logits = self.session.run([ONNX_OUTPUT], feed)[0]
            return logits, np.zeros((len(logits), 0), np.float32)
        logits, embeddings = self.session.run([ONNX_OUTPUT, ONNX_EMBEDDINGS], feed)
        return logits, embeddings


class TemperatureScaled:
    """An engine whose logits are divided by a fitted temperature (calibrated probabilities,
    the same classes)."""

    def __init__(self, engine: Engine, temperature: float):
        self.engine, self.temperature = engine, temperature
        self.name = engine.name

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.engine.logits(images) / np.float32(self.temperature)

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, embeddings = self.engine.outputs(images)
        return logits / np.float32(self.temperature), embeddings


def mirrored(images: np.ndarray) -> np.ndarray:
    """Views mirrored left to right: a curved MPR seen from the other side of the vessel."""
    return np.ascontiguousarray(images[..., ::-1])


def shifted(images: np.ndarray, rows: int) -> np.ndarray:
    """Views moved `rows` along the vessel (down when positive), the edge row repeated."""
    pad = [(0, 0)] * (images.ndim - 2) + [(max(rows, 0), max(-rows, 0)), (0, 0)]
    padded = np.pad(images, pad, mode="edge")
    start = max(-rows, 0)
    return np.ascontiguousarray(padded[..., start : start + images.shape[-2], :])


def augmentations(name: str, height: int) -> list[Callable[[np.ndarray], np.ndarray]]:
    """The views a test-time augmentation scores besides the view itself."""
    step = max(1, height // 32)
    extra = {
        "none": [],
        "flip": [mirrored],
        "flip_shift": [
            mirrored,
            lambda images: shifted(images, step),
            lambda images: shifted(images, -step),
        ],
    }
    if name not in extra:
        raise ValueError(f"unknown test-time augmentation {name!r}; choose {sorted(extra)}")
    return extra[name]


class TestTimeAugmented:
    """An engine whose logits and embeddings are the means over the view and its
    augmentations (mean logits: a normalised geometric mean of the probabilities)."""

    def __init__(self, engine: Engine, augmentation: str):
        augmentations(augmentation, 32)  # a name it does not know fails here, not later
        self.engine, self.augmentation = engine, augmentation
        self.name = engine.name

    def variants(self, images: np.ndarray) -> list[np.ndarray]:
        extra = augmentations(self.augmentation, images.shape[-2])
        return [images, *(augment(images) for augment in extra)]

    def logits(self, images: np.ndarray) -> np.ndarray:
        return np.mean([self.engine.logits(v) for v in self.variants(images)], axis=0)

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scored = [self.engine.outputs(v) for v in self.variants(images)]
        return np.mean([s[0] for s in scored], axis=0), np.mean([s[1] for s in scored], axis=0)


def augmented(engine: Engine, augmentation: str) -> Engine:
    """`engine` with test-time `augmentation` (itself with none)."""
    return engine if augmentation == "none" else TestTimeAugmented(engine, augmentation)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of logits (N, 3), computed the same way for every engine (in
    NumPy: between ONNX Runtime calls a PyTorch op measured 10% slower end to end here)."""
    shifted = np.asarray(logits, np.float32) - np.max(logits, axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def predict_outputs(
    engine: Engine, images: np.ndarray, batch_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N, 3) and embeddings (N, D) for cleaned uint8 views (N, H, W),
    in batches of `batch_size` views (default: `BATCH_PIXELS` worth)."""
    if not len(images):
        return np.zeros((0, 3), np.float32), np.zeros((0, 0), np.float32)
    batch_size = batch_size or max(1, BATCH_PIXELS // images[0].size)
    batches = [
        engine.outputs(images[start : start + batch_size])
        for start in range(0, len(images), batch_size)
    ]
    return (
        np.concatenate([softmax(logits) for logits, _ in batches]),
        np.concatenate([embeddings for _, embeddings in batches]),
    )


def predict_probabilities(
    engine: Engine, images: np.ndarray, batch_size: int | None = None
) -> np.ndarray:
    """The probabilities of `predict_outputs`."""
    return predict_outputs(engine, images, batch_size)[0]


def export_onnx(model: nn.Module, size: int, path: Path, channels: str = "grey") -> None:
    """`ViewsToLogits(model)` as ONNX: uint8 views (batch size free, `size` x `size`; with
    `neighbours` three of them per input) in, logits and embeddings out."""
    wrapped = ViewsToLogits(model.eval().to(CPU)).eval()
    shape = (size, size) if channels == "grey" else (3, size, size)
    example = torch.zeros(2, *shape, dtype=torch.uint8)  # a batch of 1 would be fixed
    program = torch.onnx.export(
        wrapped,
        (example,),
        dynamo=True,
        input_names=[ONNX_INPUT],
        output_names=[ONNX_OUTPUT, ONNX_EMBEDDINGS],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
        verbose=False,
    )
    program.save(str(path))


def largest_difference(p: np.ndarray, q: np.ndarray) -> tuple[float, int]:
    """Largest absolute difference of two engines' probabilities (N, 3) of the same views,
    and how many views they classify differently."""
    if not len(p):
        return 0.0, 0
    return float(np.abs(p - q).max()), int((p.argmax(1) != q.argmax(1)).sum())


def view_outputs(
    engine: Engine,
    views: pd.DataFrame,
    store_root: Path,
    channels: str = "grey",
    batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`predict_outputs` for manifest rows (their channels as `model_views`), reading the
    store `STORE_CHUNK` views at a time."""
    dataset = ViewDataset(views.reset_index(drop=True), store_root, channels=channels)
    chunks = [
        predict_outputs(
            engine,
            np.stack(
                [
                    dataset.model_image(i)
                    for i in range(start, min(start + STORE_CHUNK, len(dataset)))
                ]
            ),
            batch_size,
        )
        for start in range(0, len(dataset), STORE_CHUNK)
    ]
    if not chunks:
        return np.zeros((0, 3), np.float32), np.zeros((0, 0), np.float32)
    return (
        np.concatenate([p for p, _ in chunks]),
        np.concatenate([e for _, e in chunks]),
    )


def view_probabilities(
    engine: Engine, views: pd.DataFrame, store_root: Path, channels: str = "grey"
) -> np.ndarray:
    """The probabilities of `view_outputs`."""
    return view_outputs(engine, views, store_root, channels)[0]
