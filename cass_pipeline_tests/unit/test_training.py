"""Training: weights modes, resume equals uninterrupted, data hygiene."""

from pathlib import Path

import pandas as pd
import pytest
import torch

from cass_pipeline.domain.model.network import build_model, imagenet_cache_file, to_model_input
from cass_pipeline.domain.model.train import train
from cass_pipeline_tests.helpers import layout_of, tiny_config, training_views

TINY = tiny_config(epochs=3)


def views_of(root: Path) -> pd.DataFrame:
    return training_views(root)


def test_weights_modes(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert build_model("shufflenet_v2_x0_5", "none").weights_used == "none"
    auto = build_model("shufflenet_v2_x0_5", "auto")
    assert auto.weights_used.startswith("none (no ImageNet weights")
    # An ImageNet checkpoint in the torch cache: auto and imagenet use it (head replaced).
    import torchvision

    imagenet = torchvision.models.shufflenet_v2_x0_5(weights=None)
    cache = imagenet_cache_file("shufflenet_v2_x0_5")
    cache.parent.mkdir(parents=True)
    torch.save(imagenet.state_dict(), cache)
    for mode in ("auto", "imagenet"):
        built = build_model("shufflenet_v2_x0_5", mode)
        assert built.weights_used == f"imagenet ({cache})"
        assert torch.equal(built.model.conv1[0].weight, imagenet.conv1[0].weight)
        assert built.model.fc.out_features == 3
    # A path: our own checkpoint.
    own = build_model("shufflenet_v2_x0_5", "none").model
    torch.save(own.state_dict(), tmp_path / "own.pt")
    from_path = build_model("shufflenet_v2_x0_5", str(tmp_path / "own.pt"))
    assert from_path.weights_used.startswith("path (")
    assert torch.equal(from_path.model.fc.weight, own.fc.weight)
    with pytest.raises(FileNotFoundError):
        build_model("shufflenet_v2_x0_5", str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet50", "none")


def test_model_input_is_grey_replicated_and_normalised():
    images = torch.full((2, 16, 16), 255, dtype=torch.uint8)
    batch = to_model_input(images)
    assert batch.shape == (2, 3, 16, 16)
    assert torch.allclose(batch[:, 0], torch.tensor((1 - 0.485) / 0.229))
    assert torch.allclose(batch[:, 2], torch.tensor((1 - 0.406) / 0.225))


def test_resume_equals_uninterrupted(training_data, tmp_path):
    views = views_of(training_data).query("split != 'test'")
    straight = train(TINY, views, layout_of(training_data).images, tmp_path / "straight")

    class KilledError(Exception):
        pass

    def kill_after_epoch_one(record):
        if record.epoch == 1:
            raise KilledError

    with pytest.raises(KilledError):
        train(
            TINY,
            views,
            layout_of(training_data).images,
            tmp_path / "resumed",
            on_epoch=kill_after_epoch_one,
        )
    resumed = train(TINY, views, layout_of(training_data).images, tmp_path / "resumed")
    assert resumed.resumed_from_epoch == 1
    assert [h.train_loss for h in resumed.history] == [h.train_loss for h in straight.history]
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_end_to_end_training_draws_whole_branches_and_resumes_with_its_head(
    training_data, tmp_path
):
    from cass_pipeline.domain.model.data import BagBatchSampler, branch_bags

    views = views_of(training_data).query("split != 'test'")
    train_views = views[views.split == "train"].reset_index(drop=True)
    bags = branch_bags(train_views)
    labels = torch.as_tensor(train_views.label.to_numpy().copy())
    sampler = BagBatchSampler(bags, labels, 2, True, seed=7)
    sizes = pd.Series(bags).value_counts()
    for batch in sampler:
        drawn = pd.Series(bags[batch]).value_counts()
        assert len(drawn) <= 2 and (drawn % sizes[drawn.index] == 0).all()  # whole branches
    config = tiny_config(epochs=3, aggregation="attention_end_to_end")

    class KilledError(Exception):
        pass

    def kill_after_epoch_one(record):
        if record.epoch == 1:
            raise KilledError

    images = layout_of(training_data).images
    straight = train(config, views, images, tmp_path / "straight")
    with pytest.raises(KilledError):
        train(config, views, images, tmp_path / "resumed", on_epoch=kill_after_epoch_one)
    resumed = train(config, views, images, tmp_path / "resumed")
    assert straight.head is not None and resumed.resumed_from_epoch == 1
    assert [h.train_loss for h in resumed.history] == [h.train_loss for h in straight.history]
    for name, weight in straight.head.state_dict().items():
        assert torch.equal(weight, resumed.head.state_dict()[name]), name
    assert train(TINY, views, images, tmp_path / "vote").head is None


def test_a_checkpoint_of_other_settings_is_refused_and_not_resumed(training_data, tmp_path):
    from dataclasses import replace

    from cass_pipeline.domain.model.train import Checkpoint, CheckpointMismatchError

    views = views_of(training_data).query("split != 'test'")
    first = train(
        replace(TINY, epochs=1), views, layout_of(training_data).images, tmp_path / "ckpt"
    )
    last = tmp_path / "ckpt" / "last.pt"
    longer = replace(TINY, epochs=2)
    with pytest.raises(CheckpointMismatchError, match="written under settings"):
        Checkpoint.load(last, longer.fingerprint())
    saved = Checkpoint.load(last, replace(TINY, epochs=1).fingerprint())
    assert saved.finished and saved.epoch == 0 and saved.history == first.history
    again = train(longer, views, layout_of(training_data).images, tmp_path / "ckpt")
    assert again.resumed_from_epoch is None and [h.epoch for h in again.history] == [0, 1]


def test_test_split_never_reaches_training(training_data, tmp_path):
    with pytest.raises(ValueError, match="test split"):
        train(TINY, views_of(training_data), layout_of(training_data).images, tmp_path / "ckpt")


def test_lr_find_writes_a_curve_and_a_plot(training_data, tmp_path):
    from click.testing import CliRunner

    from cass_pipeline.cli import main

    env = {"CASS_DATA_DIR": str(tmp_path), "CASS_PROCESSED_DIR": str(training_data)}
    result = CliRunner(env=env).invoke(
        main,
        [
            "lr-find",
            "--arch",
            "shufflenet_v2_x0_5",
            "--weights",
            "none",
            "--steps",
            "12",
            "--batch-size",
            "8",
            "--out",
            str(tmp_path / "lr"),
        ],
    )
    assert result.exit_code == 0, result.output
    curve = pd.read_csv(tmp_path / "lr" / "lr_find.csv")
    assert curve.lr.is_monotonic_increasing and len(curve) <= 12
    assert (tmp_path / "lr" / "lr_find.png").stat().st_size > 1000
    suggested = float(result.output.split("suggested learning rate ")[1].split(";")[0])
    assert curve.lr.min() <= suggested <= curve.lr.max()


def test_progress_line_says_how_long_the_remaining_epochs_take():
    from cass_pipeline.domain.model.train import EpochRecord
    from cass_pipeline.runs.training import progress_line

    history = [EpochRecord(e, 1.0 - e / 10, 0.9, 0.5, 0.6, 20.0 + 4 * e, 150.0) for e in range(2)]
    line = progress_line(history[-1], history, 10)
    assert line.startswith("epoch 2/10: train loss 0.900, validation loss 0.900")
    assert "150 images/s, 24 s; at most 2 min 56 s left" in line  # 8 epochs x 22 s


def test_pinned_cpu_kernels_fix_the_avx2_paths_and_native_leaves_them():
    from cass_pipeline.domain.device import PINNED_KERNELS, pin_cpu_kernels

    pinned = {"CASS_CPU_KERNELS": "AVX2"}
    assert pin_cpu_kernels(pinned) == "avx2" and PINNED_KERNELS.items() <= pinned.items()
    native = {"CASS_CPU_KERNELS": "native"}
    assert pin_cpu_kernels(native) == "native" and native == {"CASS_CPU_KERNELS": "native"}
    assert pin_cpu_kernels({}) == "native"
    mine = {"CASS_CPU_KERNELS": "avx2", "MKL_CBWR": "COMPATIBLE"}
    pin_cpu_kernels(mine)
    assert mine["MKL_CBWR"] == "COMPATIBLE"  # a setting of the user's own wins
    with pytest.raises(ValueError, match="native or avx2"):
        pin_cpu_kernels({"CASS_CPU_KERNELS": "fast"})
