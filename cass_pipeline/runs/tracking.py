"""MLflow tracking and registry for one experiment, usable from Dagster, the CLI and torchrun.

Wiring layer (imports mlflow); the Dagster resource `MlflowTracking` builds one of these.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient
from torch import nn

from cass_pipeline.domain.evaluation.config import CHALLENGER, CHAMPION
from cass_pipeline.domain.options import option
from cass_pipeline.domain.prediction.bundle import ModelBundle, write_bundle
from cass_pipeline.domain.prediction.config import PredictSettings, check_engine
from cass_pipeline.domain.prediction.predictor import Predictor
from cass_pipeline.settings import REGISTERED_MODEL_NAME, CassSettings

#: The run artifact listing the content hashes of the images a model learnt from.
LEARNT_IMAGES = "learnt_images.csv"
#: What the serving environment needs (`mlflow models serve --env-manager local` uses this one).
SERVING_PACKAGES = (
    "cass-pipeline",
    "torch",
    "torchvision",
    "onnxruntime",
    "opencv-python-headless",
)


class RegistryError(Exception):
    """A model that cannot be looked up; the message is one line for the user."""


class NotServableError(RegistryError):
    """A registered version that is not a CASS serving model (no bundle)."""


def parse_model_reference(reference: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of `models:/name@alias`, `models:/name/3`, `champion` or `3`."""
    match = re.fullmatch(r"models:/([^/@]+)(?:@([\w-]+)|/(\d+))", reference.strip())
    if match:
        return match.group(1), match.group(2), match.group(3)
    if reference.isdigit():
        return REGISTERED_MODEL_NAME, None, reference
    if re.fullmatch(r"[\w-]+", reference):
        return REGISTERED_MODEL_NAME, reference, None
    raise RegistryError(
        f"{reference!r} is not a model reference (models:/name@alias, models:/name/version, "
        "an alias or a version number)"
    )


def model_uri(name: str, alias: str | None, version: str | int | None) -> str:
    return f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"


@dataclass(frozen=True)
class LoadedModel:
    """A registered model ready to predict, and which one it is."""

    predictor: Predictor
    name: str
    version: int
    alias: str | None
    run_id: str

    def description(self) -> dict:
        """What a prediction records about the model that made it."""
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "uri": model_uri(self.name, self.alias, self.version),
            "run_id": self.run_id,
            "engine": self.predictor.engine.name,
            "arch": self.predictor.bundle.arch,
            "cleanup_fingerprint": self.predictor.bundle.cleanup_fingerprint,
            "temperature": self.predictor.bundle.calibration.temperature,
            "referral_threshold": self.predictor.bundle.calibration.referral_threshold,
            "target_sensitivity": self.predictor.bundle.calibration.target_sensitivity,
        }


def private_copy() -> str:
    """A folder of this process for the copy of a model it loads: MLflow writes into the
    folder it loads from, and a local registry must stay as registered (and may be another
    account's, readable only)."""
    return tempfile.mkdtemp(prefix="cass-model-")


@dataclass(frozen=True)
class Tracking:
    """Where runs and models go: sqlite (absolute URI) or an http tracking server."""

    tracking_uri: str = field(metadata={"help": "absolute sqlite:/// URI or an http server"})
    experiment_name: str = field(metadata={"help": "the MLflow experiment of the runs"})
    artifact_root: str | None = option(None, "artifact location of a new experiment (a URI)")
    registry_uri: str | None = option(None, "model registry URI (default: the tracking URI)")

    @classmethod
    def from_settings(cls, settings: CassSettings) -> Tracking:
        return cls(settings.tracking_uri, settings.experiment_name, settings.artifact_root)

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def experiment_id(self) -> str:
        """The experiment's id, created on first use with artifacts under `artifact_root`."""
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if self.artifact_root and not self.tracking_uri.startswith(("http://", "https://")):
            location = f"{self.artifact_root.rstrip('/')}/{self.experiment_name}"
        return client.create_experiment(self.experiment_name, artifact_location=location)

    def activate(self) -> None:
        """Point the fluent API (mlflow.log_*, log_model) at this store."""
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri or self.tracking_uri)

    @contextmanager
    def start_run(
        self, run_name: str, tags: dict[str, str] | None = None
    ) -> Iterator[mlflow.ActiveRun]:
        """An active fluent-API run in this experiment."""
        self.activate()
        with mlflow.start_run(
            experiment_id=self.experiment_id(), run_name=run_name, tags=tags
        ) as run:
            yield run

    def check_reachable(self) -> None:
        """Fail with one clear line when the store is missing or the server does not answer
        (sqlite would otherwise create an empty store, http retry for minutes)."""
        uri = self.registry_uri or self.tracking_uri
        if uri.startswith("sqlite:///"):
            path = Path(uri.removeprefix("sqlite:///"))
            if not path.is_file():
                raise RegistryError(f"no MLflow registry at {path} (tracking URI {uri})")
        elif uri.startswith(("http://", "https://")):
            import requests

            try:
                requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
            except requests.ConnectionError as error:
                raise RegistryError(
                    f"cannot reach the MLflow server at {uri}: no answer"
                ) from error
            except requests.RequestException as error:
                raise RegistryError(f"the MLflow server at {uri} failed: {error}") from error

    def model_version(self, reference: str = CHAMPION) -> ModelVersion:
        """The registered version a reference names: `models:/name@alias`,
        `models:/name/version`, or a bare alias or version number of `cass-stenosis`."""
        self.check_reachable()
        name, alias, version = parse_model_reference(reference)
        client = self.client()
        try:
            if alias is not None:
                return client.get_model_version_by_alias(name, alias)
            return client.get_model_version(name, version)
        except mlflow.exceptions.MlflowException as error:
            aliases = ", ".join(
                f"@{a} = version {v['version']}"
                for v in self.model_versions(name)
                for a in v["aliases"]
            )
            raise RegistryError(
                f"{model_uri(name, alias, version)} is not in the registry at "
                f"{self.tracking_uri} (known aliases: {aliases or 'none'})"
            ) from error

    def alias_version(self, alias: str, name: str = REGISTERED_MODEL_NAME) -> int | None:
        """The version holding `alias`, or None when no version holds it yet (an unreachable
        registry is an error, not "none")."""
        self.check_reachable()
        try:
            return int(self.client().get_model_version_by_alias(name, alias).version)
        except mlflow.exceptions.MlflowException as error:
            if error.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
                return None
            raise

    def load(
        self, reference: str = CHAMPION, engine: str = PredictSettings.engine, device: str = "cpu"
    ) -> LoadedModel:
        """The registered pyfunc model as a `Predictor`, with what identifies it."""
        import mlflow.pyfunc

        from cass_pipeline.runs.serving import BUNDLE_ARTIFACT

        check_engine(engine)  # before the registry is asked
        version = self.model_version(reference)
        _, alias, _ = parse_model_reference(reference)
        self.activate()
        uri = model_uri(version.name, None, version.version)
        flavours = mlflow.models.get_model_info(uri).flavors
        if BUNDLE_ARTIFACT not in flavours.get("python_function", {}).get("artifacts", {}):
            raise NotServableError(
                f"{uri} is not a CASS serving model (flavours: {', '.join(flavours)}; "
                "registered before models carried their bundle?): retrain to register one"
            )
        copy = private_copy()
        pyfunc = mlflow.pyfunc.load_model(
            uri, dst_path=copy, model_config={"engine": engine, "device": device}
        )
        predictor = pyfunc.unwrap_python_model().predictor
        weakref.finalize(predictor, shutil.rmtree, copy, ignore_errors=True)  # or at exit
        if not predictor.bundle.cleans_as_trained():
            raise NotServableError(
                f"{uri} was trained on images cleaned as {predictor.bundle.cleanup_fingerprint}; "
                f"this code cleans them as {predictor.bundle.ingest.cleanup.fingerprint()} "
                "(the cleanup changed since): retrain to register one"
            )
        return LoadedModel(
            predictor=predictor,
            name=version.name,
            version=int(version.version),
            alias=alias,
            run_id=version.run_id,
        )

    def run_artifact(self, run_id: str, name: str) -> Path | None:
        """A local copy of a run's artifact, or None when the run did not log it."""
        try:
            return Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=name, tracking_uri=self.tracking_uri
                )
            )
        except Exception:  # no such artifact, or an unreadable store
            return None

    def run_table(self, run_id: str, name: str) -> pd.DataFrame | None:
        """A CSV artifact of a run, or None when the run did not log it (older runs)."""
        path = self.run_artifact(run_id, name)
        return None if path is None else pd.read_csv(path, dtype=str)

    def learnt_from(self, run_id: str) -> tuple[set[str], set[str]]:
        """What a training run learnt from: the content hashes of its source images (16 hex
        digits; they survive a change of pseudonyms) and its train and validation patients."""
        images = self.run_table(run_id, LEARNT_IMAGES)
        splits = self.run_table(run_id, "splits.csv")
        return (
            set(images.source_sha256) if images is not None else set(),
            set(splits.loc[splits.split != "test", "patient_id"]) if splits is not None else set(),
        )

    def register(
        self,
        model: nn.Module,
        bundle: ModelBundle,
        check_images: np.ndarray,
        name: str = REGISTERED_MODEL_NAME,
    ) -> int:
        """Log `model` with its bundle as a pyfunc in the active run (the ONNX export checked
        against the network on `check_images`), register it and alias it `challenger`."""
        import mlflow.pyfunc

        from cass_pipeline.runs.serving import (
            BUNDLE_ARTIFACT,
            DEFAULT_MODEL_CONFIG,
            PYFUNC_ENTRY,
            SIGNATURE,
            example_request,
        )

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / BUNDLE_ARTIFACT
            difference = write_bundle(model, bundle, folder, check_images)
            mlflow.log_metric("onnx_max_probability_difference", difference)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_ENTRY),
                artifacts={BUNDLE_ARTIFACT: str(folder)},
                signature=SIGNATURE,
                input_example=example_request(bundle.image_size),
                model_config=DEFAULT_MODEL_CONFIG,
                registered_model_name=name,
                pip_requirements=[
                    f"{package}=={metadata.version(package)}" for package in SERVING_PACKAGES
                ],
            )
        version = int(info.registered_model_version)
        self.set_alias(CHALLENGER, version, name)
        return version

    def describe_version(
        self,
        version: int,
        description: str,
        tags: dict[str, str],
        name: str = REGISTERED_MODEL_NAME,
    ) -> None:
        """The version's description (its model card) and tags in the registry."""
        client = self.client()
        client.update_model_version(name, str(version), description=description)
        for key, value in tags.items():
            client.set_model_version_tag(name, str(version), key, value)

    def version_description(self, version: int, name: str = REGISTERED_MODEL_NAME) -> str:
        """The version's description (its model card), '' when it has none."""
        return self.client().get_model_version(name, str(version)).description or ""

    def set_alias(self, alias: str, version: int, name: str = REGISTERED_MODEL_NAME) -> None:
        """Point `alias` (challenger, champion) at `version`."""
        self.client().set_registered_model_alias(name, alias, str(version))

    def model_versions(self, name: str = REGISTERED_MODEL_NAME) -> list[dict]:
        """Registered versions of `name` with their aliases, newest first ([] if none)."""
        client = self.client()
        try:
            model = client.get_registered_model(name)
        except mlflow.exceptions.MlflowException:
            return []
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        versions = client.search_model_versions(f"name='{name}'")
        return sorted(
            (
                {
                    "version": int(v.version),
                    "run_id": v.run_id,
                    "aliases": sorted(aliases.get(str(v.version), [])),
                }
                for v in versions
            ),
            key=lambda v: -v["version"],
        )
