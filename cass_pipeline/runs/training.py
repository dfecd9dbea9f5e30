"""A tracked training run: tables in, model out, everything logged and registered in MLflow.

Wiring shared by the Dagster asset, `cass train` and the torchrun entry point
(`python -m cass_pipeline.runs.entry`), which receives a `TrainingSpec` as JSON.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from cass_pipeline import CPU_KERNELS, THREAD_WAIT
from cass_pipeline.domain.device import training_threads
from cass_pipeline.domain.imaging.config import CleanupConfig, IngestConfig
from cass_pipeline.domain.model.aggregation import (
    AttentionPooling,
    Bags,
    decide_branches,
    fit_attention,
)
from cass_pipeline.domain.model.calibration import Calibration, fit_calibration
from cass_pipeline.domain.model.config import END_TO_END, TrainConfig
from cass_pipeline.domain.model.data import ViewDataset, labelled_views
from cass_pipeline.domain.model.inference import TorchEngine, augmented, view_outputs
from cass_pipeline.domain.model.splits import (
    SPLIT_SCHEMA,
    SplitSettings,
    limit_training,
    patient_splits,
    reader_labelled,
    splittable_patients,
    table_hash,
    with_reader_patients,
)
from cass_pipeline.domain.model.targets import OutputSpace, output_map, output_space
from cass_pipeline.domain.model.train import (
    EpochRecord,
    TrainResult,
    distributed_context,
    loader_workers,
    train,
)
from cass_pipeline.domain.plots import figure_png, pyplot
from cass_pipeline.domain.prediction.bundle import ModelBundle
from cass_pipeline.domain.storage import write_parquet_atomic
from cass_pipeline.layout import DataLayout
from cass_pipeline.runs.tracking import LEARNT_IMAGES, Tracking
from cass_pipeline.settings import PACKAGE_DIR


@dataclass(frozen=True)
class TrainingSpec:
    """One training run, whole: what the Dagster asset hands to torchrun workers as JSON."""

    layout: DataLayout
    config: TrainConfig
    tracking: Tracking
    tags: dict[str, str] = field(default_factory=dict)
    run_name: str = "train"

    def to_json(self) -> str:
        return json.dumps(
            {
                "layout": self.layout.as_json(),
                "config": asdict(self.config),
                "tracking": asdict(self.tracking),
                "tags": self.tags,
                "run_name": self.run_name,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> TrainingSpec:
        data = json.loads(text)
        return cls(
            DataLayout.from_json(data["layout"]),
            TrainConfig(**data["config"]),
            Tracking(**data["tracking"]),
            data["tags"],
            data["run_name"],
        )


@dataclass
class TrainingSummary:
    run_id: str
    model_version: int | None
    weights_used: str
    best_epoch: int
    best_val_branch_f1: float
    epochs_run: int
    train_views: int
    val_views: int
    train_images_per_s: float
    resumed_from_epoch: int | None


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PACKAGE_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class MissingInputsError(ValueError):
    """A table training reads is not there yet."""


def ensure_splits(layout: DataLayout) -> None:
    """Check that the tables training reads are there, and write the default patient splits
    when none exist yet (the `patient_splits` asset normally does)."""
    has_splits = layout.splits.is_file()
    needed = [layout.manifest, layout.branch_labels] + (
        [] if has_splits else [layout.patient_labels]
    )
    for table in needed:
        if not table.is_file():
            raise MissingInputsError(
                f"no processed data: {table} is missing; run `make run` or materialise the "
                "images and reports assets first"
            )
    if not has_splits:
        write_splits(layout, SplitSettings())


def write_splits(
    layout: DataLayout, settings: SplitSettings
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The patients with both a label and images split by `settings` and written to the
    layout (the patients readers labelled in training, `with_reader_patients`), and how many
    patients with a report were left out, held for review among them."""
    labels = pd.read_parquet(layout.patient_labels)
    usable = splittable_patients(labels, pd.read_parquet(layout.manifest, columns=["patient_id"]))
    readers = usable.patient_id.isin(reader_labelled(pd.read_parquet(layout.branch_labels)))
    table = patient_splits(
        usable[~readers], settings.ratios, settings.seed, settings.floor_per_class
    )
    table = limit_training(table, settings.train_patients, settings.seed)
    table = with_reader_patients(table, usable[readers])
    write_parquet_atomic(table, layout.splits, SPLIT_SCHEMA)
    left_out = {
        "all": len(labels) - len(usable),
        "held_for_review": int(labels.held_for_review.sum()),
    }
    return table, left_out


def read_tables(layout: DataLayout) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Manifest, branch labels and splits."""
    return (
        pd.read_parquet(layout.manifest),
        pd.read_parquet(layout.branch_labels),
        pd.read_parquet(layout.splits),
    )


def load_views(layout: DataLayout, view_step: int = 1) -> pd.DataFrame:
    """Labelled views of every split (training, lr-find and evaluation read them here)."""
    return labelled_views(*read_tables(layout), view_step)


def training_views(tables, view_step: int) -> tuple[pd.DataFrame, dict[str, str]]:
    """Train and validation views (never test) of `read_tables`' tables, and the content
    hashes of those tables."""
    hashes = {
        f"{name}_hash": table_hash(table)
        for name, table in zip(("manifest", "labels", "splits"), tables, strict=True)
    }
    views = labelled_views(*tables, view_step)
    return views[views.split != "test"].reset_index(drop=True), hashes


def learnt_images(manifest: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """Content hashes (16 hex digits) of every source image of the training and validation
    patients: which images a model learnt from, whatever pseudonyms they get later."""
    seen = splits.loc[splits.split != "test", "patient_id"]
    hashes = manifest.loc[manifest.patient_id.isin(seen), "source_sha256"].str[:16]
    return pd.DataFrame({"source_sha256": sorted(set(hashes))})


def model_bundle(
    layout: DataLayout,
    config: TrainConfig,
    views: pd.DataFrame,
    calibration: Calibration,
    attention: AttentionPooling | None = None,
) -> ModelBundle:
    """The ingestion settings the image store was made with, the calibration and the branch
    aggregation, bundled with the network; the views must carry their fingerprint (what
    serving does is what training saw)."""
    saved = layout.ingest_settings
    size = int(views["size"].iloc[0])
    ingest = IngestConfig.read(saved) if saved.is_file() else IngestConfig(CleanupConfig(size))
    bundle = ModelBundle(
        config.arch,
        ingest,
        calibration=calibration,
        aggregation=config.aggregation,
        attention=attention,
        target=config.target,
        view_channels=config.view_channels,
        tta=config.tta,
    )
    bundle.check_store(views.cleanup_fingerprint)
    return bundle


def check_images(
    layout: DataLayout, views: pd.DataFrame, channels: str, count: int = 64
) -> np.ndarray:
    """Validation views (else training views), as the network takes them, to check the ONNX
    export against the network."""
    ordered = pd.concat([views[views.split == "validation"], views[views.split != "validation"]])
    dataset = ViewDataset(ordered.head(count), layout.images, channels=channels)
    return np.stack([dataset.model_image(i) for i in range(len(dataset))])


@dataclass(frozen=True)
class ValidationOutputs:
    """The trained network's probabilities and embeddings of the validation views, computed
    once for the branch head and the calibration."""

    views: pd.DataFrame
    probabilities: np.ndarray
    embeddings: np.ndarray

    @classmethod
    def of(cls, layout: DataLayout, model, views: pd.DataFrame, config: TrainConfig):
        """The validation views scored as the model will serve them (its test-time
        augmentation included), before calibration."""
        validation = views[views.split == "validation"].reset_index(drop=True)
        engine = augmented(TorchEngine(model), config.tta)
        outputs = view_outputs(engine, validation, layout.images, config.view_channels)
        return cls(validation, *outputs)


def calibrate_on_validation(
    validation: ValidationOutputs, head: AttentionPooling | None, outputs: OutputSpace
) -> Calibration:
    """Temperature and referral threshold fitted on the validation views, their branches
    decided as the model will decide them (`head`, else the vote); logged to the run."""
    scored = validation.views.assign(pred=validation.probabilities.argmax(1))
    branches = decide_branches(scored, validation.embeddings, head)
    decided = validation.views.assign(branch_pred=outputs.classes_of(branches))
    calibration = fit_calibration(decided, validation.probabilities, outputs)
    mlflow.log_params(
        {
            "calibration_temperature": round(calibration.temperature, 4),
            "referral_threshold": calibration.referral_threshold,
            "target_sensitivity": calibration.target_sensitivity,
        }
    )
    mlflow.log_metrics(
        {
            f"val_{k}" if k.startswith("ece") else f"val_referral_{k}": v
            for k, v in calibration.validation.items()
            if isinstance(v, float)
        }
    )
    return calibration


def fit_branch_head(
    layout: DataLayout,
    trained: TrainResult,
    views: pd.DataFrame,
    validation: ValidationOutputs,
    config: TrainConfig,
) -> AttentionPooling | None:
    """With `aggregation: attention`, the attention head trained on the trained network's
    embeddings of the training branches and selected on validation (logged); with
    `attention_end_to_end`, the head trained with the network; else None."""
    if config.aggregation == END_TO_END:
        return trained.head
    if config.aggregation != "attention":
        return None
    train = views[views.split == "train"].reset_index(drop=True)
    engine = augmented(TorchEngine(trained.model), config.tta)  # as it will serve
    embeddings = view_outputs(engine, train, layout.images, config.view_channels)[1]
    outputs = output_space(config.target)
    head, f1 = fit_attention(
        Bags.of(train, embeddings, outputs),
        Bags.of(validation.views, validation.embeddings, outputs),
        outputs,
        seed=config.seed,
    )
    mlflow.log_metric("val_branch_f1_attention", f1)
    return head


def curves_png(history: list[EpochRecord]) -> bytes:
    """Losses, and validation branch F1 and view accuracy, per epoch."""
    epochs = [h.epoch for h in history]
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(9, 3.2))
    left.plot(epochs, [h.train_loss for h in history], label="train loss")
    left.plot(epochs, [h.val_loss for h in history], label="validation loss")
    left.set_xlabel("epoch")
    left.legend()
    right.plot(epochs, [h.val_branch_f1 for h in history], label="val branch weighted F1")
    right.plot(epochs, [h.val_view_accuracy for h in history], label="val view accuracy")
    right.set_xlabel("epoch")
    right.set_ylim(0, 1)
    right.legend()
    fig.tight_layout()
    return figure_png(fig, dpi=90)


def log_parameters(config: TrainConfig, hashes: dict[str, str], views: pd.DataFrame) -> None:
    params = {f"train.{k}": v for k, v in asdict(config).items()}
    params |= hashes | {
        "git_commit": git_commit(),
        "image_size": int(views["size"].iloc[0]),
        "train_views": int((views.split == "train").sum()),
        "val_views": int((views.split == "validation").sum()),
        "cleanup_fingerprint": str(views.cleanup_fingerprint.iloc[0]),
        "cpu_kernels": CPU_KERNELS,
        "thread_wait": THREAD_WAIT,
        "cpu_threads": training_threads(loader_workers(config)) or "OMP_NUM_THREADS",
    }
    mlflow.log_params(params)


def log_run_inputs(config: TrainConfig, manifest: pd.DataFrame, splits: pd.DataFrame) -> None:
    """What a registering run learnt from, as artifacts of the active run: the settings,
    the class map, the splits and the learnt images' hashes (the leak checks read them)."""
    files = {
        "config.json": json.dumps(asdict(config), indent=2),
        "class_map.json": json.dumps(output_map(output_space(config.target)), indent=2),
        "splits.csv": splits.to_csv(index=False),
        LEARNT_IMAGES: learnt_images(manifest, splits).to_csv(index=False),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
            mlflow.log_artifact(str(Path(tmp) / name))


def progress_line(record: EpochRecord, history: list[EpochRecord], epochs: int) -> str:
    """One epoch as the run log shows it, with the time left if every epoch runs."""
    left = (epochs - record.epoch - 1) * float(np.mean([h.seconds for h in history]))
    return (
        f"epoch {record.epoch + 1}/{epochs}: train loss {record.train_loss:.3f}, validation "
        f"loss {record.val_loss:.3f}, validation branch weighted F1 {record.val_branch_f1:.3f}, "
        f"{record.images_per_s:.0f} images/s, {record.seconds:.0f} s; at most "
        f"{left // 60:.0f} min {left % 60:.0f} s left"
    )


def run_training(
    layout: DataLayout,
    config: TrainConfig,
    tracking: Tracking,
    tags: dict[str, str] | None = None,
    run_name: str = "train",
    progress: Callable[[str], None] | None = None,
) -> TrainingSummary | None:
    """Train; rank 0 logs the run and registers the model as the new challenger, and hands
    each epoch's `progress_line` to `progress` (the Dagster run log, the terminal)."""
    rank, _ = distributed_context()
    manifest, labels, splits = read_tables(layout)
    views, hashes = training_views((manifest, labels, splits), config.view_step)
    if rank != 0:
        train(config, views, layout.images, layout.checkpoints)
        return None
    with tracking.start_run(run_name, tags=tags) as run, tempfile.TemporaryDirectory() as tmp:
        log_parameters(config, hashes, views)
        log_run_inputs(config, manifest, splits)
        tmp = Path(tmp)
        outputs = output_space(config.target)

        history: list[EpochRecord] = []

        def on_epoch(record: EpochRecord) -> None:
            mlflow.log_metrics(
                {k: v for k, v in asdict(record).items() if k != "epoch"}, step=record.epoch
            )
            history.append(record)
            if progress is not None:
                progress(progress_line(record, history, config.epochs))

        result = train(config, views, layout.images, layout.checkpoints, on_epoch)
        mlflow.log_param("weights_used", result.weights_used)
        mlflow.log_metrics(
            {"best_val_branch_f1": result.best_val_branch_f1, "best_epoch": result.best_epoch}
        )
        (tmp / "curves.png").write_bytes(curves_png(result.history))
        pd.DataFrame([asdict(h) for h in result.history]).to_csv(tmp / "history.csv", index=False)
        for name in ("curves.png", "history.csv"):
            mlflow.log_artifact(str(tmp / name))
        validation = ValidationOutputs.of(layout, result.model, views, config)
        head = fit_branch_head(layout, result, views, validation, config)
        calibration = calibrate_on_validation(validation, head, outputs)
        version = tracking.register(
            result.model,
            model_bundle(layout, config, views, calibration, head),
            check_images(layout, views, config.view_channels),
        )
        return TrainingSummary(
            run_id=run.info.run_id,
            model_version=version,
            weights_used=result.weights_used,
            best_epoch=result.best_epoch,
            best_val_branch_f1=result.best_val_branch_f1,
            epochs_run=len(result.history),
            train_views=int((views.split == "train").sum()),
            val_views=int((views.split == "validation").sum()),
            train_images_per_s=float(np.median([h.images_per_s for h in result.history])),
            resumed_from_epoch=result.resumed_from_epoch,
        )
