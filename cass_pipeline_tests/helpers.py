"""What tests share beyond fixtures: the tiny training data, the tiny model's settings, the
report stage run on a folder, and an old-style registered version. Fixtures live in
conftest.py and call these."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from cass_pipeline.domain.anatomy import STENOSIS_CLASSES
from cass_pipeline.domain.model.config import TrainConfig
from cass_pipeline.layout import DataLayout

#: The report percent range of each planted class: none, "<50%" (minimal or mild: an
#: interval label), severe.
LABEL_PERCENTS = {0: (0, 0), 1: (1, 49), 2: (70, 99)}

#: The small model every training test uses (fast on two cores, learns the planted notch),
#: as Dagster run config; `tiny_config` gives it as a `TrainConfig` for direct calls.
TINY_MODEL = {
    "arch": "shufflenet_v2_x0_5",
    "weights": "none",
    "lr": 1e-3,
    "batch_size": 8,
    "epochs": 1,
}


def zoomed_text(picture: np.ndarray, zoom: int = 8) -> str:
    """What OCR reads of a picture (BGR or grey) looked at `zoom` times closer, as a person
    would read it: its bright ink and its red ink each isolated (black on white) and
    enlarged. Independent of the pipeline's own reader, so a test can check that one."""
    colour = picture if picture.ndim == 3 else cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR)
    blue, green, red = (colour[..., k].astype(int) for k in range(3))
    inks = (colour.min(axis=2) >= 230, red - np.maximum(green, blue) > 60)
    from cass_pipeline.domain.imaging.pixel_text import OcrEngine

    words = []
    for ink in inks:
        page = np.where(ink, 0, 255).astype(np.uint8)
        page = cv2.resize(page, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC)
        page = np.pad(page, 32, constant_values=255)
        words += [text for text, _, _ in OcrEngine.words(page)]
    return " ".join(words)


def local_tracking(folder: Path, experiment: str):
    """The `mlflow_tracking` resource of a registry and its artifacts inside `folder` (never
    MLflow's default `./mlruns` in the repository)."""
    from cass_pipeline.defs.resources import MlflowTracking

    return MlflowTracking(
        tracking_uri=f"sqlite:///{folder}/mlflow.db",
        experiment_name=experiment,
        artifact_root=(folder / "artifacts").as_uri(),
    )


def layout_of(processed: Path) -> DataLayout:
    """The layout of a processed folder (its raw folder beside it)."""
    return DataLayout(processed.parent / "raw", processed)


def tiny_config(**changes) -> TrainConfig:
    """The tiny model, channels-first, with patience for every epoch."""
    return replace(TrainConfig(**TINY_MODEL, patience=10, channels_last=False), **changes)


@contextmanager
def published_images(processed: Path) -> Iterator[DataLayout]:
    """A layout at a new image generation under `processed`, published when the block ends
    (as ingestion does)."""
    from cass_pipeline.domain.generations import Generations

    generations = Generations(layout_of(processed).image_generations)
    generation = generations.building()
    yield layout_of(processed).at_generation(generation)
    generations.publish(generation)


def write_training_data(root: Path, patients: int = 12, views: int = 4, size: int = 32) -> Path:
    """A tiny processed folder: image store, manifest, branch labels and splits.

    Branch class c shows as a dark notch of width 4c in a bright vertical band, so the task is
    learnable; patients 0-7 train, 8-9 validation, 10-11 test.
    """
    import numpy as np
    import pandas as pd

    from cass_pipeline.domain.generations import Generations
    from cass_pipeline.domain.imaging.config import CleanupConfig

    rng = np.random.default_rng(0)
    manifest, labels, splits = [], [], []
    generations = Generations(layout_of(root).image_generations)
    generation = generations.building()
    layout = layout_of(root).at_generation(generation)
    store = layout.image_store
    store.mkdir(parents=True, exist_ok=True)
    for p in range(patients):
        pid = f"P{p:03d}"
        split = "train" if p < 8 else "validation" if p < 10 else "test"
        images = []
        worst = 0
        for b, branch in enumerate(("LAD", "LCX")):
            label = (p + b) % 3
            worst = max(worst, label)
            low, high = LABEL_PERCENTS[label]
            labels.append(
                {
                    "patient_id": pid,
                    "branch": branch,
                    "stenosis_class": STENOSIS_CLASSES[label],
                    "label": label,
                    "pct_low": low,
                    "pct_high": high,
                }
            )
            for v in range(views):
                image = rng.integers(20, 60, (size, size)).astype(np.uint8)
                image[:, 12:20] = 200
                image[10:14, 12 : 12 + 4 * label] = 30
                manifest.append(
                    {
                        "patient_id": pid,
                        "artery": branch,
                        "branch": branch,
                        "view_index": v,
                        "store_path": f"store/{pid}.npy",
                        "store_index": len(images),
                        "size": size,
                        "source_sha256": f"{pid}-{branch}-{v}",
                        "cleanup_fingerprint": CleanupConfig(size).fingerprint(),
                    }
                )
                images.append(image)
        np.save(store / f"{pid}.npy", np.stack(images))
        splits.append({"patient_id": pid, "patient_class": str(worst), "split": split})
    for table in (layout.manifest, layout.branch_labels, layout.splits):
        table.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(manifest).to_parquet(layout.manifest)
    pd.DataFrame(labels).to_parquet(layout.branch_labels)
    pd.DataFrame(splits).to_parquet(layout.splits)
    generations.publish(generation)
    return root


def training_views(root: Path):
    """Labelled views of a processed folder written by `write_training_data`."""
    from cass_pipeline.runs.training import load_views

    return load_views(layout_of(root))


def register_without_bundle(tracking, size: int) -> int:
    """A version registered the old way (PyTorch flavour, no bundle): what an older CASS
    left in a registry."""
    import mlflow.pytorch
    import numpy as np

    from cass_pipeline.domain.model.network import build_model

    with tracking.start_run("registered the old way"):
        info = mlflow.pytorch.log_model(
            build_model("shufflenet_v2_x0_5", "none").model,
            name="model",
            serialization_format="pickle",
            input_example=np.zeros((2, 3, size, size), np.float32),
            registered_model_name="cass-stenosis",
        )
    return int(info.registered_model_version)


def materialise_reports(root: Path, secret: str, run_config=None):
    """The report group (with its checks) on `root/raw` into `root/processed`."""
    import dagster as dg

    from cass_pipeline.defs.assets import reports as report_assets
    from cass_pipeline.defs.assets.cohort import raw_cohort
    from cass_pipeline.defs.resources import CassPaths, PseudonymKey, RawFormat

    resources = {
        "paths": CassPaths(raw_dir=str(root / "raw"), processed_dir=str(root / "processed")),
        "pseudonyms": PseudonymKey(key_file=str(root / "key"), key=secret),
        "raw_format": RawFormat(),
    }
    checks = [
        getattr(report_assets, name)
        for name in dir(report_assets)
        if isinstance(getattr(report_assets, name), dg.AssetChecksDefinition)
    ]
    return dg.materialize(
        [raw_cohort, report_assets.report_labels, *checks],
        resources=resources,
        selection=dg.AssetSelection.groups("reports"),
        run_config=run_config,
    )
