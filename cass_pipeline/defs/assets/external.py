"""External validation: the champion on another site's export, beside its internal figures."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from cass_pipeline.defs.assets.evaluation import champion_model
from cass_pipeline.defs.presentation import parquet_metadata
from cass_pipeline.defs.resources import CassPaths, MlflowTracking, PseudonymKey, RawFormat
from cass_pipeline.domain.evaluation.config import CHAMPION
from cass_pipeline.domain.evaluation.external import (
    COMPARED,
    KAPPA_DROP_ALLOWED,
    kappa_drop,
    served_views,
    side_by_side,
    site_labels,
)
from cass_pipeline.domain.evaluation.model_card import with_external
from cass_pipeline.domain.evaluation.report import evaluate_model
from cass_pipeline.domain.imaging.views import PatientSource
from cass_pipeline.domain.model.config import EvaluateSettings
from cass_pipeline.domain.prediction.predictor import VIEW_PREDICTION_SCHEMA
from cass_pipeline.domain.reports.pipeline import parse_cohort_reports
from cass_pipeline.domain.reports.tables import report_tables
from cass_pipeline.domain.storage import write_parquet_atomic, write_text_atomic


class ExternalConfig(dg.Config):
    """Where the other site's export is, and which model is validated on it."""

    raw_dir: str = Field(
        default="",
        description="the site's export (mpr/ and reports/, as raw/); default <data>/external/raw "
        "(`cass synth --preset benchmark-external --out data/external/raw`)",
    )
    model: str = Field(
        default=CHAMPION,
        description="the registered model validated: an alias (champion, challenger) or a version",
    )
    bootstrap: int = Field(default=EvaluateSettings.bootstrap, ge=0)


def site_folder(config: ExternalConfig, paths: CassPaths) -> Path:
    return Path(config.raw_dir) if config.raw_dir else paths.raw.parent / "external" / "raw"


def figures_of(report) -> dict[str, float | None]:
    """The external evaluation's figures by the names `COMPARED` gives them."""
    logged = report.logged_metrics()
    return {name: logged.get(key) for name, key in COMPARED.items()}


@dg.asset(group_name="evaluation", deps=[champion_model], kinds={"parquet", "mlflow"})
def external_validation(
    context: dg.AssetExecutionContext,
    config: ExternalConfig,
    paths: CassPaths,
    mlflow_tracking: MlflowTracking,
    pseudonyms: PseudonymKey,
    raw_format: RawFormat,
) -> dg.MaterializeResult:
    """The champion (or `model`) on a second site's export, as it would serve that site:
    every patient's raw files through its predictor, labelled from the site's own reports
    (held reports left out), evaluated as the internal test split is and shown beside the
    model's internal figures. Not in the demo nor the weekly retraining; materialise it from
    the UI."""
    raw = site_folder(config, paths)
    site = raw.parent.name if raw.name == "raw" else raw.name  # data/external/raw: external
    if not raw.is_dir():
        raise dg.Failure(
            f"no external export at {raw}: write one with `cass synth --preset "
            "benchmark-external --out <data>/external/raw` or set raw_dir"
        )
    tracking = mlflow_tracking.registry()
    loaded = mlflow_tracking.load(config.model)
    bundle = loaded.predictor.bundle
    index = raw_format.index(raw)
    keys = pseudonyms.pseudonyms_for(raw, index)
    tables = report_tables(parse_cohort_reports(index, keys), hold_flagged=True)
    labels = site_labels(tables["branch_labels"].to_pandas(), tables["patient_labels"].to_pandas())
    labelled = set(labels.patient_id)
    scored, unscored = [], 0
    for patient in index.patients.values():
        pid = keys(patient.key)
        if pid not in labelled:
            continue
        if not patient.files:
            unscored += 1
            continue
        source = PatientSource.of(patient)
        table = loaded.predictor.predict_files(
            source.source_files(), pid, identifiers=source.identifiers
        ).table
        rows = served_views(table, pid, labels)
        unscored += rows.empty
        if not rows.empty:
            scored.append(rows)
    if not scored:
        raise dg.Failure(f"no labelled patient of {raw} could be scored")
    predictions = pd.concat(scored, ignore_index=True).assign(model_version=loaded.version)
    predictions = predictions[VIEW_PREDICTION_SCHEMA.names]
    path = paths.layout.external_predictions
    write_parquet_atomic(predictions, path, VIEW_PREDICTION_SCHEMA)
    report = evaluate_model(
        pd.read_parquet(path),
        bundle.calibration,
        bundle.aggregation,
        bundle.outputs,
        config.bootstrap,
    )
    client = tracking.client()
    internal_metrics = client.get_run(loaded.run_id).data.metrics
    internal = {name: internal_metrics.get(key) for name, key in COMPARED.items()}
    external = figures_of(report)
    drop = kappa_drop(internal, external)
    table = side_by_side(internal, external)
    document = {
        "model_version": loaded.version,
        "site": site,
        "patients": int(predictions.patient_id.nunique()),
        "labelled_patients_not_scored": unscored,
        "internal": internal,
        "external": external,
        "kappa_drop": drop,
        "kappa_drop_allowed": KAPPA_DROP_ALLOWED,
        "metrics": report.metrics,
        "cad_rads": report.grades,
    }
    write_text_atomic(paths.layout.external_report, json.dumps(document, indent=2))
    for name, value in external.items():
        if value is not None:
            key = COMPARED[name].replace("test_", "external_", 1)
            client.log_metric(loaded.run_id, key, value)
    card = with_external(
        tracking.version_description(loaded.version), site, document["patients"], table
    )
    tags = {"external_validation": "yes", "external_site": site}
    if external["CAD-RADS kappa (linear)"] is not None:
        tags["external_cad_rads_kappa_linear"] = f"{external['CAD-RADS kappa (linear)']:.3f}"
    tracking.describe_version(loaded.version, card, tags)
    return dg.MaterializeResult(
        metadata={
            **parquet_metadata(path),
            "model_version": loaded.version,
            "patients": document["patients"],
            "labelled_patients_not_scored": unscored,
            "internal_vs_external": dg.MetadataValue.md(table),
            "kappa_drop": drop,
        }
    )


@dg.asset_check(
    asset=external_validation,
    description="The CAD-RADS kappa at the other site falls by at most 0.05 from internal.",
)
def external_kappa_holds(paths: CassPaths) -> dg.AssetCheckResult:
    document = json.loads(paths.layout.external_report.read_text())
    drop = document["kappa_drop"]
    return dg.AssetCheckResult(
        passed=drop is None or drop <= KAPPA_DROP_ALLOWED,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"kappa_drop": drop, "allowed": KAPPA_DROP_ALLOWED},
    )
