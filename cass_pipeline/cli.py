"""`cass`: the command line over the domain modules (thin: parse arguments, call, print)."""

from __future__ import annotations

import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path

import click

from cass_pipeline import __version__
from cass_pipeline.domain.imaging.cleanup import CleanupConfig
from cass_pipeline.domain.synthetic.config import PRESETS
from cass_pipeline.settings import CassSettings

REPORTED_PACKAGES = (
    "dagster",
    "dagster-webserver",
    "mlflow",
    "torch",
    "torchvision",
    "spacy",
    "pandas",
    "pyarrow",
    "numpy",
    "opencv-python-headless",
    "scikit-learn",
    "pydicom",
)


def package_version(name: str) -> str:
    """Installed version of a distribution, or 'not installed'."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cass")
def main() -> None:
    """CASS: coronary artery stenosis scoring from CCTA reports and curved MPR images."""


@main.command()
def info() -> None:
    """Print versions, data paths, the MLflow tracking URI and the training device."""
    from cass_pipeline.domain.device import training_device

    settings = CassSettings.from_env()
    click.echo(f"cass {__version__} (Python {platform.python_version()}, {sys.executable})")
    click.echo("\nPackages:")
    for name in REPORTED_PACKAGES:
        click.echo(f"  {name:<24} {package_version(name)}")
    click.echo("\nPaths:")
    for label, path in (
        ("data", settings.data_dir),
        ("raw inputs", settings.raw_dir),
        ("processed outputs", settings.processed_dir),
        ("mlflow store", settings.mlflow_dir),
        ("dagster home", settings.dagster_home),
    ):
        click.echo(f"  {label:<24} {path}")
    click.echo("\nMLflow:")
    click.echo(f"  {'tracking uri':<24} {settings.tracking_uri}")
    click.echo(f"  {'artifact root':<24} {settings.artifact_root}")
    click.echo(f"  {'experiment':<24} {settings.experiment_name}")
    click.echo(f"\nTraining device: {training_device().description}")
    from cass_pipeline.settings import REGISTERED_MODEL_NAME
    from cass_pipeline.tracking import Tracking

    versions = Tracking.from_settings(settings).model_versions()
    click.echo(
        f"\nRegistered model {REGISTERED_MODEL_NAME}: "
        + (f"{len(versions)} version(s)" if versions else "no versions yet")
    )
    for v in versions[:10]:
        aliases = f" @{', @'.join(v['aliases'])}" if v["aliases"] else ""
        click.echo(f"  version {v['version']}{aliases} (run {v['run_id']})")


@main.command()
@click.option(
    "--preset",
    "preset_name",
    default="demo",
    show_default=True,
    type=click.Choice(sorted(PRESETS)),
    help="Cohort size and image settings.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder (created; an existing cohort is completed, not redone).",
)
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--patients", type=int, help="Override the preset's number of patients.")
@click.option("--views", type=int, help="Override the number of views per branch.")
@click.option("--size", type=int, help="Override the image size in pixels.")
@click.option("--difficulty", type=click.Choice(["easy", "standard", "hard"]))
@click.option("--format", "image_format", type=click.Choice(["dicom", "png"]))
@click.option(
    "--with-volumes",
    is_flag=True,
    default=None,
    help="Also write the CT volumes (NIfTI) and centrelines (JSON).",
)
@click.option(
    "--no-confounder",
    "disabled",
    multiple=True,
    type=click.Choice(
        ["calcium_near_vessels", "stents", "myocardial_bridging", "neighbouring_vessels"]
    ),
    help="Switch a confounder off.",
)
@click.option("--workers", type=int, help="Processes (default: all cores).")
@click.option(
    "--layout",
    type=click.Choice(["folders", "pacs"]),
    default="folders",
    show_default=True,
    help="folders: mpr/<case>/<series>/<view> and reports/<case>.txt; pacs: one flat folder "
    "of DICOM files with random names and the reports as one RIS CSV (MRN, Accession).",
)
def synth(
    preset_name,
    out_dir,
    seed,
    patients,
    views,
    size,
    difficulty,
    image_format,
    with_volumes,
    disabled,
    workers,
    layout,
) -> None:
    """Generate a synthetic CCTA cohort with known ground truth."""
    from dataclasses import replace

    from cass_pipeline.domain.storage import WriterBusyError
    from cass_pipeline.domain.synthetic.cohort import generate_cohort
    from cass_pipeline.domain.synthetic.config import Confounders, preset
    from cass_pipeline.domain.synthetic.pacs import write_pacs_dump
    from cass_pipeline.domain.synthetic.provenance import ForeignFilesError

    config = preset(
        preset_name,
        seed=seed,
        n_patients=patients,
        n_views=views,
        image_size=size,
        difficulty=difficulty,
        image_format=image_format,
        write_volumes=with_volumes,
    )
    if disabled:
        config = replace(config, confounders=Confounders(**{name: False for name in disabled}))

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            click.echo(f"  {done}/{total} patients", err=True)

    out = Path(out_dir).resolve()
    folders = out if layout == "folders" else out.with_name(f".{out.name}.folders")
    try:
        summary = generate_cohort(
            config,
            folders,
            workers=workers,
            progress=progress,
            notify=lambda message: click.echo(message, err=True),
        )
        if layout == "pacs":
            write_pacs_dump(folders, out, config.seed)
            shutil.rmtree(folders)
    except (ForeignFilesError, WriterBusyError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    shares = summary["exported_branch_class_share"]
    click.echo(
        f"{summary['patients']} patients, {summary['exported_branches']} exported branches, "
        f"{summary['images']} images in {Path(out_dir).resolve()}\n"
        f"exported branch classes: {shares}\nweak-label rate: {summary['weak_label_rate']:.1%}"
    )


@main.command()
@click.argument("raw_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the preflight as one JSON object.")
@click.option("--min-views", default=4, show_default=True, help="Views a branch needs.")
@click.option(
    "--patient",
    "wanted",
    multiple=True,
    metavar="PSEUDONYM",
    help="For the key holder: the raw files behind these pseudonyms and the files rejected "
    "from them (repeatable).",
)
def inspect(raw_dir: str, as_json: bool, min_views: int, wanted: tuple[str, ...]) -> None:
    """Preflight: what ingestion would make of RAW_DIR (patients, studies, series and their
    branches, views, unknown series names, reports and their links, unusable files and why),
    writing nothing; exits 1 when nothing is ingestible. Prints paths, which may name
    patients: keep the output with the raw data."""
    import json

    from cass_pipeline.domain.cohort_index import ReportColumns, index_cohort
    from cass_pipeline.domain.imaging.ingest import IngestConfig
    from cass_pipeline.domain.preflight import preflight, summary_lines

    settings = CassSettings.from_env()
    raw = Path(raw_dir).resolve()
    index = index_cohort(raw, ReportColumns())
    if wanted:
        locate_patients(raw, index, settings, wanted)
        return
    aliases = str(settings.series_aliases) if settings.series_aliases else None
    result = preflight(raw, index, IngestConfig(min_views=min_views, site_aliases=aliases))
    click.echo(json.dumps(result, indent=2) if as_json else "\n".join(summary_lines(result)))
    if not result["patients_ingestible"]:
        raise click.ClickException(f"{raw}: nothing is ingestible")


def locate_patients(raw: Path, index, settings: CassSettings, wanted: tuple[str, ...]) -> None:
    """The key holder's view: each pseudonym's source folder, report and rejected files."""
    import pandas as pd

    from cass_pipeline.domain.raw_layout import raw_patients
    from cass_pipeline.domain.synthetic.provenance import cohort_pseudonyms

    if not settings.pseudonym_key and not settings.pseudonym_key_file.is_file():
        raise click.ClickException(
            f"no pseudonym key ({settings.pseudonym_key_file} is missing and CASS_PSEUDONYM_KEY "
            "is not set): pseudonyms cannot be mapped back without the key they were made with"
        )
    keys = cohort_pseudonyms(raw, settings.pseudonym_key_file, settings.pseudonym_key, index)
    patients = {p.pseudonym: p for p in raw_patients(index, keys)}
    unknown = [w for w in wanted if w not in patients]
    if unknown:
        raise click.ClickException(
            f"{', '.join(unknown)}: no patient in {raw} has this pseudonym with this key"
        )
    images = settings.processed_dir / "images" / "rejects.parquet"
    reports = settings.processed_dir / "reports" / "report_rejects.parquet"
    image_rejects = pd.read_parquet(images) if images.is_file() else None
    report_rejects = pd.read_parquet(reports) if reports.is_file() else None
    for pseudonym in wanted:
        patient = patients[pseudonym]
        key = "public (generated patient)" if patient.public_key else "secret"
        click.echo(f"{pseudonym}  {patient.key}  [{key} key]")
        click.echo(f"  images: {patient.images or '-'}")
        click.echo(f"  report: {patient.report or '-'}")
        if image_rejects is not None and patient.images is not None:
            folder = patient.images if patient.images.is_dir() else patient.images.parent
            for row in image_rejects[image_rejects.patient_id == pseudonym].itertuples():
                click.echo(f"  rejected image: {folder / row.source_path}: {row.reason}")
        if report_rejects is not None:
            for row in report_rejects[report_rejects.patient_id == pseudonym].itertuples():
                click.echo(f"  rejected report: {patient.report}: {row.reason}")


@main.command("parse-report")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
@click.option(
    "--bare-50-non-significant",
    is_flag=True,
    help="Read a bare '50%' as non-significant (default: significant, as CAD-RADS).",
)
def parse_report(path: str, as_json: bool, bare_50_non_significant: bool) -> None:
    """Label one free-text CCTA report (de-identified before parsing)."""
    import json

    from cass_pipeline.domain.reports.labels import labels_json
    from cass_pipeline.domain.reports.pipeline import (
        EMPTY_REPORT,
        NO_FINDINGS,
        decode_report,
        has_findings,
        parse_report_text,
    )

    try:
        raw = decode_report(Path(path).read_bytes())
    except UnicodeError as error:
        raise click.ClickException(f"{path}: unreadable encoding ({error})") from error
    if not raw.strip():
        raise click.ClickException(f"{path}: {EMPTY_REPORT}")
    _, labels = parse_report_text(raw, bare_50_significant=not bare_50_non_significant)
    if not has_findings(labels):
        raise click.ClickException(f"{path}: {NO_FINDINGS}")
    result = labels_json(labels)
    if as_json:
        click.echo(json.dumps(result))
        return
    for name, branch in result["branches"].items():
        pct = branch["max_stenosis_pct"]
        pct_text = "-" if pct is None else f"{pct[0]}-{pct[1]}%"
        click.echo(
            f"{name:<8} {branch['stenosis_class'] or 'no label':<16} {pct_text:<9} "
            f"{'; '.join(branch['evidence'])}"
        )
    cad = result["cad_rads"]
    click.echo(
        f"patient: {result['patient_class']}; CAD-RADS "
        + "/".join([cad["category"] or "?", *cad["modifiers"]])
    )


@main.command("clean-mpr")
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.argument("target", type=click.Path(dir_okay=False))
@click.option(
    "--size",
    default=512,
    show_default=True,
    type=click.IntRange(min=16),
    help="Output size in pixels.",
)
@click.option(
    "--text-level",
    default=CleanupConfig.text_level,
    show_default=True,
    help="Pixels at or above this level are burned-in text.",
)
@click.option("--dilate", "dilate_px", default=CleanupConfig.dilate_px, show_default=True)
@click.option("--inpaint-radius", default=CleanupConfig.inpaint_radius, show_default=True)
@click.option(
    "--frame",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Frame of a multi-frame DICOM.",
)
def clean_mpr(source, target, size, text_level, dilate_px, inpaint_radius, frame) -> None:
    """Apply the training/serving cleanup to one MPR image (DICOM, PNG or JPEG) -> PNG."""
    from cass_pipeline.domain.imaging.cleanup import CleanupConfig, clean_image
    from cass_pipeline.domain.imaging.readers import ImageReadError, frame_of, read_image

    path, target = Path(source), picture_target(target)
    try:
        image = frame_of(read_image(path.read_bytes(), path.suffix), frame)
    except ImageReadError as error:
        raise click.ClickException(f"{source}: {error}") from error
    config = CleanupConfig(
        size=size, text_level=text_level, dilate_px=dilate_px, inpaint_radius=inpaint_radius
    )
    cleaned, stats = clean_image(image, config)
    write_picture(target, cleaned)
    top, bottom, left, right = stats.crop
    click.echo(
        f"{target}: {size}x{size}, {stats.text_pixels} text pixels "
        f"({stats.masked_pixels} inpainted), kept rows {top}-{bottom} cols {left}-{right}, "
        f"cleanup {config.fingerprint()}"
    )


def training_options(function):
    """Options shared by `cass train` and `cass lr-find`."""
    for option in reversed(
        [
            click.option(
                "--arch",
                default="shufflenet_v2_x1_0",
                show_default=True,
                type=click.Choice(
                    [
                        "shufflenet_v2_x0_5",
                        "shufflenet_v2_x1_0",
                        "shufflenet_v2_x1_5",
                        "shufflenet_v2_x2_0",
                    ]
                ),
            ),
            click.option(
                "--weights", default="auto", show_default=True, help="auto | imagenet | none | PATH"
            ),
            click.option("--batch-size", default=32, show_default=True),
            click.option(
                "--view-step",
                default=1,
                show_default=True,
                help="keep every n-th view of each branch",
            ),
            click.option("--seed", default=7, show_default=True),
        ]
    ):
        function = option(function)
    return function


def ensure_splits(processed) -> None:
    """Check that the tables training reads are there, and write the default patient splits
    when none exist yet (the asset normally does)."""
    import pandas as pd

    from cass_pipeline.domain.model.splits import SPLIT_SCHEMA, patient_splits, splittable_patients
    from cass_pipeline.domain.storage import write_parquet_atomic

    target = processed / "model" / "splits.parquet"
    needed = ["images/manifest.parquet", "reports/branch_labels.parquet"]
    for table in needed if target.is_file() else [*needed, "reports/patient_labels.parquet"]:
        if not (processed / table).is_file():
            raise click.ClickException(
                f"no processed data: {processed / table} is missing; run `make run` or "
                "materialise the images and reports assets first"
            )
    if target.is_file():
        return
    usable = splittable_patients(
        pd.read_parquet(processed / "reports" / "patient_labels.parquet"),
        pd.read_parquet(processed / "images" / "manifest.parquet", columns=["patient_id"]),
    )
    write_parquet_atomic(patient_splits(usable), target, SPLIT_SCHEMA)


@main.command()
@training_options
@click.option("--lr", default=1e-4, show_default=True)
@click.option(
    "--lr-schedule",
    default="constant",
    show_default=True,
    type=click.Choice(["constant", "cosine"]),
)
@click.option("--epochs", default=30, show_default=True)
@click.option("--patience", default=5, show_default=True)
@click.option("--accumulation-steps", default=1, show_default=True)
@click.option(
    "--imbalance",
    default="sampler",
    show_default=True,
    type=click.Choice(["sampler", "class_weights", "none"]),
)
@click.option(
    "--aggregation",
    default="vote",
    show_default=True,
    type=click.Choice(["vote", "attention"]),
    help="branch decision: majority vote of views, or attention pooling (MIL)",
)
@click.option("--num-workers", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | mps")
@click.option("--amp/--no-amp", default=True, show_default=True, help="mixed precision on CUDA")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True)
@click.option("--time-budget", "time_budget_s", type=float, help="seconds; stop after that epoch")
@click.option("--fresh", is_flag=True, help="ignore an interrupted run's checkpoint")
def train(fresh, **options) -> None:
    """Train on the processed tables; log to MLflow; register the model as challenger.

    Runs the same under `torchrun --nproc-per-node N -m cass_pipeline.cli train ...`.
    """
    import shutil

    from cass_pipeline.domain.model.train import TrainConfig
    from cass_pipeline.tracking import Tracking
    from cass_pipeline.training_run import TrainingInputs, run_training

    settings = CassSettings.from_env()
    ensure_splits(settings.processed_dir)
    inputs = TrainingInputs.under(settings.processed_dir)
    if fresh:
        shutil.rmtree(inputs.checkpoint_dir, ignore_errors=True)
    summary = run_training(
        inputs,
        TrainConfig(**options),
        Tracking.from_settings(settings),
        {"launched_by": "cass train"},
        progress=click.echo,
    )
    if summary is not None:
        click.echo(
            f"run {summary.run_id}: best epoch {summary.best_epoch}, validation branch "
            f"weighted F1 {summary.best_val_branch_f1:.3f}, weights {summary.weights_used};"
            f" registered version {summary.model_version} as challenger"
        )


@main.command("lr-find")
@training_options
@click.option("--steps", default=100, show_default=True)
@click.option(
    "--out", "out_dir", default="lr_find", show_default=True, type=click.Path(file_okay=False)
)
def lr_find(arch, weights, batch_size, view_step, seed, steps, out_dir) -> None:
    """Learning-rate range test on the train split: writes lr_find.png and lr_find.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cass_pipeline.domain.model.lr_find import lr_range_test
    from cass_pipeline.training_run import TrainingInputs, load_views

    settings = CassSettings.from_env()
    processed = settings.processed_dir
    ensure_splits(processed)
    views = load_views(TrainingInputs.under(processed), view_step)
    result = lr_range_test(
        views, processed, arch, weights, steps=steps, batch_size=batch_size, seed=seed
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.curve.to_csv(out / "lr_find.csv", index=False)
    fig, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(result.curve.lr, result.curve.smoothed_loss)
    axis.axvline(result.suggested_lr, linestyle="--", color="grey")
    axis.set(
        xscale="log",
        xlabel="learning rate",
        ylabel="smoothed training loss",
        title=f"LR range test ({arch}); steepest descent at {result.suggested_lr:.1e}",
    )
    fig.tight_layout()
    fig.savefig(out / "lr_find.png", dpi=100)
    click.echo(f"suggested learning rate {result.suggested_lr:.2e}; plot {out / 'lr_find.png'}")


@main.command()
@click.argument("predictions", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
@click.option(
    "--bootstrap",
    default=1000,
    show_default=True,
    help="Bootstrap rounds over patients for the 95% intervals (0: none).",
)
def evaluate(predictions: str, as_json: bool, bootstrap: int) -> None:
    """Segment, artery and patient metrics of view predictions (Parquet with patient_id,
    branch, view_index, label, pred)."""
    import json

    import pandas as pd

    from cass_pipeline.domain.evaluation import LEVELS, PAPER_TABLE2
    from cass_pipeline.domain.evaluation import evaluate as evaluate_views

    try:
        metrics = evaluate_views(pd.read_parquet(predictions), bootstrap)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(metrics))
        return
    click.echo(f"{'level':<9}{'n':>5}{'accuracy':>10}{'F1 (w)':>9}   paper acc / F1")
    for level in LEVELS:
        m = metrics[level]
        click.echo(
            f"{level:<9}{m['n']:>5}{m['accuracy']:>10.3f}{m['f1_weighted']:>9.3f}   "
            f"{PAPER_TABLE2[level][0]:.2f} / {PAPER_TABLE2[level][1]:.2f}"
        )


model_option = click.option(
    "--model",
    "model_uri",
    default="models:/cass-stenosis@champion",
    show_default=True,
    help="models:/name@alias, models:/name/version, an alias or a version number.",
)


def picture_target(path: str) -> Path:
    """Where a picture will be written, checked before any work: a .png or .jpg file in an
    existing folder."""
    target = Path(path)
    if target.suffix.lower() not in {".png", ".jpg", ".jpeg"}:
        raise click.ClickException(f"{target}: write a .png or .jpg file")
    if not target.parent.is_dir():
        raise click.ClickException(f"{target}: no folder {target.parent}")
    return target


def write_picture(target: Path, picture) -> None:
    import cv2

    if not cv2.imwrite(str(target), picture):
        raise click.ClickException(f"cannot write {target}")


def load_registered(model_uri: str, engine: str = "onnxruntime"):
    """The registered model, or one clear line and exit 1."""
    import os

    from cass_pipeline.tracking import RegistryError, Tracking

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return Tracking.from_settings(CassSettings.from_env()).load(model_uri, engine)
    except (RegistryError, ValueError) as error:
        raise click.ClickException(str(error)) from error


@main.command()
@click.argument("patient_dir", type=click.Path(file_okay=False))
@model_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Folder for prediction.json and report.png (default: ./prediction-<pseudonym>).",
)
@click.option("--explain", is_flag=True, help="Add Integrated Gradients of each decisive view.")
@click.option("--steps", default=32, show_default=True, help="Integrated Gradients steps.")
@click.option(
    "--engine",
    default="onnxruntime",
    show_default=True,
    help="onnxruntime (CPU) or pytorch.",
)
@click.option("--json", "as_json", is_flag=True, help="Print prediction.json to stdout.")
def predict(patient_dir, model_uri, out_dir, explain, steps, engine, as_json) -> None:
    """Score one patient's curved MPR export (DICOM or PNG, series in sub-folders) with a
    registered model; write prediction.json and report.png."""
    import json

    from tqdm import tqdm

    from cass_pipeline.domain.cohort_index import folder_patient_key
    from cass_pipeline.domain.imaging.ingest import PatientSource
    from cass_pipeline.domain.prediction_report import predict_folder, referral_line
    from cass_pipeline.domain.privacy import Pseudonyms, load_secret
    from cass_pipeline.domain.synthetic.provenance import cohort_pseudonyms

    folder = Path(patient_dir).resolve()
    if not folder.is_dir():
        raise click.ClickException(f"{patient_dir}: no such folder")
    files = PatientSource(folder.name, mpr_dir=folder).files()
    if not files:
        raise click.ClickException(f"{patient_dir}: the folder holds no files")
    loaded = load_registered(model_uri, engine)
    settings = CassSettings.from_env()
    key = folder_patient_key(folder)
    if folder.parent.name == "mpr":  # raw/mpr/<patient>: may be a generated patient
        pseudonyms = cohort_pseudonyms(
            folder.parent.parent, settings.pseudonym_key_file, settings.pseudonym_key
        )
    else:
        pseudonyms = Pseudonyms(load_secret(settings.pseudonym_key_file, settings.pseudonym_key))
    patient = pseudonyms(key)
    with tqdm(total=len(files), desc="reading and cleaning", unit="file", disable=None) as bar:
        report = predict_folder(
            loaded.predictor,
            folder,
            patient,
            loaded.description(),
            steps if explain else 0,
            on_file=bar.update,
        )
    document = report.document
    if document["patient_class"] is None:
        reasons = sorted({r["reason"] for r in document["rejected"]})
        raise click.ClickException(
            f"{patient_dir}: no recognisable series; {len(document['rejected'])} files rejected"
            + (f" ({'; '.join(reasons[:3])})" if reasons else "")
        )
    out = Path(out_dir) if out_dir else Path(f"prediction-{patient}")
    report.write(out)
    if as_json:
        click.echo(json.dumps(document))
        return
    click.echo(
        f"patient {patient}: {document['patient_class']} (CAD-RADS {document['cad_rads']}), "
        f"model {loaded.name} version {loaded.version}"
    )
    click.echo(referral_line(document))
    for name, branch in document["branches"].items():
        p = branch["probabilities"]
        click.echo(
            f"  {name:<8} {branch['class']:<16} "
            + " ".join(f"{p[c]:.2f}" for c in p)
            + f"  ({branch['views_used']} views)"
        )
    if document["rejected"]:
        click.echo(f"  {len(document['rejected'])} files rejected (reasons in prediction.json)")
    click.echo(f"wrote {out / 'prediction.json'} and {out / 'report.png'}")


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@model_option
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    help="Heat-map PNG (default: IMAGE name + _ig.png in the working folder).",
)
@click.option("--steps", default=32, show_default=True)
def explain(image: str, model_uri: str, out_path: str | None, steps: int) -> None:
    """Classify one MPR image and write its Integrated Gradients heat map."""
    from cass_pipeline.domain.anatomy import STENOSIS_CLASSES
    from cass_pipeline.domain.explain import central_band, integrated_gradients, mass_fraction
    from cass_pipeline.domain.explain import overlay as heat_overlay
    from cass_pipeline.domain.imaging.cleanup import clean_image
    from cass_pipeline.domain.imaging.readers import ImageReadError, frame_of, read_image

    path = Path(image)
    target = picture_target(out_path or f"{path.stem}_ig.png")
    try:
        frame = frame_of(read_image(path.read_bytes(), path.suffix), 0)
    except ImageReadError as error:
        raise click.ClickException(f"{image}: {error}") from error
    predictor = load_registered(model_uri).predictor
    cleaned, _ = clean_image(frame, predictor.bundle.ingest.cleanup)
    probabilities = predictor.probabilities(cleaned[None])[0]
    predicted = int(probabilities.argmax())
    attribution = integrated_gradients(predictor.network(), cleaned, predicted, steps)
    write_picture(target, heat_overlay(cleaned, attribution))
    share = mass_fraction(attribution, central_band(cleaned.shape, 0.25))
    click.echo(
        " ".join(f"{c}={p:.3f}" for c, p in zip(STENOSIS_CLASSES, probabilities, strict=True))
    )
    click.echo(
        f"predicted {STENOSIS_CLASSES[predicted]}; {share:.0%} of the attribution on the "
        f"central vessel band; heat map {target}"
    )


if __name__ == "__main__":
    main()
