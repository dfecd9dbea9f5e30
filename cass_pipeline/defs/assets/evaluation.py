"""Evaluation stage: test predictions, hierarchical metrics, champion promotion, explanations.

The rules (metrics, their rendering, promotion) are the domain's; this module wires them to
the processed tables and the MLflow registry.
"""

import json
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from cass_pipeline.defs.assets.model import patient_splits, stenosis_model
from cass_pipeline.defs.config import config_class, config_fields, settings_from
from cass_pipeline.defs.presentation import none_as_text, parquet_metadata, png_markdown
from cass_pipeline.defs.resources import CassPaths, MlflowTracking
from cass_pipeline.domain.evaluation import promotion
from cass_pipeline.domain.evaluation.config import CHALLENGER, CHAMPION
from cass_pipeline.domain.evaluation.model_card import CardFacts, card_tags, model_card
from cass_pipeline.domain.evaluation.report import (
    RANKING_SCHEMA,
    TRIAGE_METRICS,
    EvaluationReport,
    evaluate_model,
)
from cass_pipeline.domain.model.calibration import Calibration
from cass_pipeline.domain.model.config import EvaluateSettings, ExplainSettings
from cass_pipeline.domain.model.data import ViewDataset
from cass_pipeline.domain.model.ensemble import torch_engine
from cass_pipeline.domain.model.explain import explain_views, explanation_sample
from cass_pipeline.domain.model.inference import largest_difference, view_probabilities
from cass_pipeline.domain.prediction.bundle import ONNX_TOLERANCE
from cass_pipeline.domain.prediction.predictor import VIEW_PREDICTION_SCHEMA
from cass_pipeline.domain.storage import write_bytes_atomic, write_parquet_atomic, write_text_atomic
from cass_pipeline.domain.synthetic.cohort import is_synthetic_cohort
from cass_pipeline.layout import DataLayout
from cass_pipeline.runs.tracking import (
    LoadedModel,
    NotServableError,
    Tracking,
)
from cass_pipeline.runs.training import load_views
from cass_pipeline.settings import REGISTERED_MODEL_NAME

RANKING_PREVIEW = 10


def test_views(layout: DataLayout) -> pd.DataFrame:
    """Labelled views of the test split (the only place the test split is read)."""
    views = load_views(layout)
    return views[views.split == "test"].reset_index(drop=True)


def predictions_with(loaded: LoadedModel, views: pd.DataFrame, layout: DataLayout) -> pd.DataFrame:
    """The registered model's view predictions, through its own predictor (as served)."""
    try:
        loaded.predictor.bundle.check_store(views.cleanup_fingerprint)
    except ValueError as error:
        raise dg.Failure(f"model version {loaded.version}: {error}") from error
    scored = loaded.predictor.score_views(views, layout.images)
    return scored.assign(model_version=loaded.version)[VIEW_PREDICTION_SCHEMA.names]


@dg.asset(group_name="evaluation", deps=[stenosis_model, patient_splits], kinds={"parquet"})
def test_predictions(
    context: dg.AssetExecutionContext, paths: CassPaths, mlflow_tracking: MlflowTracking
) -> dg.MaterializeResult:
    """The challenger's per-view probabilities and class on the test split, through the
    registered model (ONNX Runtime); its PyTorch network is scored too, to check the export."""
    mlflow_tracking.registry()
    loaded = mlflow_tracking.load(CHALLENGER)
    path = paths.layout.test_predictions
    network = loaded.predictor.bundle.engine(torch_engine(loaded.predictor.network()))
    with paths.images_of_run(context) as layout:
        views = test_views(layout)
        scored = predictions_with(loaded, views, layout)
        write_parquet_atomic(scored, path, VIEW_PREDICTION_SCHEMA)
        channels = loaded.predictor.bundle.view_channels
        by_torch = view_probabilities(network, views, layout.images, channels)
    columns = loaded.predictor.bundle.outputs.probability_columns
    difference, changed = largest_difference(scored[columns].to_numpy(), by_torch)
    parity = {
        "model_version": loaded.version,
        "views": len(views),
        "largest_probability_difference": difference,
        "views_changing_class": changed,
        "tolerance": ONNX_TOLERANCE,
    }
    write_text_atomic(paths.layout.onnx_parity, json.dumps(parity, indent=2))
    return dg.MaterializeResult(
        metadata={
            **parquet_metadata(path),
            "model_version": loaded.version,
            "engine": loaded.predictor.engine.name,
            "onnx_vs_pytorch_largest_difference": difference,
            "onnx_vs_pytorch_views_changing_class": changed,
        }
    )


@dg.asset_check(
    asset=test_predictions,
    blocking=True,
    description="On the test split the served ONNX model gives the PyTorch network's classes, "
    "every probability within 1e-4.",
)
def onnx_matches_pytorch(paths: CassPaths) -> dg.AssetCheckResult:
    parity = json.loads(paths.layout.onnx_parity.read_text())
    return dg.AssetCheckResult(
        passed=parity["views_changing_class"] == 0
        and parity["largest_probability_difference"] <= parity["tolerance"],
        metadata=parity,
    )


def log_to_run(tracking, run_id: str, metrics: dict, files: dict[str, bytes]) -> None:
    """Metrics (None ones left out) and artifacts added to the challenger's training run."""
    client = tracking.client()
    for key, value in metrics.items():
        if value is not None:
            client.log_metric(run_id, key, value)
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
            client.log_artifact(run_id, str(Path(tmp) / name), artifact_path="evaluation")


def report_metadata(report: EvaluationReport) -> dict:
    """What the UI shows of an evaluation."""
    metrics, on_test = report.metrics, report.on_test
    return {
        "metrics": dg.MetadataValue.md(report.metrics_markdown),
        "confusion_matrices": png_markdown(
            report.confusion_png, "row-normalised confusion matrices"
        ),
        "segment_f1_weighted": metrics["segment"]["f1_weighted"],
        "segment_f1_majority_baseline": report.all_healthy["segment"]["f1_weighted"],
        "patient_f1_weighted": metrics["patient"]["f1_weighted"],
        "aggregation": report.aggregation,
        "aggregation_vs_vote": dg.MetadataValue.md(report.aggregation_markdown),
        "cad_rads": dg.MetadataValue.md(report.grade_markdown),
        "calibration_and_operating_point": dg.MetadataValue.md(report.triage_markdown),
        "reliability_diagram": png_markdown(report.reliability_png, "reliability before and after"),
        "patient_ranking_top": dg.MetadataValue.md(
            report.ranking.head(RANKING_PREVIEW).to_markdown(index=False, floatfmt=".3f")
        ),
        **{name: none_as_text(on_test[key]) for key, name in TRIAGE_METRICS.items()},
        "referral_threshold": none_as_text(report.calibration.referral_threshold),
        "temperature": report.calibration.temperature,
    }


EvaluationConfig = config_class(
    "EvaluationConfig",
    dg.Config,
    "How the metrics are computed: the domain's `EvaluateSettings`.",
    **config_fields(EvaluateSettings),
)


@dg.asset(group_name="evaluation", deps=[test_predictions], kinds={"mlflow"})
def evaluation_report(
    config: EvaluationConfig, paths: CassPaths, mlflow_tracking: MlflowTracking
) -> dg.MaterializeResult:
    """Segment / artery / patient metrics of the challenger on the test split, beside the
    paper's Table 2; logged on the training run."""
    predictions = pd.read_parquet(paths.layout.test_predictions)
    version = int(predictions.model_version.iloc[0])
    tracking = mlflow_tracking.registry()
    run_id = tracking.model_version(str(version)).run_id
    bundle = mlflow_tracking.load(str(version)).predictor.bundle
    bootstrap = settings_from(config, EvaluateSettings).bootstrap
    report = evaluate_model(
        predictions, bundle.calibration, bundle.aggregation, bundle.outputs, bootstrap
    )
    document = report.document(version, run_id)
    write_text_atomic(paths.layout.evaluation_report, json.dumps(document, indent=2))
    write_parquet_atomic(report.ranking, paths.layout.patient_ranking, RANKING_SCHEMA)
    facts = CardFacts(
        version=version,
        run_id=run_id,
        arch=bundle.arch,
        target=bundle.target,
        image_size=bundle.image_size,
        data_source=(
            "synthetic cohort, CASS generator"
            if is_synthetic_cohort(paths.raw)
            else "this site's export"
        ),
        splits=learnt_splits(tracking, run_id, paths.layout),
        metrics=report.metrics,
        grades=report.grades,
        on_test=report.on_test,
        calibration=bundle.calibration,
        members=max(1, len(bundle.members)),
        cross_validation=cross_validation_table(tracking, run_id),
    )
    card = model_card(facts)
    artifacts = {**report.artifacts(document), "model_card.md": card.encode()}
    log_to_run(tracking, run_id, report.logged_metrics(), artifacts)
    tracking.describe_version(version, card, card_tags(facts))
    return dg.MaterializeResult(
        metadata={
            "model_version": version,
            "mlflow_run_id": run_id,
            **report_metadata(report),
            "model_card": dg.MetadataValue.md(card),
        }
    )


def cross_validation_table(tracking: Tracking, run_id: str) -> str | None:
    """The run's cross-validated figures (a fold ensemble's), None for a single split."""
    path = tracking.run_artifact(run_id, "cross_validation/cross_validation.md")
    return None if path is None else path.read_text().strip()


def learnt_splits(tracking: Tracking, run_id: str, layout: DataLayout) -> pd.DataFrame:
    """The splits the run trained on (its artifact), else today's (a run before it logged
    them)."""
    logged = tracking.run_table(run_id, "splits.csv")
    return logged if logged is not None else pd.read_parquet(layout.splits)


@dg.asset_check(
    asset=evaluation_report,
    description="Whether the challenger's calibration was fitted on enough validation patients "
    "to be trusted: a warning, with the reason, when it was not.",
)
def calibration_is_reliable(paths: CassPaths) -> dg.AssetCheckResult:
    calibration = json.loads(paths.layout.evaluation_report.read_text())["calibration"]
    doubt = calibration.get("unreliable", "")
    return dg.AssetCheckResult(
        passed=not doubt,
        severity=dg.AssetCheckSeverity.WARN,
        description=doubt or "fitted on enough validation patients",
        metadata={"fitted_on": calibration.get("fitted_on", "")},
    )


#: A model registered before calibration: temperature 1, referral by class.
UNCALIBRATED = Calibration()


def against_champion(
    tracking: Tracking,
    layout: DataLayout,
    challenger_f1: float,
    version: int,
    calibration: Calibration = UNCALIBRATED,
) -> dict:
    """The champion re-evaluated on the test patients it never learnt from, the challenger on
    the same patients, and the rule's decision (`domain.promotion`); a champion that cannot
    be served, or whose cleanup differs from the store's, loses its place."""
    try:
        champion = tracking.load(CHAMPION)
    except NotServableError as error:
        return {"champion_version": version, "promote": True, "reason": str(error)}
    views = test_views(layout)
    try:
        champion.predictor.bundle.check_store(views.cleanup_fingerprint)
    except ValueError as error:  # the cleanup changed since: no like-for-like comparison
        reason = f"the champion cannot be re-evaluated on this image store ({error})"
        return {"champion_version": version, "promote": True, "reason": reason}
    fair, learnt = promotion.unseen_patients(views, *tracking.learnt_from(champion.run_id))
    patients = fair.patient_id.nunique()
    if reason := promotion.too_few_to_compare(learnt, patients):
        return {"champion_version": version, "promote": True, "reason": reason}
    entry = {"champion_version": version}
    if learnt:
        predictions = pd.read_parquet(layout.test_predictions)
        restricted = predictions[predictions.patient_id.isin(set(fair.patient_id))]
        challenger_f1 = promotion.patient_f1(restricted)
        entry |= {
            "challenger_patient_f1": challenger_f1,
            "challenger_significant_sensitivity": promotion.significant_sensitivity(
                restricted, calibration
            ),
        }
    scored = predictions_with(champion, fair, layout)
    where = (
        f"on the {patients} test patients neither model learnt from"
        if learnt
        else "on the same test split"
    )
    return entry | {
        "champion_significant_sensitivity": promotion.significant_sensitivity(
            scored, champion.predictor.bundle.calibration
        ),
        **promotion.compare(challenger_f1, promotion.patient_f1(scored), where),
    }


@dg.asset(group_name="evaluation", deps=[evaluation_report], kinds={"mlflow"})
def promotion_decision(
    context: dg.AssetExecutionContext, paths: CassPaths, mlflow_tracking: MlflowTracking
) -> dg.MaterializeResult:
    """Challenger vs champion on the same test split: promote when the challenger's
    patient-level weighted F1 is at least the champion's (the champion is re-evaluated)."""
    tracking = mlflow_tracking.registry()
    report = json.loads(paths.layout.evaluation_report.read_text())
    decision = promotion.challenger_entry(report)
    champion_version = tracking.alias_version(CHAMPION)
    with paths.images_of_run(context) as layout:
        decision |= promotion.without_comparison(report["model_version"], champion_version) or (
            against_champion(
                tracking,
                layout,
                decision["challenger_patient_f1"],
                champion_version,
                Calibration.from_json(report["calibration"]),
            )
        )
    write_text_atomic(paths.layout.promotion, json.dumps(decision, indent=2))
    client = tracking.client()
    run_id = report["run_id"]
    client.set_tag(run_id, "promotion_decision", "promote" if decision["promote"] else "keep")
    client.set_tag(run_id, "promotion_reason", decision["reason"])
    if decision.get("champion_patient_f1") is not None:
        client.log_metric(
            run_id, "champion_test_patient_f1_weighted", decision["champion_patient_f1"]
        )
    return dg.MaterializeResult(metadata={k: none_as_text(v) for k, v in decision.items()})


@dg.asset_check(
    asset=promotion_decision,
    blocking=True,
    description="No promotion of a model that refers fewer significant patients at its "
    "operating point than the champion does at its own.",
)
def promotion_keeps_significant_sensitivity(paths: CassPaths) -> dg.AssetCheckResult:
    decision = json.loads(paths.layout.promotion.read_text())
    worse = promotion.refused_on_sensitivity(decision)
    return dg.AssetCheckResult(
        passed=not worse,
        metadata={
            "promote": decision["promote"],
            "challenger_significant_sensitivity": decision["challenger_significant_sensitivity"],
            "champion_significant_sensitivity": none_as_text(
                decision.get("champion_significant_sensitivity")
            ),
        },
    )


@dg.asset(group_name="evaluation", deps=[promotion_decision], kinds={"mlflow"})
def champion_model(paths: CassPaths, mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    """Moves the `champion` alias to the challenger when the decision says so."""
    decision = json.loads(paths.layout.promotion.read_text())
    tracking = mlflow_tracking.registry()
    if decision["promote"]:
        tracking.set_alias(CHAMPION, decision["challenger_version"])
    version = tracking.alias_version(CHAMPION)
    return dg.MaterializeResult(
        metadata={
            "promoted": decision["promote"],
            "reason": decision["reason"],
            "champion_version": version,
            "model_uri": f"models:/{REGISTERED_MODEL_NAME}@{CHAMPION}",
        },
        data_version=dg.DataVersion(f"champion-{version}"),
    )


ExplanationConfig = config_class(
    "ExplanationConfig",
    dg.Config,
    "Which test views are explained, and how: the domain's `ExplainSettings`.",
    **config_fields(ExplainSettings),
)


@dg.asset(group_name="evaluation", deps=[test_predictions], kinds={"pytorch"})
def explanations(
    context: dg.AssetExecutionContext,
    config: ExplanationConfig,
    paths: CassPaths,
    mlflow_tracking: MlflowTracking,
) -> dg.MaterializeResult:
    """Integrated Gradients heat maps for a sample of test views per class, and the share of
    the attribution that falls on the vessel band."""
    tracking = mlflow_tracking.registry()
    predictions = pd.read_parquet(paths.layout.test_predictions)
    loaded = mlflow_tracking.load(CHALLENGER)
    settings = settings_from(config, ExplainSettings)
    with paths.images_of_run(context) as layout:
        views = test_views(layout)
        picks = explanation_sample(views, predictions, settings.per_class)
        explained, read = explain_views(
            loaded.predictor.network(),
            ViewDataset(views, layout.images, channels=loaded.predictor.bundle.view_channels),
            picks,
            settings.steps,
            settings.vessel_band,
        )
    paths.layout.explanations.mkdir(parents=True, exist_ok=True)
    for view in explained:
        write_bytes_atomic(paths.layout.explanations / f"{view.name}.png", view.png)
    mean = float(np.mean([v.vessel_fraction for v in explained])) if explained else 0.0
    client = tracking.client()
    client.log_artifacts(loaded.run_id, str(paths.layout.explanations), "explanations")
    client.log_metric(loaded.run_id, "ig_vessel_band_fraction", mean)
    return dg.MaterializeResult(
        metadata={
            "model_version": loaded.version,
            "views_explained": len(explained),
            "withheld_for_text": dg.MetadataValue.json(
                {"views": read.text_views, "ocr_error": read.error}
            ),
            "vessel_band_attribution_fraction": mean,
            "vessel_band_area_fraction": settings.vessel_band,
            **{view.name: png_markdown(view.png, view.caption, view.caption) for view in explained},
        }
    )
