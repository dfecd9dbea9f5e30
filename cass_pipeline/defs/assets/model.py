"""Model stage: patient splits and the tracked, registered ShuffleNet V2 training run."""

import json
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from cass_pipeline.defs.presentation import parquet_metadata
from cass_pipeline.defs.resources import CassPaths, MlflowTracking
from cass_pipeline.domain.model import splits as split_rules
from cass_pipeline.domain.model.train import TrainConfig
from cass_pipeline.domain.storage import write_parquet_atomic
from cass_pipeline.training_run import TrainingInputs, run_training


class SplitConfig(dg.Config):
    """Shares of patients per split (default: the paper's 708 / 15 / 105) and the seed."""

    train: float = split_rules.PAPER_RATIOS[0]
    validation: float = split_rules.PAPER_RATIOS[1]
    test: float = split_rules.PAPER_RATIOS[2]
    seed: int = 7
    floor_per_class: int = Field(
        default=2,
        description="minimum patients of each class in validation and test, where possible",
    )


def splits_path(paths: CassPaths) -> Path:
    return Path(TrainingInputs.under(paths.processed).splits)


@dg.asset(group_name="model", deps=["patient_labels", "mpr_manifest"], kinds={"parquet"})
def patient_splits(config: SplitConfig, paths: CassPaths) -> dg.MaterializeResult:
    """Train / validation / test by patient, stratified by patient class, for patients with
    both a label and images."""
    labels = pd.read_parquet(paths.processed / "reports" / "patient_labels.parquet")
    manifest = pd.read_parquet(
        paths.processed / "images" / "manifest.parquet", columns=["patient_id"]
    )
    usable = split_rules.splittable_patients(labels, manifest)
    table = split_rules.patient_splits(
        usable,
        (config.train, config.validation, config.test),
        config.seed,
        config.floor_per_class,
    )
    write_parquet_atomic(table, splits_path(paths), split_rules.SPLIT_SCHEMA)
    counts = table.groupby(["split", "patient_class"]).size().unstack(fill_value=0)
    return dg.MaterializeResult(
        metadata={
            **parquet_metadata(splits_path(paths)),
            "patients_per_split": dg.MetadataValue.json(table.split.value_counts().to_dict()),
            "classes_per_split": dg.MetadataValue.md(counts.to_markdown()),
            "patients_left_out": int(len(labels) - len(usable)),
        }
    )


@dg.asset_check(
    asset=patient_splits, blocking=True, description="No patient, and no image, in two splits."
)
def no_patient_in_two_splits(paths: CassPaths) -> dg.AssetCheckResult:
    splits = pd.read_parquet(splits_path(paths))
    manifest = pd.read_parquet(
        paths.processed / "images" / "manifest.parquet", columns=["patient_id", "source_sha256"]
    )
    leaks = split_rules.split_leaks(splits, manifest)
    return dg.AssetCheckResult(
        passed=not leaks["patients"] and not leaks["images"],
        metadata={
            "patients_in_two_splits": len(leaks["patients"]),
            "images_in_two_splits": len(leaks["images"]),
            "examples": dg.MetadataValue.json(leaks["patients"][:5] + leaks["images"][:5]),
        },
    )


class TrainAssetConfig(dg.Config):
    """Training settings; the demo defaults fit the 10-minute `make run` on 2 CPU cores."""

    arch: str = Field(default="shufflenet_v2_x1_0", description="x0_5, x1_0, x1_5 or x2_0")
    weights: str = Field(default="auto", description="auto | imagenet | none | <path>")
    lr: float = 1e-4
    lr_schedule: str = Field(
        default=TrainConfig.lr_schedule, description="constant | cosine (to 0 at the last epoch)"
    )
    batch_size: int = 32
    accumulation_steps: int = 1
    epochs: int = 30
    patience: int = 5
    view_step: int = 1
    imbalance: str = Field(default="sampler", description="sampler | class_weights | none")
    aggregation: str = Field(
        default=TrainConfig.aggregation,
        description="vote (the paper's) | attention (pooling over view embeddings, MIL)",
    )
    num_workers: int = 0
    seed: int = 7
    device: str = Field(default=TrainConfig.device, description="auto | cpu | cuda | mps")
    channels_last: bool = TrainConfig.channels_last
    amp: bool = Field(default=TrainConfig.amp, description="mixed precision (CUDA only)")
    time_budget_s: float | None = Field(
        default=None, description="stop after the epoch that passes this many seconds"
    )
    nproc: int = Field(default=1, description="processes; > 1 runs torchrun (DDP) via Pipes")
    resume: bool = Field(default=True, description="continue an interrupted run's checkpoint")

    def train_config(self) -> TrainConfig:
        fields = set(TrainConfig.__dataclass_fields__)
        return TrainConfig(**{k: v for k, v in self.model_dump().items() if k in fields})


@dg.asset(
    group_name="model",
    deps=[patient_splits, "mpr_manifest", "branch_labels"],
    kinds={"pytorch", "mlflow"},
)
def stenosis_model(
    context: dg.AssetExecutionContext,
    config: TrainAssetConfig,
    paths: CassPaths,
    mlflow_tracking: MlflowTracking,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    """ShuffleNet V2 trained on the train split, selected on validation branch F1, logged to
    MLflow and registered as a new `cass-stenosis` version with alias `challenger`."""
    inputs = TrainingInputs.under(paths.processed)
    if not config.resume:
        shutil.rmtree(inputs.checkpoint_dir, ignore_errors=True)
    tags = {"dagster_run_id": context.run.run_id, "dagster_asset": "stenosis_model"}
    tracking = mlflow_tracking.tracking()
    train_config = config.train_config()
    if config.nproc > 1:
        with tempfile.TemporaryDirectory() as tmp:
            spec = Path(tmp) / "spec.json"
            spec.write_text(
                json.dumps(
                    {
                        "inputs": asdict(inputs),
                        "config": asdict(train_config),
                        "tracking": asdict(tracking),
                        "tags": tags,
                        "run_name": "train-ddp",
                    }
                )
            )
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc-per-node={config.nproc}",
                "-m",
                "cass_pipeline.training_entry",
                str(spec),
            ]
            return pipes_subprocess_client.run(
                command=command, context=context
            ).get_materialize_result()
    summary = run_training(inputs, train_config, tracking, tags, progress=context.log.info)
    metadata = {k: v for k, v in asdict(summary).items() if v is not None}
    metadata["mlflow_run"] = dg.MetadataValue.text(
        f"{tracking.tracking_uri} experiment {tracking.experiment_name} run {summary.run_id}"
    )
    metadata["model_uri"] = dg.MetadataValue.text(f"models:/cass-stenosis/{summary.model_version}")
    metadata["alias"] = "challenger"
    return dg.MaterializeResult(metadata=metadata)


retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.assets(patient_splits).downstream()
    - dg.AssetSelection.groups("prediction"),
    description="Splits, training and evaluation (materialise the upstream stages first); "
    "inbox predictions made by an earlier champion then show as stale.",
)

weekly_retrain = dg.ScheduleDefinition(
    job=retrain_job,
    cron_schedule="0 3 * * 1",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrains every Monday at 03:00 UTC; start it in the UI (Automation) or with "
    "`dagster schedule start weekly_retrain`.",
    name="weekly_retrain",
)
