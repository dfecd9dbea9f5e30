"""Model stage: patient splits and the tracked, registered ShuffleNet V2 training run."""

import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from cass_pipeline.defs.config import config_class, config_fields, settings_from
from cass_pipeline.defs.presentation import parquet_metadata
from cass_pipeline.defs.resources import CassPaths, MlflowTracking
from cass_pipeline.domain.evaluation.config import CHALLENGER
from cass_pipeline.domain.model import splits as split_rules
from cass_pipeline.domain.model.config import TrainConfig
from cass_pipeline.runs.crossval import run_cross_validation
from cass_pipeline.runs.training import TrainingSpec, run_training, write_splits
from cass_pipeline.settings import REGISTERED_MODEL_NAME

SplitConfig = config_class(
    "SplitConfig",
    dg.Config,
    "Shares of patients per split (default: the paper's 708 / 15 / 105) and the seed: the "
    "domain's `SplitSettings`.",
    **config_fields(split_rules.SplitSettings),
)


@dg.asset(group_name="model", deps=["patient_labels", "mpr_manifest"], kinds={"parquet"})
def patient_splits(
    context: dg.AssetExecutionContext, config: SplitConfig, paths: CassPaths
) -> dg.MaterializeResult:
    """Train / validation / test by patient, stratified by patient class, for patients with
    both a label and images; patients readers labelled (`reader_labels`) train only."""
    settings = settings_from(config, split_rules.SplitSettings)
    with paths.images_of_run(context) as layout:
        table, left_out = write_splits(layout, settings)
    counts = table.groupby(["split", "patient_class"]).size().unstack(fill_value=0)
    return dg.MaterializeResult(
        metadata={
            **parquet_metadata(paths.layout.splits),
            "patients_per_split": dg.MetadataValue.json(table.split.value_counts().to_dict()),
            "classes_per_split": dg.MetadataValue.md(counts.to_markdown()),
            "patients_by_origin": dg.MetadataValue.json(table.origin.value_counts().to_dict()),
            "patients_left_out": left_out["all"],
            "held_for_review": left_out["held_for_review"],
        }
    )


@dg.asset_check(
    asset=patient_splits, blocking=True, description="No patient, and no image, in two splits."
)
def no_patient_in_two_splits(
    context: dg.AssetCheckExecutionContext, paths: CassPaths
) -> dg.AssetCheckResult:
    splits = pd.read_parquet(paths.layout.splits)
    with paths.images_of_run(context) as layout:
        manifest = pd.read_parquet(layout.manifest, columns=["patient_id", "source_sha256"])
    leaks = split_rules.split_leaks(splits, manifest)
    return dg.AssetCheckResult(
        passed=not leaks["patients"] and not leaks["images"],
        metadata={
            "patients_in_two_splits": len(leaks["patients"]),
            "images_in_two_splits": len(leaks["images"]),
            "examples": dg.MetadataValue.json(leaks["patients"][:5] + leaks["images"][:5]),
        },
    )


class TrainingRunConfig(dg.Config):
    """How the Dagster asset runs training: in this process, or torchrun over `nproc`."""

    nproc: int = Field(default=1, ge=1, description="processes; > 1 runs torchrun (DDP) via Pipes")
    resume: bool = Field(default=True, description="continue an interrupted run's checkpoint")
    ensemble_folds: int = Field(
        default=0,
        ge=0,
        description="0: one network on the train split; K >= 2: K networks by patient-level "
        "K-fold cross-validation of the training and validation patients, registered as one "
        "fold ensemble (K trainings)",
    )

    def train_config(self) -> TrainConfig:
        return settings_from(self, TrainConfig)


TrainAssetConfig = config_class(
    "TrainAssetConfig",
    TrainingRunConfig,
    "Training settings: the domain's `TrainConfig` (the paper's defaults; the demo's are in "
    "the `demo` job) and how the run is launched.",
    **config_fields(TrainConfig),
)


def train_with_torchrun(
    context: dg.AssetExecutionContext,
    pipes: dg.PipesSubprocessClient,
    spec: TrainingSpec,
    nproc: int,
) -> dg.MaterializeResult:
    """`spec` trained by `nproc` torchrun processes (DDP); rank 0 reports through Pipes."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(spec.to_json())
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "cass_pipeline.runs.entry",
            str(spec_file),
        ]
        return pipes.run(command=command, context=context).get_materialize_result()


#: What a training reads: the splits, the image manifest (and store), the branch labels.
TRAINING_INPUTS = [patient_splits, "mpr_manifest", "branch_labels"]


@dg.asset(group_name="model", deps=TRAINING_INPUTS, kinds={"pytorch", "mlflow"})
def stenosis_model(
    context: dg.AssetExecutionContext,
    config: TrainAssetConfig,
    paths: CassPaths,
    mlflow_tracking: MlflowTracking,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    """ShuffleNet V2 trained on the train split, selected on validation branch F1, logged to
    MLflow and registered as a new `cass-stenosis` version with alias `challenger`; with
    `ensemble_folds` K, K fold networks registered as one version."""
    tags = {"dagster_run_id": context.run.run_id, "dagster_asset": "stenosis_model"}
    tracking = mlflow_tracking.tracking()
    train_config = config.train_config()
    if config.ensemble_folds:
        return fold_ensemble(context, config, paths, tracking, tags)
    with paths.images_of_run(context) as layout:
        if not config.resume:
            shutil.rmtree(layout.checkpoints, ignore_errors=True)
        if config.nproc > 1:
            spec = TrainingSpec(layout, train_config, tracking, tags, "train-ddp")
            return train_with_torchrun(context, pipes_subprocess_client, spec, config.nproc)
        summary = run_training(layout, train_config, tracking, tags, progress=context.log.info)
    metadata = {k: v for k, v in asdict(summary).items() if v is not None}
    metadata["mlflow_run"] = dg.MetadataValue.text(
        f"{tracking.tracking_uri} experiment {tracking.experiment_name} run {summary.run_id}"
    )
    metadata["model_uri"] = dg.MetadataValue.text(
        f"models:/{REGISTERED_MODEL_NAME}/{summary.model_version}"
    )
    metadata["alias"] = CHALLENGER
    return dg.MaterializeResult(metadata=metadata)


def fold_ensemble(
    context: dg.AssetExecutionContext,
    config: TrainingRunConfig,
    paths: CassPaths,
    tracking,
    tags: dict[str, str],
) -> dg.MaterializeResult:
    """`stenosis_model` as a registered fold ensemble, with its cross-validated figures."""
    if config.nproc > 1 or config.ensemble_folds < 2:
        raise dg.Failure("a fold ensemble needs ensemble_folds >= 2 and runs in one process")
    with paths.images_of_run(context) as layout:
        result = run_cross_validation(
            layout,
            config.train_config(),
            tracking,
            config.ensemble_folds,
            tags,
            progress=context.log.info,
            ensemble=True,
        )
    return dg.MaterializeResult(
        metadata={
            **cross_validation_metadata(result, tracking),
            "model_uri": dg.MetadataValue.text(
                f"models:/{REGISTERED_MODEL_NAME}/{result.model_version}"
            ),
            "model_version": result.model_version,
            "alias": CHALLENGER,
        }
    )


def cross_validation_metadata(result, tracking) -> dict:
    """What the UI shows of a cross-validation: the fold table and the pooled patient F1."""
    pooled = result.pooled["patient"]
    return {
        "folds": len(result.per_fold),
        "figures": dg.MetadataValue.md(result.markdown),
        "pooled_patient_f1_weighted": pooled["f1_weighted"],
        "pooled_patient_f1_weighted_ci95": dg.MetadataValue.json(pooled["ci95"].get("f1_weighted")),
        "mlflow_run": dg.MetadataValue.text(
            f"{tracking.tracking_uri} experiment {tracking.experiment_name} run {result.run_id}"
        ),
    }


class CrossValidationRunConfig(dg.Config):
    """How many folds."""

    folds: int = Field(default=5, ge=2, description="patient-level folds (nnU-Net's default: 5)")


CrossValidationConfig = config_class(
    "CrossValidationConfig",
    CrossValidationRunConfig,
    "The training settings cross-validated (the domain's `TrainConfig`) and the folds.",
    **config_fields(TrainConfig),
)


@dg.asset(group_name="model", deps=TRAINING_INPUTS, kinds={"pytorch", "mlflow"})
def cross_validation(
    context: dg.AssetExecutionContext,
    config: CrossValidationConfig,
    paths: CassPaths,
    mlflow_tracking: MlflowTracking,
) -> dg.MaterializeResult:
    """Patient-level K-fold cross-validation of the training settings on the training and
    validation patients (stratified by class; the test split untouched): a parent MLflow
    run with a nested run per fold, each fold's out-of-fold figures, their mean and spread,
    and the pooled out-of-fold figures. Figures only: nothing is registered. Not in the demo
    nor the weekly retraining (K trainings); materialise it from the UI."""
    tags = {"dagster_run_id": context.run.run_id, "dagster_asset": "cross_validation"}
    tracking = mlflow_tracking.tracking()
    with paths.images_of_run(context) as layout:
        result = run_cross_validation(
            layout,
            settings_from(config, TrainConfig),
            tracking,
            config.folds,
            tags,
            progress=context.log.info,
        )
    return dg.MaterializeResult(metadata=cross_validation_metadata(result, tracking))


#: Assets materialised on request only (from the UI): K trainings, or another site's export.
ON_REQUEST_KEYS = ("cross_validation", "external_validation")
ON_REQUEST = dg.AssetSelection.assets(*ON_REQUEST_KEYS)
#: The same as a `--select` string: everything but the inbox and the on-request assets.
NOT_ON_REQUEST = "not group:prediction" + "".join(f" and not key:{k}" for k in ON_REQUEST_KEYS)

retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.assets(patient_splits).downstream()
    - dg.AssetSelection.groups("prediction")
    - ON_REQUEST,
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
