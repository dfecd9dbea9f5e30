"""Patient-level k-fold cross-validation as one MLflow parent run with a nested run per
fold (wiring: imports mlflow). Each fold trains on the other folds, selects and calibrates
on its own, and scores its own patients (out of fold); the parent logs each fold's figures,
their mean and spread, and the pooled out-of-fold figures. The test split is never read.
Nothing is registered: the single-split `cass train` and the `stenosis_model` asset make
the served model."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import pandas as pd

from cass_pipeline.domain.evaluation.crossval import crossval_markdown, logged_figures
from cass_pipeline.domain.model.aggregation import decide_branches
from cass_pipeline.domain.model.config import TrainConfig
from cass_pipeline.domain.model.metrics import evaluate
from cass_pipeline.domain.model.splits import cross_validation_folds, fold_splits
from cass_pipeline.domain.model.targets import OutputSpace, output_space
from cass_pipeline.domain.model.train import distributed_context, train
from cass_pipeline.layout import DataLayout
from cass_pipeline.runs.tracking import Tracking
from cass_pipeline.runs.training import (
    ValidationOutputs,
    fit_branch_head,
    log_parameters,
    read_tables,
    training_views,
)

#: The out-of-fold predictions' columns (one row per validation view of its fold).
OOF_COLUMNS = ["fold", "patient_id", "branch", "view_index", "label", "pred", "branch_pred"]


@dataclass(frozen=True)
class CrossValidation:
    """What a cross-validation gives: the parent run, each fold's figures, the pooled ones."""

    run_id: str
    per_fold: list[dict]
    pooled: dict
    markdown: str


def out_of_fold(
    validation: ValidationOutputs, head, outputs: OutputSpace, fold: int
) -> pd.DataFrame:
    """A fold's own patients' views with their class and their branch's class, decided as
    the fold's model decides them (`head`, else the vote)."""
    predicted = validation.probabilities.argmax(1)
    scored = validation.views.assign(pred=predicted)
    branches = decide_branches(scored, validation.embeddings, head)
    table = validation.views.assign(
        fold=fold,
        pred=outputs.classes_of(predicted),
        branch_pred=outputs.classes_of(branches),
    )
    return table[OOF_COLUMNS]


def run_cross_validation(
    layout: DataLayout,
    config: TrainConfig,
    tracking: Tracking,
    folds: int,
    tags: dict[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
    bootstrap: int = 200,
) -> CrossValidation:
    """`folds`-fold cross-validation of `config` on the training and validation patients."""
    if distributed_context()[1] > 1:
        raise ValueError("cross-validation runs in one process (torchrun trains one split)")
    say = progress or (lambda line: None)
    manifest, labels, splits = read_tables(layout)
    assignment = cross_validation_folds(splits, folds, config.seed)
    outputs = output_space(config.target)
    per_fold, oof = [], []
    with tracking.start_run(f"cross-validation-{folds}", tags=tags) as parent:
        mlflow.log_param("folds", folds)
        for fold in range(folds):
            tables = (manifest, labels, fold_splits(splits, assignment, fold))
            views, hashes = training_views(tables, config.view_step)
            checkpoints = layout.checkpoints / f"fold-{fold}"
            shutil.rmtree(checkpoints, ignore_errors=True)
            with mlflow.start_run(run_name=f"fold-{fold}", nested=True):
                log_parameters(config, hashes, views)
                mlflow.log_param("fold", fold)
                result = train(config, views, layout.images, checkpoints)
                validation = ValidationOutputs.of(layout, result.model, views, config)
                head = fit_branch_head(layout, result, views, validation, config)
                table = out_of_fold(validation, head, outputs, fold)
                figures = evaluate(table, bootstrap=0)
                mlflow.log_metrics(
                    {f"oof_{level}_f1_weighted": figures[level]["f1_weighted"] for level in figures}
                )
            shutil.rmtree(checkpoints, ignore_errors=True)
            per_fold.append(figures)
            oof.append(table)
            say(
                f"fold {fold + 1}/{folds}: {table.patient_id.nunique()} patients out of fold, "
                f"patient weighted F1 {figures['patient']['f1_weighted']:.3f}"
            )
        pooled_table = pd.concat(oof, ignore_index=True)
        pooled = evaluate(pooled_table, bootstrap=bootstrap, seed=config.seed)
        markdown = crossval_markdown(per_fold, pooled)
        mlflow.log_metrics(logged_figures(per_fold, pooled))
        with tempfile.TemporaryDirectory() as tmp:
            files = {
                "out_of_fold_predictions.csv": pooled_table.to_csv(index=False),
                "folds.csv": assignment.to_csv(index=False),
                "cross_validation.md": markdown + "\n",
                "cross_validation.json": json.dumps(
                    {"config": asdict(config), "per_fold": per_fold, "pooled": pooled}, indent=2
                ),
            }
            for name, text in files.items():
                (Path(tmp) / name).write_text(text)
                mlflow.log_artifact(str(Path(tmp) / name), artifact_path="cross_validation")
        return CrossValidation(parent.info.run_id, per_fold, pooled, markdown)
