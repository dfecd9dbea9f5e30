"""Evaluation stage: test predictions, hierarchical metrics, champion promotion, explanations."""

import json
import tempfile
from pathlib import Path

import cv2
import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from cass_pipeline.defs.assets.model import patient_splits, stenosis_model
from cass_pipeline.defs.presentation import parquet_metadata, png_markdown
from cass_pipeline.defs.resources import CassPaths, MlflowTracking
from cass_pipeline.domain.anatomy import STENOSIS_CLASSES
from cass_pipeline.domain.calibration import (
    Calibration,
    calibration_report,
    patient_ranking,
    patient_referrals,
    referral_rates,
)
from cass_pipeline.domain.evaluation import LEVELS, PAPER_TABLE2, evaluate
from cass_pipeline.domain.explain import central_band, integrated_gradients, mass_fraction, overlay
from cass_pipeline.domain.model.data import ViewDataset
from cass_pipeline.domain.model.inference import (
    TorchEngine,
    largest_difference,
    view_probabilities,
)
from cass_pipeline.domain.prediction import ONNX_TOLERANCE, PROBABILITY_COLUMNS
from cass_pipeline.domain.storage import write_parquet_atomic, write_text_atomic
from cass_pipeline.settings import REGISTERED_MODEL_NAME
from cass_pipeline.tracking import (
    CHALLENGER,
    CHAMPION,
    LoadedModel,
    NotServableError,
    RegistryError,
    Tracking,
)
from cass_pipeline.training_run import TrainingInputs, load_views

PREDICTION_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("artery", pa.string()),
        ("branch", pa.string()),
        ("view_index", pa.int32()),
        ("label", pa.int8()),
        ("pred", pa.int8()),
        ("branch_pred", pa.int8()),
        ("p_no_stenosis", pa.float32()),
        ("p_non_significant", pa.float32()),
        ("p_significant", pa.float32()),
        ("model_version", pa.int32()),
    ]
)


def evaluation_dir(paths: CassPaths) -> Path:
    path = paths.processed / "evaluation"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_views(paths: CassPaths) -> pd.DataFrame:
    """Labelled views of the test split (the only place the test split is read)."""
    views = load_views(TrainingInputs.under(paths.processed))
    return views[views.split == "test"].reset_index(drop=True)


def predictions_with(loaded: LoadedModel, views: pd.DataFrame, paths: CassPaths) -> pd.DataFrame:
    """The registered model's view predictions, through its own predictor (as served)."""
    try:
        loaded.predictor.bundle.check_store(views.cleanup_fingerprint)
    except ValueError as error:
        raise dg.Failure(f"model version {loaded.version}: {error}") from error
    scored = loaded.predictor.score_views(views, paths.processed)
    return scored.assign(model_version=loaded.version)[PREDICTION_SCHEMA.names]


def registry(mlflow_tracking: MlflowTracking) -> Tracking:
    """The tracking object, its lookups failing the step with the registry's message."""
    tracking = mlflow_tracking.tracking()
    try:
        tracking.check_reachable()
    except RegistryError as error:
        raise dg.Failure(str(error)) from error
    return tracking


def load_registered(tracking: Tracking, reference: str, engine: str = "onnxruntime") -> LoadedModel:
    """`Tracking.load`, its errors failing the step with their one-line message."""
    try:
        return tracking.load(reference, engine)
    except (RegistryError, ValueError) as error:
        raise dg.Failure(str(error)) from error


@dg.asset(group_name="evaluation", deps=[stenosis_model, patient_splits], kinds={"parquet"})
def test_predictions(paths: CassPaths, mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    """The challenger's per-view probabilities and class on the test split, through the
    registered model (ONNX Runtime); its PyTorch network is scored too, to check the export."""
    tracking = registry(mlflow_tracking)
    loaded = load_registered(tracking, CHALLENGER)
    views = test_views(paths)
    path = evaluation_dir(paths) / "test_predictions.parquet"
    scored = predictions_with(loaded, views, paths)
    write_parquet_atomic(scored, path, PREDICTION_SCHEMA)
    network = loaded.predictor.bundle.calibration.scaled(TorchEngine(loaded.predictor.network()))
    difference, changed = largest_difference(
        scored[PROBABILITY_COLUMNS].to_numpy(), view_probabilities(network, views, paths.processed)
    )
    parity = {
        "model_version": loaded.version,
        "views": len(views),
        "largest_probability_difference": difference,
        "views_changing_class": changed,
        "tolerance": ONNX_TOLERANCE,
    }
    write_text_atomic(evaluation_dir(paths) / "onnx_parity.json", json.dumps(parity, indent=2))
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
    parity = json.loads((evaluation_dir(paths) / "onnx_parity.json").read_text())
    return dg.AssetCheckResult(
        passed=parity["views_changing_class"] == 0
        and parity["largest_probability_difference"] <= parity["tolerance"],
        metadata=parity,
    )


def metrics_markdown(metrics: dict) -> str:
    lines = [
        "| level | n | accuracy (95% CI) | weighted F1 (95% CI) | paper acc / F1 | "
        "diagonal no / non-sig / sig | significant called no_stenosis |",
        "|---|---|---|---|---|---|---|",
    ]
    for level in LEVELS:
        m = metrics[level]
        ci = m.get("ci95", {})
        acc_ci = "–".join(f"{v:.2f}" for v in ci.get("accuracy", []))
        f1_ci = "–".join(f"{v:.2f}" for v in ci.get("f1_weighted", []))
        diagonal = " / ".join(f"{m['confusion_matrix'][k][k]:.2f}" for k in range(3))
        missed = m["significant_called_no_stenosis"]
        paper = PAPER_TABLE2[level]
        lines.append(
            f"| {level} | {m['n']} | {m['accuracy']:.3f} ({acc_ci}) | "
            f"{m['f1_weighted']:.3f} ({f1_ci}) | {paper[0]:.2f} / {paper[1]:.2f} | "
            f"{diagonal} | {'-' if missed is None else f'{missed:.2f}'} |"
        )
    return "\n".join(lines)


def confusion_png(metrics: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    short = ["no", "non-sig", "sig"]
    for axis, level in zip(axes, LEVELS, strict=True):
        matrix = np.array(metrics[level]["confusion_matrix"])
        axis.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            axis.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                color="white" if value > 0.5 else "black",
            )
        axis.set(
            xticks=range(3),
            yticks=range(3),
            xticklabels=short,
            yticklabels=short,
            xlabel="predicted",
            ylabel="truth",
            title=f"{level} (n={metrics[level]['n']})",
        )
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        fig.savefig(Path(tmp) / "c.png", dpi=80)
        plt.close(fig)
        return (Path(tmp) / "c.png").read_bytes()


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


def vote_views(predictions: pd.DataFrame) -> pd.DataFrame:
    """Predictions without the model's branch decisions: evaluation falls back to the vote."""
    return predictions.drop(columns="branch_pred")


def aggregation_markdown(metrics: dict, vote: dict) -> str:
    """Weighted F1 per level with the model's branch aggregation beside the paper's vote."""
    lines = ["| level | this model | majority vote |", "|---|---|---|"]
    for level in LEVELS:
        ours, voted = metrics[level]["f1_weighted"], vote[level]["f1_weighted"]
        lines.append(f"| {level} | {ours:.3f} | {voted:.3f} |")
    return "\n".join(lines)


def none_as_text(value):
    return "none" if value is None else value


def triage_markdown(calibration: Calibration, on_test: dict) -> str:
    """Calibration error before and after, and the operating point on validation and test."""
    threshold = calibration.referral_threshold
    fitted = calibration.validation or {}

    def rate(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    return "\n".join(
        [
            f"Temperature {calibration.temperature:.3f} ({calibration.fitted_on}); referral "
            "threshold on patient P(significant) "
            + ("none (refers by class)" if threshold is None else f"{threshold:.3f}")
            + f", chosen for sensitivity >= {calibration.target_sensitivity:.2f}.",
            "",
            "| split | patients (significant) | ECE before | ECE after | sensitivity | "
            "specificity | ROC AUC |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {name} | {m.get('patients', '-')} ({m.get('significant_patients', '-')}) | "
                f"{rate(m.get('ece_before'))} | {rate(m.get('ece_after'))} | "
                f"{rate(m.get('sensitivity'))} | {rate(m.get('specificity'))} | "
                f"{rate(m.get('roc_auc'))} |"
                for name, m in (("validation", fitted), ("test", on_test))
            ),
        ]
    )


def reliability_png(on_test: dict) -> bytes:
    """Accuracy against confidence per bin, before and after temperature scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(4.2, 4))
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for when, style in (("before", "o--"), ("after", "s-")):
        table = pd.DataFrame(on_test[f"reliability_{when}"]).dropna()
        ece = on_test[f"ece_{when}"]
        axis.plot(table.confidence, table.accuracy, style, label=f"{when} (ECE {ece:.3f})")
    axis.set(xlabel="confidence (top class)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    axis.set_title("test views: reliability", fontsize=10)
    axis.legend(fontsize=8)
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        fig.savefig(Path(tmp) / "r.png", dpi=80)
        plt.close(fig)
        return (Path(tmp) / "r.png").read_bytes()


#: The test patients by significance score, as a triage worklist would order them.
RANKING_SCHEMA = pa.schema(
    [
        ("rank", pa.int32()),
        ("patient_id", pa.string()),
        ("score", pa.float64()),
        ("refer", pa.bool_()),
        ("significant", pa.bool_()),
    ]
)
RANKING_PREVIEW = 10
#: Metrics of each level and of the operating point logged on the training run.
METRIC_KEYS = ("accuracy", "f1_weighted")
TRIAGE_METRICS = {
    "ece_before": "test_ece_before",
    "ece_after": "test_ece_after",
    "sensitivity": "test_referral_sensitivity",
    "specificity": "test_referral_specificity",
    "roc_auc": "test_patient_roc_auc",
}


class EvaluationConfig(dg.Config):
    bootstrap: int = Field(default=1000, description="bootstrap rounds over patients")


@dg.asset(group_name="evaluation", deps=[test_predictions], kinds={"mlflow"})
def evaluation_report(
    config: EvaluationConfig, paths: CassPaths, mlflow_tracking: MlflowTracking
) -> dg.MaterializeResult:
    """Segment / artery / patient metrics of the challenger on the test split, beside the
    paper's Table 2; logged on the training run."""
    predictions = pd.read_parquet(evaluation_dir(paths) / "test_predictions.parquet")
    metrics = evaluate(predictions, config.bootstrap)
    version = int(predictions.model_version.iloc[0])
    tracking = registry(mlflow_tracking)
    run_id = tracking.model_version(str(version)).run_id
    bundle = load_registered(tracking, str(version)).predictor.bundle
    calibration = bundle.calibration
    on_test = calibration_report(predictions, calibration)
    vote = evaluate(vote_views(predictions), bootstrap=0)
    report = {
        "model_version": version,
        "run_id": run_id,
        "metrics": metrics,
        "aggregation": bundle.aggregation,
        "vote_metrics": vote,
        "calibration": calibration.to_json(),
        "calibration_test": on_test,
    }
    write_text_atomic(evaluation_dir(paths) / "evaluation.json", json.dumps(report, indent=2))
    ranking = patient_ranking(predictions, calibration)[RANKING_SCHEMA.names]
    write_parquet_atomic(ranking, evaluation_dir(paths) / "patient_ranking.parquet", RANKING_SCHEMA)
    picture, diagram = confusion_png(metrics), reliability_png(on_test)
    table = metrics_markdown(metrics)
    triage = triage_markdown(calibration, on_test)
    log_to_run(
        tracking,
        run_id,
        {f"test_{level}_{key}": metrics[level][key] for level in LEVELS for key in METRIC_KEYS}
        | {f"test_{level}_f1_weighted_vote": vote[level]["f1_weighted"] for level in LEVELS}
        | {name: on_test[key] for key, name in TRIAGE_METRICS.items()},
        {
            "evaluation.json": json.dumps(report).encode(),
            "confusion.png": picture,
            "reliability.png": diagram,
            "patient_ranking.csv": ranking.to_csv(index=False).encode(),
            "table.md": f"{table}\n\n{triage}\n".encode(),
        },
    )
    all_healthy = evaluate(vote_views(predictions).assign(pred=0), bootstrap=0)
    return dg.MaterializeResult(
        metadata={
            "model_version": version,
            "mlflow_run_id": run_id,
            "metrics": dg.MetadataValue.md(table),
            "confusion_matrices": png_markdown(picture, "row-normalised confusion matrices"),
            "segment_f1_weighted": metrics["segment"]["f1_weighted"],
            "segment_f1_majority_baseline": all_healthy["segment"]["f1_weighted"],
            "patient_f1_weighted": metrics["patient"]["f1_weighted"],
            "aggregation": bundle.aggregation,
            "aggregation_vs_vote": dg.MetadataValue.md(aggregation_markdown(metrics, vote)),
            "calibration_and_operating_point": dg.MetadataValue.md(triage),
            "reliability_diagram": png_markdown(diagram, "reliability before and after"),
            "patient_ranking_top": dg.MetadataValue.md(
                ranking.head(RANKING_PREVIEW).to_markdown(index=False, floatfmt=".3f")
            ),
            **{name: none_as_text(on_test[key]) for key, name in TRIAGE_METRICS.items()},
            "referral_threshold": none_as_text(calibration.referral_threshold),
            "temperature": calibration.temperature,
        }
    )


def significant_sensitivity(predictions: pd.DataFrame, calibration: Calibration) -> float:
    """Share of significant patients referred at the model's operating point."""
    return referral_rates(patient_referrals(predictions, calibration))["sensitivity"] or 0.0


#: A model registered before calibration: temperature 1, referral by class.
UNCALIBRATED = Calibration()
#: Fewer test patients than this that neither model learnt from: no fair comparison.
MIN_FAIR_TEST_PATIENTS = 5


def against_champion(
    tracking: Tracking,
    paths: CassPaths,
    challenger_f1: float,
    version: int,
    challenger_calibration: Calibration = UNCALIBRATED,
) -> dict:
    """The champion re-evaluated on the test patients it never learnt from (by the content
    of their images, else by pseudonym: all of them unless the splits or the pseudonyms
    changed since it was trained), the challenger on the same patients, and whether the
    challenger wins; a champion that cannot be served, or whose cleanup differs from the
    store's, loses its place."""
    try:
        champion = tracking.load(CHAMPION)
    except NotServableError as error:
        return {"champion_version": version, "promote": True, "reason": str(error)}
    views = test_views(paths)
    try:
        champion.predictor.bundle.check_store(views.cleanup_fingerprint)
    except ValueError as error:  # the cleanup changed since: no like-for-like comparison
        return {
            "champion_version": version,
            "promote": True,
            "reason": f"the champion cannot be re-evaluated on this image store ({error})",
        }
    images, patients_learnt = tracking.learnt_from(champion.run_id)
    overlap = set(views.loc[views.source_sha256.str[:16].isin(images), "patient_id"])
    overlap |= set(views.patient_id) & patients_learnt
    fair = views[~views.patient_id.isin(overlap)]
    patients = fair.patient_id.nunique()
    if overlap and patients < MIN_FAIR_TEST_PATIENTS:
        return {
            "champion_version": version,
            "promote": True,
            "reason": f"the champion learnt from {len(overlap)} of the test patients (the "
            f"splits changed since); {patients} left, too few to compare fairly",
        }
    challenger = {}
    if overlap:
        predictions = pd.read_parquet(evaluation_dir(paths) / "test_predictions.parquet")
        restricted = predictions[predictions.patient_id.isin(set(fair.patient_id))]
        challenger_f1 = evaluate(restricted, bootstrap=0)["patient"]["f1_weighted"]
        challenger = {
            "challenger_patient_f1": challenger_f1,
            "challenger_significant_sensitivity": significant_sensitivity(
                restricted, challenger_calibration
            ),
        }
    scored = predictions_with(champion, fair, paths)
    f1 = evaluate(scored, bootstrap=0)["patient"]["f1_weighted"]
    where = (
        f"on the {patients} test patients neither model learnt from"
        if overlap
        else "on the same test split"
    )
    return challenger | {
        "champion_version": version,
        "champion_patient_f1": f1,
        "champion_significant_sensitivity": significant_sensitivity(
            scored, champion.predictor.bundle.calibration
        ),
        "promote": challenger_f1 >= f1,
        "reason": f"patient-level weighted F1 {challenger_f1:.3f} vs champion {f1:.3f} {where}",
    }


@dg.asset(group_name="evaluation", deps=[evaluation_report], kinds={"mlflow"})
def promotion_decision(paths: CassPaths, mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    """Challenger vs champion on the same test split: promote when the challenger's
    patient-level weighted F1 is at least the champion's (the champion is re-evaluated)."""
    tracking = registry(mlflow_tracking)
    challenger = json.loads((evaluation_dir(paths) / "evaluation.json").read_text())
    decision = {
        "challenger_version": challenger["model_version"],
        "challenger_patient_f1": challenger["metrics"]["patient"]["f1_weighted"],
        "challenger_significant_sensitivity": challenger["calibration_test"]["sensitivity"] or 0.0,
    }
    champion_version = tracking.alias_version(CHAMPION)
    if champion_version is None:
        decision |= {"champion_version": None, "promote": True, "reason": "no champion yet"}
    elif champion_version == challenger["model_version"]:
        decision |= {
            "champion_version": champion_version,
            "promote": False,
            "reason": "the challenger is already the champion",
        }
    else:
        decision |= against_champion(
            tracking,
            paths,
            decision["challenger_patient_f1"],
            champion_version,
            Calibration.from_json(challenger["calibration"]),
        )
    write_text_atomic(evaluation_dir(paths) / "promotion.json", json.dumps(decision, indent=2))
    client = tracking.client()
    run_id = challenger["run_id"]
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
    decision = json.loads((evaluation_dir(paths) / "promotion.json").read_text())
    worse = (
        decision["promote"]
        and decision.get("champion_significant_sensitivity") is not None
        and decision["challenger_significant_sensitivity"]
        < decision["champion_significant_sensitivity"]
    )
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
    decision = json.loads((evaluation_dir(paths) / "promotion.json").read_text())
    tracking = registry(mlflow_tracking)
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


class ExplanationConfig(dg.Config):
    per_class: int = Field(default=2, description="test views explained per true class")
    steps: int = Field(default=32, description="Integrated Gradients steps")
    vessel_band: float = Field(
        default=0.25, description="share of the width around the centreline counted as the vessel"
    )


@dg.asset(group_name="evaluation", deps=[test_predictions], kinds={"pytorch"})
def explanations(
    config: ExplanationConfig, paths: CassPaths, mlflow_tracking: MlflowTracking
) -> dg.MaterializeResult:
    """Integrated Gradients heat maps for a sample of test views per class, and the share of
    the attribution that falls on the vessel band."""
    tracking = registry(mlflow_tracking)
    predictions = pd.read_parquet(evaluation_dir(paths) / "test_predictions.parquet")
    loaded = load_registered(tracking, CHALLENGER)
    model, version, run_id = loaded.predictor.network(), loaded.version, loaded.run_id
    views = test_views(paths)
    dataset = ViewDataset(views, paths.processed)
    keyed = views.reset_index().merge(
        predictions, on=["patient_id", "branch", "view_index"], suffixes=("", "_p")
    )
    picks = keyed.sample(frac=1, random_state=0).groupby("label").head(config.per_class)
    out = evaluation_dir(paths) / "explanations"
    out.mkdir(exist_ok=True)
    metadata, fractions = {}, []
    for row in picks.itertuples():
        image = dataset.image(row.index)
        attribution = integrated_gradients(model, image, int(row.pred), config.steps)
        fraction = mass_fraction(attribution, central_band(image.shape, config.vessel_band))
        fractions.append(fraction)
        name = f"{STENOSIS_CLASSES[row.label]}_{row.patient_id}_{row.branch}_{row.view_index}.png"
        _, png = cv2.imencode(".png", overlay(image, attribution))
        (out / name).write_bytes(png.tobytes())
        metadata[name.removesuffix(".png")] = png_markdown(
            png.tobytes(),
            f"truth {STENOSIS_CLASSES[row.label]}, predicted "
            f"{STENOSIS_CLASSES[row.pred]}, {fraction:.0%} on the vessel band",
        )
    client = tracking.client()
    client.log_artifacts(run_id, str(out), artifact_path="explanations")
    mean = float(np.mean(fractions)) if fractions else 0.0
    client.log_metric(run_id, "ig_vessel_band_fraction", mean)
    return dg.MaterializeResult(
        metadata={
            "model_version": version,
            "views_explained": len(fractions),
            "vessel_band_attribution_fraction": mean,
            "vessel_band_area_fraction": config.vessel_band,
            **metadata,
        }
    )
