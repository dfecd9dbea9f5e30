"""`cass`: the command line over the domain modules (thin: parse arguments, call, print)."""

from __future__ import annotations

import platform
import shutil
import sys
from dataclasses import fields
from importlib import metadata
from pathlib import Path
from typing import get_args

import click

from cass_pipeline import __version__
from cass_pipeline.cli_common import options_of, picture_target, write_picture
from cass_pipeline.cli_dicom import COMMANDS as DICOM_COMMANDS
from cass_pipeline.cli_model import COMMANDS
from cass_pipeline.cli_review import COMMANDS as REVIEW_COMMANDS
from cass_pipeline.domain.imaging.config import CleanupConfig, IngestConfig
from cass_pipeline.domain.synthetic.config import (
    DEFAULT_PRESET,
    PRESETS,
    Confounders,
    Difficulty,
    ExportStyle,
    ImageFormat,
)
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
    from cass_pipeline.runs.tracking import Tracking
    from cass_pipeline.settings import REGISTERED_MODEL_NAME

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
    default=DEFAULT_PRESET,
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
@click.option("--seed", type=int, help="Override the preset's seed (7 for most).")
@click.option("--patients", type=int, help="Override the preset's number of patients.")
@click.option("--views", type=int, help="Override the number of views per branch.")
@click.option("--size", type=int, help="Override the image size in pixels.")
@click.option("--difficulty", type=click.Choice(get_args(Difficulty)))
@click.option("--format", "image_format", type=click.Choice(get_args(ImageFormat)))
@click.option(
    "--export-style",
    type=click.Choice(get_args(ExportStyle)),
    help="How a workstation or PACS writes the views: grey with white text (default), the "
    "overlay in grey or colour, a saturating window, MONOCHROME1, CT values, one multi-frame "
    "file per series, JPEG, JPEG 2000, JPEG-LS (docs/synthetic.md).",
)
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
    type=click.Choice([f.name for f in fields(Confounders)]),
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
    export_style,
    with_volumes,
    disabled,
    workers,
    layout,
) -> None:
    """Generate a synthetic CCTA cohort with known ground truth."""
    from dataclasses import replace

    from cass_pipeline.domain.storage import WriterBusyError
    from cass_pipeline.domain.synthetic.cohort import generate_cohort
    from cass_pipeline.domain.synthetic.config import preset
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
        export_style=export_style,
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
@options_of(IngestConfig, ("min_views",))
@click.option(
    "--patient",
    "wanted",
    multiple=True,
    metavar="PSEUDONYM",
    help="For the key holder: the raw files behind these pseudonyms and the files rejected "
    "from them, or in an inbox the patient's studies (repeatable).",
)
def inspect(raw_dir: str, as_json: bool, min_views: int, wanted: tuple[str, ...]) -> None:
    """Preflight: what ingestion would make of RAW_DIR (patients, studies, series and their
    branches, views, unknown series names, reports and their links, unusable files and why),
    writing nothing; exits 1 when nothing is ingestible. Prints paths, which may name
    patients: keep the output with the raw data."""
    import json

    from cass_pipeline.domain.cohort.index import index_cohort
    from cass_pipeline.domain.cohort.report_sources import ReportColumns
    from cass_pipeline.domain.imaging.preflight import preflight, summary_lines

    settings = CassSettings.from_env()
    raw = Path(raw_dir).resolve()
    if wanted and raw == settings.inbox_dir:
        locate_inbox_studies(raw, settings, wanted)
        return
    index = index_cohort(raw, ReportColumns())
    if wanted:
        locate_patients(raw, index, settings, wanted)
        return
    aliases = str(settings.series_aliases) if settings.series_aliases else None
    result = preflight(raw, index, IngestConfig(min_views=min_views, site_aliases=aliases))
    click.echo(json.dumps(result, indent=2) if as_json else "\n".join(summary_lines(result)))
    if not result["patients_ingestible"]:
        raise click.ClickException(f"{raw}: nothing is ingestible")


def require_key(settings: CassSettings) -> None:
    """Refuse to map pseudonyms back without the key they were made with."""
    if not settings.pseudonym_key and not settings.pseudonym_key_file.is_file():
        raise click.ClickException(
            f"no pseudonym key ({settings.pseudonym_key_file} is missing and CASS_PSEUDONYM_KEY "
            "is not set): pseudonyms cannot be mapped back without the key they were made with"
        )


def locate_inbox_studies(inbox: Path, settings: CassSettings, wanted: tuple[str, ...]) -> None:
    """The key holder's view of the inbox: each pseudonym's studies (the keyed study id the
    worklist and the reading room show, the folder, the stated study date and time)."""
    from cass_pipeline.domain.prediction.inbox import inbox_studies, study_time
    from cass_pipeline.domain.privacy import Pseudonyms, load_secret

    require_key(settings)
    secret = Pseudonyms(load_secret(settings.pseudonym_key_file, settings.pseudonym_key))
    studies = [s for s in inbox_studies(inbox, secret) if s.patient in wanted]
    unknown = sorted(set(wanted) - {s.patient for s in studies})
    if unknown:
        raise click.ClickException(
            f"{', '.join(unknown)}: no study in {inbox} has this pseudonym with this key"
        )
    for study in studies:
        stated = study_time(study.folder)[0] or "no study date stated"
        click.echo(f"{study.patient}  {study.study}  {study.folder}  {stated}")


def locate_patients(raw: Path, index, settings: CassSettings, wanted: tuple[str, ...]) -> None:
    """The key holder's view: each pseudonym's source folder, report and rejected files."""
    import pandas as pd

    from cass_pipeline.domain.cohort.raw_layout import raw_patients
    from cass_pipeline.domain.imaging.preflight import patient_locations
    from cass_pipeline.domain.synthetic.provenance import cohort_pseudonyms

    require_key(settings)
    keys = cohort_pseudonyms(raw, settings.pseudonym_key_file, settings.pseudonym_key, index)
    patients = {p.pseudonym: p for p in raw_patients(index, keys)}
    unknown = [w for w in wanted if w not in patients]
    if unknown:
        raise click.ClickException(
            f"{', '.join(unknown)}: no patient in {raw} has this pseudonym with this key"
        )
    rejects = [settings.layout.image_rejects, settings.layout.report_rejects]
    tables = [pd.read_parquet(path) if path.is_file() else None for path in rejects]
    click.echo("\n".join(patient_locations(patients, wanted, *tables)))


@main.command("parse-report")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
@click.option(
    "--explain",
    is_flag=True,
    help="Print each branch's grade with the sentence and the rules that set it, and every flag.",
)
@click.option(
    "--bare-50-non-significant",
    is_flag=True,
    help="Read a bare '50%' as non-significant (default: significant, as CAD-RADS).",
)
@click.option(
    "--vocabulary",
    "vocabulary",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A site's vocabulary file (YAML), besides the built-in English one (repeatable; "
    "default: CASS_REPORT_VOCABULARY).",
)
def parse_report(
    path: str,
    as_json: bool,
    explain: bool,
    bare_50_non_significant: bool,
    vocabulary: tuple[str, ...],
) -> None:
    """Label one free-text CCTA report (de-identified before parsing)."""
    import json

    from cass_pipeline.domain.cohort.report_sources import decode_report
    from cass_pipeline.domain.reports.explain import explain_lines
    from cass_pipeline.domain.reports.labels import labels_json, labels_lines
    from cass_pipeline.domain.reports.pipeline import (
        EMPTY_REPORT,
        NO_FINDINGS,
        parse_report_text,
        refused_without_findings,
    )
    from cass_pipeline.domain.reports.vocabulary import site_files

    try:
        raw = decode_report(Path(path).read_bytes())
    except UnicodeError as error:
        raise click.ClickException(f"{path}: unreadable encoding ({error})") from error
    if not raw.strip():
        raise click.ClickException(f"{path}: {EMPTY_REPORT}")
    files = vocabulary or site_files(CassSettings.from_env().report_vocabulary)
    try:
        _, labels = parse_report_text(raw, not bare_50_non_significant, files)
    except ValueError as error:  # a bad vocabulary file (VocabularyError), or a parser bug
        raise click.ClickException(f"{path}: {error}") from error
    if refused_without_findings(labels):
        raise click.ClickException(f"{path}: {NO_FINDINGS}")
    if as_json and explain:
        raise click.UsageError("--json and --explain are two ways to print; choose one")
    result = labels_json(labels)
    if explain:
        click.echo("\n".join(explain_lines(labels)))
    else:
        click.echo(json.dumps(result) if as_json else "\n".join(labels_lines(result)))


@main.command("clean-mpr")
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.argument("target", type=click.Path(dir_okay=False))
@options_of(CleanupConfig)
@click.option(
    "--frame",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Frame of a multi-frame DICOM.",
)
def clean_mpr(source, target, frame, **cleanup) -> None:
    """Apply the training/serving cleanup to one MPR image (DICOM, PNG or JPEG) -> PNG."""
    from cass_pipeline.domain.imaging.cleanup import clean_image
    from cass_pipeline.domain.imaging.readers import ImageReadError, frame_of, read_image

    path, target = Path(source), picture_target(target)
    try:
        read = read_image(path.read_bytes(), path.suffix)
        image = frame_of(read, frame)
    except ImageReadError as error:
        raise click.ClickException(f"{source}: {error}") from error
    config = CleanupConfig(**cleanup)
    cleaned, stats = clean_image(image, config, read.hints(frame))
    write_picture(target, cleaned, read.identifiers)
    top, bottom, left, right = stats.crop
    click.echo(
        f"{target}: {config.size}x{config.size}, {stats.text_pixels} text pixels "
        f"({stats.masked_pixels} inpainted), kept rows {top}-{bottom} cols {left}-{right}, "
        f"cleanup {config.fingerprint()}"
    )


for command in (*COMMANDS, *DICOM_COMMANDS, *REVIEW_COMMANDS):
    main.add_command(command)

if __name__ == "__main__":
    main()
