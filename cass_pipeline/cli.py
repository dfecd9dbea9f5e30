"""`cass`: the command line over the domain modules (thin: parse arguments, call, print)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

import click

from cass_pipeline import __version__
from cass_pipeline.settings import CassSettings

REPORTED_PACKAGES = (
    "dagster", "dagster-webserver", "mlflow", "torch", "torchvision", "spacy", "pandas",
    "pyarrow", "numpy", "opencv-python-headless", "scikit-learn", "pydicom",
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
