"""Patient-level k-fold cross-validation as one MLflow parent run with a nested run per
fold (wiring: imports mlflow). Each fold trains on the other folds, selects and calibrates
on its own, and scores its own patients (out of fold) through the one `Predictor`; the
parent logs each fold's figures, their mean and spread, and the pooled out-of-fold figures.
The test split is never read. With `ensemble`, the K fold networks are registered as one
model version (`ensemble.py`), calibrated on the pooled out-of-fold predictions; without,
nothing is registered."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from torch import nn

from cass_pipeline.domain.evaluation.crossval import crossval_markdown, fold_figures, logged_figures
from cass_pipeline.domain.model.calibration import fit_calibration
from cass_pipeline.domain.model.config import TrainConfig
from cass_pipeline.domain.model.ensemble import EnsembleHead, NetworkEnsemble
from cass_pipeline.domain.model.inference import TorchEngine
from cass_pipeline.domain.model.splits import cross_validation_folds, fold_splits
from cass_pipeline.domain.model.targets import output_space
from cass_pipeline.domain.model.train import distributed_context, train
from cass_pipeline.domain.prediction.predictor import Predictor
from cass_pipeline.layout import DataLayout
from cass_pipeline.runs.tracking import Tracking
from cass_pipeline.runs.training import (
    ValidationOutputs,
    calibrate_on_validation,
    check_images,
    fit_branch_head,
    log_parameters,
    log_run_inputs,
    model_bundle,
    read_tables,
    training_views,
)

#: The out-of-fold predictions' columns (one row per validation view of its fold).
OOF_COLUMNS = [
    "fold",
    "patient_id",
    "branch",
    "view_index",
    "label",
    "grade_low",
    "grade_high",
    "pred",
    "branch_pred",
    "grade_pred",
    "branch_grade",
]


@dataclass(frozen=True)
class CrossValidation:
    """What a cross-validation gives: the parent run, each fold's figures, the pooled ones,
    and the registered ensemble's version (None when figures only)."""

    run_id: str
    per_fold: list[dict]
    pooled: dict
    markdown: str
    model_version: int | None = None


@dataclass(frozen=True)
class Fold:
    """One fold trained: its network and attention head, its out-of-fold view predictions
    as served, and the uncalibrated probabilities of the same views (for the ensemble's
    calibration)."""

    network: nn.Module | None
    head: nn.Module | None
    predictions: pd.DataFrame
    uncalibrated: np.ndarray


def train_fold(layout: DataLayout, config: TrainConfig, views: pd.DataFrame, fold: int) -> Fold:
    """Train on the fold's training views, select, fit its head and calibration on its own
    patients, and score them as the fold's model would serve them."""
    checkpoints = layout.checkpoints / f"fold-{fold}"
    shutil.rmtree(checkpoints, ignore_errors=True)
    result = train(config, views, layout.images, checkpoints)
    shutil.rmtree(checkpoints, ignore_errors=True)
    validation = ValidationOutputs.of(layout, result.model, views, config)
    head = fit_branch_head(layout, result, views, validation, config)
    calibration = calibrate_on_validation(validation, head, output_space(config.target))
    bundle = model_bundle(layout, config, views, calibration, head)
    served = Predictor(bundle, bundle.engine(TorchEngine(result.model)), lambda: result.model)
    scored = served.score_views(validation.views, layout.images).assign(fold=fold)
    return Fold(result.model, head, scored, validation.probabilities)


def register_ensemble(
    layout: DataLayout,
    config: TrainConfig,
    tracking: Tracking,
    folds: list[Fold],
    views: pd.DataFrame,
) -> int:
    """The fold networks as one model version: temperature and referral threshold fitted on
    the pooled out-of-fold predictions (each patient scored by the member that did not
    train on it), registered as the challenger."""
    outputs = output_space(config.target)
    calibration = fit_calibration(
        pd.concat([f.predictions for f in folds], ignore_index=True),
        np.concatenate([f.uncalibrated for f in folds]),
        outputs,
    )
    patients = sum(f.predictions.patient_id.nunique() for f in folds)
    calibration = replace(
        calibration,
        fitted_on=f"out-of-fold predictions of {len(folds)} folds: "
        f"{sum(len(f.predictions) for f in folds)} views, {patients} patients",
    )
    mlflow.log_params(
        {
            "calibration_temperature": round(calibration.temperature, 4),
            "referral_threshold": calibration.referral_threshold,
            "ensemble_members": len(folds),
        }
    )
    heads = [f.head for f in folds]
    bundle = replace(
        model_bundle(
            layout,
            config,
            views,
            calibration,
            None if heads[0] is None else EnsembleHead(heads),
        ),
        members=tuple(f"fold-{k}" for k in range(len(folds))),
    )
    return tracking.register(
        NetworkEnsemble([f.network for f in folds]),
        bundle,
        check_images(layout, views, config.view_channels),
    )


def run_cross_validation(
    layout: DataLayout,
    config: TrainConfig,
    tracking: Tracking,
    folds: int,
    tags: dict[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
    bootstrap: int = 200,
    ensemble: bool = False,
) -> CrossValidation:
    """`folds`-fold cross-validation of `config` on the training and validation patients;
    with `ensemble`, the fold networks registered as one version."""
    if distributed_context()[1] > 1:
        raise ValueError("cross-validation runs in one process (torchrun trains one split)")
    say = progress or (lambda line: None)
    manifest, labels, splits = read_tables(layout)
    assignment = cross_validation_folds(splits, folds, config.seed)
    per_fold, trained = [], []
    with tracking.start_run(f"cross-validation-{folds}", tags=tags) as parent:
        mlflow.log_params({"folds": folds, "ensemble": ensemble})
        for fold in range(folds):
            tables = (manifest, labels, fold_splits(splits, assignment, fold))
            views, hashes = training_views(tables, config.view_step)
            with mlflow.start_run(run_name=f"fold-{fold}", nested=True):
                log_parameters(config, hashes, views)
                mlflow.log_param("fold", fold)
                done = train_fold(layout, config, views, fold)
                figures = fold_figures(done.predictions)
                mlflow.log_metrics(
                    {
                        f"oof_{level}_f1_weighted": figures[level]["f1_weighted"]
                        for level in figures
                        if level != "cad_rads"
                    }
                )
            per_fold.append(figures)
            trained.append(done if ensemble else replace(done, network=None, head=None))
            say(
                f"fold {fold + 1}/{folds}: {done.predictions.patient_id.nunique()} patients out "
                f"of fold, patient weighted F1 {figures['patient']['f1_weighted']:.3f}"
            )
        pooled_table = pd.concat([f.predictions for f in trained], ignore_index=True)
        pooled = fold_figures(pooled_table, bootstrap, config.seed)
        markdown = crossval_markdown(per_fold, pooled)
        mlflow.log_metrics(logged_figures(per_fold, pooled))
        with tempfile.TemporaryDirectory() as tmp:
            files = {
                "out_of_fold_predictions.csv": pooled_table[OOF_COLUMNS].to_csv(index=False),
                "folds.csv": assignment.to_csv(index=False),
                "cross_validation.md": markdown + "\n",
                "cross_validation.json": json.dumps(
                    {"config": asdict(config), "per_fold": per_fold, "pooled": pooled}, indent=2
                ),
            }
            for name, text in files.items():
                (Path(tmp) / name).write_text(text)
                mlflow.log_artifact(str(Path(tmp) / name), artifact_path="cross_validation")
        version = None
        if ensemble:
            log_run_inputs(config, manifest, splits)
            all_views, _ = training_views((manifest, labels, splits), config.view_step)
            version = register_ensemble(layout, config, tracking, trained, all_views)
        return CrossValidation(parent.info.run_id, per_fold, pooled, markdown, version)
