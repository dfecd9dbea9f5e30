"""`cass` commands on models: train, lr-find, pretrain, evaluate, predict, explain (thin: parse
arguments, call the domain or the runs package, print)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from cass_pipeline.cli_common import options_of, picture_target, write_picture
from cass_pipeline.domain.generations import GenerationMissingError, held_layout
from cass_pipeline.domain.model.config import (
    EvaluateSettings,
    ExplainSettings,
    PretrainSettings,
    TrainConfig,
)
from cass_pipeline.domain.prediction.config import PredictSettings
from cass_pipeline.domain.prediction.outputs import OUTPUT_FORMATS, WRITERS
from cass_pipeline.layout import DataLayout
from cass_pipeline.settings import CassSettings

#: What `cass lr-find` shares with `cass train`.
LR_FIND_OPTIONS = ("arch", "weights", "batch_size", "view_step", "seed")


@contextmanager
def training_layout() -> Iterator[DataLayout]:
    """The processed tables training reads, at the published image generation (held while
    the command runs), with default splits written when missing."""
    from cass_pipeline.runs.training import MissingInputsError, ensure_splits

    try:
        with held_layout(CassSettings.from_env().layout) as layout:
            ensure_splits(layout)
            yield layout
    except (MissingInputsError, GenerationMissingError) as error:
        raise click.ClickException(str(error)) from None


@click.command()
@options_of(TrainConfig)
@click.option("--fresh", is_flag=True, help="ignore an interrupted run's checkpoint")
@click.option(
    "--folds",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="K >= 2: patient-level K-fold cross-validation of these settings on the training "
    "and validation patients (figures only, unless --ensemble); 0: train and register",
)
@click.option(
    "--ensemble",
    is_flag=True,
    help="with --folds K: register the K fold networks as one model version (challenger), "
    "calibrated on their pooled out-of-fold predictions",
)
def train(fresh, folds, ensemble, **options) -> None:
    """Train on the processed tables; log to MLflow; register the model as challenger.

    Runs the same under `torchrun --nproc-per-node N -m cass_pipeline.cli train ...`.
    """
    from cass_pipeline.runs.tracking import Tracking
    from cass_pipeline.runs.training import run_training

    tracking = Tracking.from_settings(CassSettings.from_env())
    with training_layout() as layout:
        if folds or ensemble:
            cross_validate(layout, TrainConfig(**options), tracking, folds, ensemble)
            return
        if fresh:
            shutil.rmtree(layout.checkpoints, ignore_errors=True)
        summary = run_training(
            layout,
            TrainConfig(**options),
            tracking,
            {"launched_by": "cass train"},
            progress=click.echo,
        )
    if summary is not None:
        click.echo(
            f"run {summary.run_id}: best epoch {summary.best_epoch}, validation branch "
            f"weighted F1 {summary.best_val_branch_f1:.3f}, weights {summary.weights_used};"
            f" registered version {summary.model_version} as challenger"
        )


def cross_validate(
    layout: DataLayout, config: TrainConfig, tracking, folds: int, ensemble: bool
) -> None:
    """`cass train --folds K [--ensemble]`: the cross-validation's table and its parent run,
    and the registered ensemble's version."""
    from cass_pipeline.runs.crossval import run_cross_validation

    if folds < 2:
        raise click.UsageError("--folds needs at least 2 (0 trains one model)")
    try:
        result = run_cross_validation(
            layout,
            config,
            tracking,
            folds,
            {"launched_by": "cass train"},
            progress=click.echo,
            ensemble=ensemble,
        )
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(result.markdown)
    click.echo(f"cross-validation run {result.run_id} (a nested run per fold)")
    if result.model_version is not None:
        click.echo(
            f"registered the {folds} fold networks as version {result.model_version} (challenger)"
        )


@click.command("lr-find")
@options_of(TrainConfig, LR_FIND_OPTIONS)
@click.option("--steps", default=100, show_default=True)
@click.option(
    "--out", "out_dir", default="lr_find", show_default=True, type=click.Path(file_okay=False)
)
def lr_find(arch, weights, batch_size, view_step, seed, steps, out_dir) -> None:
    """Learning-rate range test on the train split: writes lr_find.png and lr_find.csv."""
    from cass_pipeline.domain.model.lr_find import lr_curve_png, lr_range_test
    from cass_pipeline.runs.training import load_views

    config = TrainConfig(arch=arch, weights=weights, batch_size=batch_size, seed=seed)
    with training_layout() as layout:
        views = load_views(layout, view_step)
        result = lr_range_test(views, layout.images, config, steps=steps)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.curve.to_csv(out / "lr_find.csv", index=False)
    (out / "lr_find.png").write_bytes(lr_curve_png(result, arch))
    click.echo(f"suggested learning rate {result.suggested_lr:.2e}; plot {out / 'lr_find.png'}")


@click.command()
@options_of(PretrainSettings)
@click.option(
    "--out", "out_path", default="pretrained.pt", show_default=True, type=click.Path(dir_okay=False)
)
def pretrain(out_path, **options) -> None:
    """Self-supervised pretraining (SimCLR) on the views of every patient outside the test
    split; writes weights that `cass train --weights PATH` starts from."""
    import pandas as pd

    from cass_pipeline.domain.model.pretrain import pretrain as run_pretraining
    from cass_pipeline.domain.model.pretrain import unlabelled_views

    settings = PretrainSettings(**options)
    with training_layout() as layout:
        manifest = pd.read_parquet(layout.manifest)
        views = unlabelled_views(manifest, pd.read_parquet(layout.splits), settings.view_step)
        result = run_pretraining(views, layout.images, settings, Path(out_path))
    losses = ", ".join(f"{loss:.3f}" for loss in result.losses)
    click.echo(f"{result.views} unlabelled views, loss per epoch {losses}; wrote {result.weights}")


@click.command()
@click.argument("predictions", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
@options_of(EvaluateSettings)
def evaluate(predictions: str, as_json: bool, bootstrap: int) -> None:
    """Segment, artery and patient metrics of view predictions (Parquet with patient_id,
    branch, view_index, label, pred), and the CAD-RADS figures of a grade model's (with
    grade_low, grade_high, branch_grade and the grade probabilities)."""
    import json

    import pandas as pd

    from cass_pipeline.domain.evaluation.grades import grade_markdown, grade_metrics
    from cass_pipeline.domain.evaluation.report import paper_comparison_lines
    from cass_pipeline.domain.model.metrics import evaluate as evaluate_views

    frame = pd.read_parquet(predictions)
    try:
        metrics = evaluate_views(frame, bootstrap)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    grades = grade_metrics(frame, bootstrap) if "branch_grade" in frame else None
    if as_json:
        click.echo(json.dumps(metrics | ({"cad_rads": grades} if grades else {})))
        return
    click.echo("\n".join(paper_comparison_lines(metrics)))
    if grades:
        click.echo(grade_markdown(grades))


model_option = options_of(PredictSettings, ("model",))


def load_registered(model_uri: str, engine: str = PredictSettings.engine):
    """The registered model, or one clear line and exit 1."""
    import os

    from cass_pipeline.runs.tracking import RegistryError, Tracking

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return Tracking.from_settings(CassSettings.from_env()).load(model_uri, engine)
    except (RegistryError, ValueError) as error:
        raise click.ClickException(str(error)) from error


@click.command()
@click.argument("patient_dir", type=click.Path(file_okay=False))
@options_of(PredictSettings, ("model", "engine"))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Output folder (default: ./prediction-<patient pseudonym>).",
)
@click.option("--explain", is_flag=True, help="Add Integrated Gradients of each decisive view.")
@options_of(ExplainSettings, ("steps",))
@click.option(
    "--output",
    "outputs",
    multiple=True,
    type=click.Choice(OUTPUT_FORMATS),
    default=OUTPUT_FORMATS,
    show_default=True,
    help="What to write (repeat for several): "
    + "; ".join(f"{name}: {w.file_name}" for name, w in WRITERS.items()),
)
@click.option("--json", "as_json", is_flag=True, help="Print prediction.json to stdout.")
def predict(patient_dir, model, engine, out_dir, explain, steps, outputs, as_json) -> None:
    """Score one patient's curved MPR export (DICOM or PNG, series in sub-folders) with a
    registered model; write prediction.json and report.png (or the chosen --output)."""
    import json

    from tqdm import tqdm

    from cass_pipeline.domain.cohort.index import folder_patient_key
    from cass_pipeline.domain.imaging.views import PatientSource
    from cass_pipeline.domain.prediction.document import terminal_lines
    from cass_pipeline.domain.prediction.folder import predict_folder
    from cass_pipeline.domain.prediction.outputs import (
        PixelTextError,
        output_writers,
        write_outputs,
    )
    from cass_pipeline.domain.synthetic.provenance import folder_pseudonyms

    folder = Path(patient_dir).resolve()
    if not folder.is_dir():
        raise click.ClickException(f"{patient_dir}: no such folder")
    files = PatientSource(folder.name, mpr_dir=folder).files()
    if not files:
        raise click.ClickException(f"{patient_dir}: the folder holds no files")
    settings = CassSettings.from_env()
    pseudonyms = folder_pseudonyms(folder, settings.pseudonym_key_file, settings.pseudonym_key)
    patient = pseudonyms(folder_patient_key(folder))
    out = Path(out_dir) if out_dir else Path(f"prediction-{patient}")
    writable_folder(out)  # before minutes of work, not after
    loaded = load_registered(model, engine)
    with tqdm(total=len(files), desc="reading and cleaning", unit="file", disable=None) as bar:
        predicted = predict_folder(
            loaded.predictor,
            folder,
            patient,
            loaded.description(),
            steps if explain else 0,
            on_file=bar.update,
        )
    document = predicted.document
    if document["patient_class"] is None:
        reasons = sorted({r["reason"] for r in document["rejected"]})
        raise click.ClickException(
            f"{patient_dir}: no recognisable series; {len(document['rejected'])} files rejected"
            + (f" ({'; '.join(reasons[:3])})" if reasons else "")
        )
    try:
        written = write_outputs(predicted, out, output_writers(outputs))
    except PixelTextError as error:
        raise click.ClickException(f"{patient}: {error}") from error
    except OSError as error:
        raise click.ClickException(f"cannot write into {out}: {error.strerror}") from None
    if as_json:
        click.echo(json.dumps(document))
        return
    click.echo("\n".join(terminal_lines(document, loaded.name, loaded.version)))
    click.echo("wrote " + " and ".join(str(file.path) for file in written.values()))


def writable_folder(folder: Path) -> None:
    """A one-line error unless `folder` can be written or created (nothing is created)."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise click.ClickException(f"cannot write into {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise click.ClickException(f"cannot write into {folder}: permission denied on {existing}")


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@model_option
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    help="Heat-map PNG (default: IMAGE name + _ig.png in the working folder).",
)
@options_of(ExplainSettings, ("steps",))
def explain(image: str, model: str, out_path: str | None, steps: int) -> None:
    """Classify one MPR image and write its Integrated Gradients heat map."""
    from cass_pipeline.domain.imaging.readers import ImageReadError, frame_of, read_image
    from cass_pipeline.domain.model.explain import explain_image

    path = Path(image)
    target = picture_target(out_path or f"{path.stem}_ig.png")
    try:
        read = read_image(path.read_bytes(), path.suffix)
        frame = frame_of(read, 0)
    except ImageReadError as error:
        raise click.ClickException(f"{image}: {error}") from error
    explained = explain_image(load_registered(model).predictor, frame, steps, read.hints(0))
    write_picture(target, explained.picture, read.identifiers)
    click.echo("\n".join(explained.lines()) + f"; heat map {target}")


@click.command()
@options_of(PredictSettings, ("model", "engine"))
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=5001, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--max-request-mb", default=1024, show_default=True, type=click.IntRange(1), help="largest body"
)
def serve(model, engine, host, port, max_request_mb) -> None:
    """Serve a registered model over REST (POST /invocations, as `mlflow models serve`), with
    answers that never echo a request and the contract of `cass predict` (docs/prediction.md)."""
    import logging

    import uvicorn

    from cass_pipeline.runs.rest import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(load_registered(model, engine), max_request_mb << 20)
    uvicorn.run(app, host=host, port=port, log_level="info")


COMMANDS = (train, lr_find, pretrain, evaluate, predict, explain, serve)
