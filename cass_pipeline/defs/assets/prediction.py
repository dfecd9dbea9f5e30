"""Prediction stage: each patient arriving in the inbox becomes a partition scored by the
registered champion (the same predictor as `cass predict` and the REST service)."""

import json
import time
import warnings

import dagster as dg
from pydantic import Field

from cass_pipeline.defs.assets.evaluation import champion_model
from cass_pipeline.defs.config import config_class, config_fields, settings_from
from cass_pipeline.defs.presentation import parquet_metadata, png_markdown, preview_markdown
from cass_pipeline.defs.resources import (
    CassPaths,
    DicomResults,
    Inbox,
    MlflowTracking,
    PseudonymKey,
)
from cass_pipeline.domain.dicom.node import health_problems, read_rejects
from cass_pipeline.domain.dicom.outbox import failure_text, send_results, write_results
from cass_pipeline.domain.dicom.results import NoResultError
from cass_pipeline.domain.prediction.config import PredictSettings
from cass_pipeline.domain.prediction.document import PredictionDocument, grade_text
from cass_pipeline.domain.prediction.folder import predict_folder
from cass_pipeline.domain.prediction.gate import export_problem
from cass_pipeline.domain.prediction.inbox import (
    InboxStudy,
    chosen_study,
    folder_state,
    inbox_studies,
    scan_inbox,
)
from cass_pipeline.domain.prediction.outputs import (
    OUTPUT_FORMATS,
    WRITERS,
    PixelTextError,
    output_writers,
    write_outputs,
)
from cass_pipeline.domain.prediction.worklist import (
    DELIVERED,
    FAILED,
    NO_DESTINATION,
    NOT_SENT,
    PENDING,
    REFUSAL_SCHEMA,
    WORKLIST_SCHEMA,
    merged_refusals,
    record_delivery,
    refusal_rows,
    worklist_table,
)
from cass_pipeline.domain.storage import read_parquet_or_empty, write_parquet_atomic

inbox_patients = dg.DynamicPartitionsDefinition(name="inbox_patients")
#: The run tag naming the inbox study a run scores (a keyed id); without it, the newest.
STUDY_TAG = "cass/study"
#: Inbox runs queue under this tag's limit (config/dagster_instance.yaml), ahead of others.
INBOX_RUN_TAGS = {"cass/queue": "inbox", "dagster/priority": "10"}


def scored_study(context, inbox: Inbox, pseudonyms: PseudonymKey) -> InboxStudy:
    """The inbox study a run scores (its study tag's, else the patient's newest)."""
    patient = context.partition_key
    study = chosen_study(
        inbox.path, patient, pseudonyms.secret_pseudonyms(), context.run.tags.get(STUDY_TAG)
    )
    if study is None:
        raise dg.Failure(f"no study in the inbox {inbox.path} belongs to patient {patient}")
    return study


class PredictionRunConfig(dg.Config):
    """The files each inbox prediction writes (the prediction writers' registry)."""

    outputs: list[str] = Field(
        default=list(OUTPUT_FORMATS),
        description="; ".join(
            f"{name}: {w.file_name}, {w.description}" for name, w in WRITERS.items()
        ),
    )


PredictionConfig = config_class(
    "PredictionConfig",
    PredictionRunConfig,
    "Which registered model scores an inbox patient, and what it writes: the domain's "
    "`PredictSettings`.",
    **config_fields(PredictSettings),
)


@dg.asset(
    group_name="prediction",
    partitions_def=inbox_patients,
    deps=[champion_model],
    kinds={"mlflow", "png"},
    code_version="1",
)
def patient_prediction(
    context: dg.AssetExecutionContext,
    config: PredictionConfig,
    paths: CassPaths,
    inbox: Inbox,
    pseudonyms: PseudonymKey,
    mlflow_tracking: MlflowTracking,
) -> dg.MaterializeResult:
    """One inbox patient scored by the registered model: `prediction.json` and `report.png`
    under predictions/<pseudonym>/. A new champion makes earlier predictions stale."""
    patient = context.partition_key
    study = scored_study(context, inbox, pseudonyms)
    folder = study.folder
    if problem := export_problem(folder, inbox.ingest_config()):
        raise dg.Failure(f"{patient}: not scored: {problem}")
    try:
        writers = output_writers(config.outputs)
    except ValueError as error:
        raise dg.Failure(str(error)) from error
    settings = settings_from(config, PredictSettings)
    loaded = mlflow_tracking.load(settings.model, settings.engine)
    predicted = predict_folder(
        loaded.predictor, folder, patient, loaded.description(), settings.explain_steps
    )
    predicted.document["study"] = study.study
    out = paths.layout.prediction(patient)
    try:
        written = write_outputs(predicted, out, writers)
    except PixelTextError as error:
        raise dg.Failure(f"{patient}: {error}") from error
    document = predicted.document
    context.log.info(
        f"{patient}: {document['patient_class'] or 'no prediction'} with {loaded.name} "
        f"version {loaded.version}"
    )
    return dg.MaterializeResult(
        metadata={
            "patient_class": document["patient_class"] or "none",
            "cad_rads": document["cad_rads"] or "none",
            "refer": "none" if document["refer"] is None else document["refer"],
            "significant_score": document["significant_score"] or 0.0,
            "note": document["note"] or "",
            "branches": dg.MetadataValue.md(branch_table(document)),
            "views_used": document["views_used"] or 0,
            "files_rejected": len(document["rejected"]),
            "model_version": loaded.version,
            "model_uri": document["model"]["uri"],
            "engine": loaded.predictor.engine.name,
            **(
                {"report": png_markdown(written["png"].data, f"prediction report of {patient}")}
                if "png" in written
                else {}
            ),
            **(
                {
                    "explanations": png_markdown(
                        written["explanations"].data, f"explanations of {patient}"
                    )
                }
                if "explanations" in written
                else {}
            ),
            "path": dg.MetadataValue.path(str(written["json"].path if "json" in written else out)),
            "files": dg.MetadataValue.json(sorted(file.path.name for file in written.values())),
        }
    )


def branch_table(document: PredictionDocument) -> str:
    lines = [
        "| branch | class | CAD-RADS grade | p no / non-sig / sig | views |",
        "|---|---|---|---|---|",
    ]
    for name, branch in document["branches"].items():
        p = " / ".join(f"{v:.2f}" for v in branch["probabilities"].values())
        grade = grade_text(branch["grade"]) or "-"
        lines.append(f"| {name} | {branch['class']} | {grade} | {p} | {branch['views_used']} |")
    return "\n".join(lines)


@dg.asset(
    group_name="prediction",
    partitions_def=inbox_patients,
    deps=[patient_prediction],
    kinds={"dicom"},
    code_version="1",
)
def dicom_results(
    context: dg.AssetExecutionContext,
    paths: CassPaths,
    inbox: Inbox,
    pseudonyms: PseudonymKey,
    dicom_results: DicomResults,
) -> dg.MaterializeResult:
    """The prediction as DICOM into the patient's own study: a Comprehensive SR and a key
    image of report.png, written to the outbox on the key holder's side and sent by C-STORE
    to each destination (retried; a destination that stays down fails this step and keeps
    the objects for `cass resend`)."""
    patient = context.partition_key
    folder = scored_study(context, inbox, pseudonyms).folder
    predicted = paths.layout.prediction(patient)
    source = predicted / WRITERS["json"].file_name
    document = json.loads(source.read_text())
    picture = predicted / WRITERS["png"].file_name
    settings = dicom_results.send_settings()
    outbox = dicom_results.outbox / patient
    record_delivery(source, PENDING)
    try:
        written = write_results(
            document,
            picture.read_bytes() if picture.is_file() else None,
            folder,
            outbox,
            settings.calling_ae_title,
        )
    except NoResultError as error:  # a PNG or JPEG export, or nothing computed
        context.log.warning(f"{patient}: no DICOM results: {error}")
        record_delivery(source, NOT_SENT, f"no DICOM results: {error}")
        return dg.MaterializeResult(metadata={"objects": 0, "note": str(error)})
    deliveries = send_results(outbox, settings)
    problem = failure_text(deliveries)
    if problem:
        record_delivery(source, FAILED, f"{problem}; kept for `cass resend`")
        raise dg.Failure(
            f"{patient}: results not delivered: {problem}; kept in {outbox} for `cass resend`"
        )
    delivered = [str(d.destination) for d in deliveries]
    if settings.parsed():
        note = f"delivered to {', '.join(delivered) or 'every destination, earlier'}"
        record_delivery(source, DELIVERED, f"to {', '.join(map(str, settings.parsed()))}")
        context.log.info(f"{patient}: SR and key image {note}")
    else:
        note = f"not sent: {NO_DESTINATION}; kept in {outbox}"
        record_delivery(source, NOT_SENT, NO_DESTINATION)
        context.log.warning(f"{patient}: SR and key image {note}")
    return dg.MaterializeResult(
        metadata={
            "objects": len(written),
            "files": dg.MetadataValue.json(sorted(p.name for p in written)),
            "delivery": note,
            "delivered_to": dg.MetadataValue.json(delivered),
            "attempts": sum(d.attempts for d in deliveries),
        }
    )


predict_patient_job = dg.define_asset_job(
    "predict_patient",
    selection=[patient_prediction, dicom_results],
    description="Scores one inbox patient with the registered champion and sends the results.",
    # two short steps one after the other: in the run's own process, so that a waiting
    # patient does not pay a new process (and its imports) per step
    executor_def=dg.in_process_executor,
)


@dg.asset(group_name="prediction", deps=[patient_prediction], kinds={"parquet"})
def worklist(paths: CassPaths, inbox: Inbox, pseudonyms: PseudonymKey) -> dg.MaterializeResult:
    """Every inbox study by its patient's pseudonym: received at, predicted at, turnaround,
    CAD-RADS category, referral and significance score, referred first, then by score; a
    study the inbox sensor refused says "not scored" and why."""
    received = {
        s.study: folder_state(s.folder)[1]
        for s in inbox_studies(inbox.path, pseudonyms.secret_pseudonyms())
    }
    refusals = read_parquet_or_empty(paths.layout.inbox_refusals, REFUSAL_SCHEMA)
    table = worklist_table(paths.layout.predictions, received, WRITERS["json"].file_name, refusals)
    path = paths.layout.worklist
    write_parquet_atomic(table, path, WORKLIST_SCHEMA)
    referred = int(table.refer.fillna(False).astype(bool).sum()) if len(table) else 0
    return dg.MaterializeResult(
        metadata={
            **parquet_metadata(path),
            "referred": referred,
            "worklist": preview_markdown(table, rows=50),
        }
    )


@dg.asset_check(
    asset=worklist,
    description="What the DICOM node refused or quarantined (its rejects table): a warning "
    "while there is any.",
)
def dicom_node_rejects(dicom_results: DicomResults) -> dg.AssetCheckResult:
    rejects = read_rejects(dicom_results.node_rejects)
    return dg.AssetCheckResult(
        passed=rejects.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "rejects": len(rejects),
            "by_reason": dg.MetadataValue.json(rejects.reason.value_counts().to_dict()),
            "latest": preview_markdown(rejects.tail(8)),
            "path": dg.MetadataValue.path(str(dicom_results.node_rejects)),
        },
    )


@dg.asset_check(
    asset=worklist,
    description="Whether the DICOM node is alive and handing studies on: a warning when its "
    "heartbeat is older than a minute or its hand-off has failed.",
)
def dicom_node_health(dicom_results: DicomResults) -> dg.AssetCheckResult:
    path = dicom_results.node_health
    if not path.is_file():
        return dg.AssetCheckResult(passed=True, metadata={"node": "never started here"})
    health = json.loads(path.read_text())
    problems = health_problems(health, time.time())
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(problems) or "the node is handing studies on",
        metadata={
            **health,
            "path": dg.MetadataValue.path(str(path)),
        },
    )


worklist_job = dg.define_asset_job(
    "rebuild_worklist",
    selection=[worklist],
    description="Rebuilds the reading room's worklist.",
)


def rebuild_after_materialisations(context: dg.MultiAssetSensorEvaluationContext):
    records = [r for r in context.latest_materialization_records_by_key().values() if r]
    if not records:
        return dg.SkipReason("no patient scored or delivered since the last rebuild")
    context.advance_all_cursors()
    return dg.RunRequest(run_key=f"materialised:{max(r.storage_id for r in records)}")


with warnings.catch_warnings():
    # Dagster prefers Declarative Automation, but keeps this sensor for a run of a named
    # job after materialisations of several assets, which is what is needed here.
    warnings.filterwarnings("ignore", "Class `MultiAssetSensorDefinition` is superseded")
    worklist_sensor = dg.multi_asset_sensor(
        monitored_assets=[patient_prediction.key, dicom_results.key],
        job=worklist_job,
        name="worklist_sensor",
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Rebuilds the worklist after every materialisation of "
        "`patient_prediction` (whatever happens to its results after it) and of "
        "`dicom_results`.",
    )(rebuild_after_materialisations)


@dg.run_failure_sensor(
    monitored_jobs=[predict_patient_job],
    request_job=worklist_job,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Rebuilds the worklist after a `predict_patient` run fails, so its delivery "
    "column says why.",
)
def worklist_failure_sensor(context: dg.RunFailureSensorContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=context.dagster_run.run_id)


@dg.sensor(
    jobs=[predict_patient_job, worklist_job],
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Scores each new, fully copied inbox study that is its patient's newest and "
    "a coronary curved-MPR export (once per state of the folder); any other is refused with "
    "the reason, which the worklist shows.",
)
def inbox_sensor(
    context: dg.SensorEvaluationContext, paths: CassPaths, inbox: Inbox, pseudonyms: PseudonymKey
) -> dg.SensorResult:
    ingest = inbox.ingest_config()
    memory = json.loads(context.cursor) if context.cursor else {}
    now = time.time()
    scan = scan_inbox(
        inbox.path,
        memory,
        pseudonyms.secret_pseudonyms(),
        now,
        inbox.quiet_seconds,
        lambda folder: export_problem(folder, ingest),
    )
    known = context.instance.get_dynamic_partitions(inbox_patients.name)
    new = sorted({s.patient for s in scan.ready} - set(known))
    if scan.waiting:
        context.log.info(f"{len(scan.waiting)} inbox studies still changing; looking again later")
    requests = [
        dg.RunRequest(
            run_key=f"{s.study}:{scan.memory['done'][s.study]}",
            partition_key=s.patient,
            job_name=predict_patient_job.name,
            tags={STUDY_TAG: s.study, **INBOX_RUN_TAGS},
        )
        for s in scan.ready
    ]
    if scan.refused:
        for study, reason in scan.refused:
            context.log.warning(f"{study.patient} study {study.study} not scored: {reason}")
        path = paths.layout.inbox_refusals
        rows = refusal_rows([(s.patient, s.study, r) for s, r in scan.refused], now)
        table = merged_refusals(read_parquet_or_empty(path, REFUSAL_SCHEMA), rows)
        write_parquet_atomic(table, path, REFUSAL_SCHEMA)
        requests.append(dg.RunRequest(run_key=f"refused:{now}", job_name=worklist_job.name))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[inbox_patients.build_add_request(new)] if new else [],
        cursor=json.dumps(scan.memory),
    )
