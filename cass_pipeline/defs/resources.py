"""Dagster resources: data locations and MLflow tracking over the plain MLflow client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import mlflow
from mlflow.tracking import MlflowClient

from cass_pipeline.domain.privacy import load_secret
from cass_pipeline.settings import CassSettings


class CassPaths(dg.ConfigurableResource):
    """Roots of raw inputs and processed outputs (defaults from `CassSettings.from_env`)."""

    raw_dir: str
    processed_dir: str

    @classmethod
    def from_settings(cls, settings: CassSettings) -> CassPaths:
        return cls(raw_dir=str(settings.raw_dir), processed_dir=str(settings.processed_dir))

    @property
    def raw(self) -> Path:
        return Path(self.raw_dir)

    @property
    def processed(self) -> Path:
        return Path(self.processed_dir)

    def processed_path(self, *parts: str) -> Path:
        """A path under the processed root, its parent folder created."""
        path = self.processed.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


class MlflowTracking(dg.ConfigurableResource):
    """MLflow tracking and registry for one experiment; works with sqlite or an http server."""

    tracking_uri: str
    experiment_name: str
    artifact_root: str | None = None
    registry_uri: str | None = None

    @classmethod
    def from_settings(cls, settings: CassSettings) -> MlflowTracking:
        return cls(
            tracking_uri=settings.tracking_uri,
            experiment_name=settings.experiment_name,
            artifact_root=settings.artifact_root,
        )

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

    @contextmanager
    def start_run(
        self, run_name: str, tags: dict[str, str] | None = None
    ) -> Iterator[mlflow.ActiveRun]:
        """An active fluent-API run in this experiment, so `mlflow.log_*` calls land in it."""
        mlflow.set_tracking_uri(self.tracking_uri)
        if self.registry_uri:
            mlflow.set_registry_uri(self.registry_uri)
        with mlflow.start_run(
            experiment_id=self.experiment_id(), run_name=run_name, tags=tags
        ) as run:
            yield run


class PseudonymKey(dg.ConfigurableResource):
    """The secret behind patient pseudonyms (shared by the report and the image side)."""

    key_file: str
    key: str | None = None

    @classmethod
    def from_settings(cls, settings: CassSettings) -> PseudonymKey:
        return cls(key_file=str(settings.pseudonym_key_file), key=settings.pseudonym_key)

    def secret(self) -> bytes:
        return load_secret(Path(self.key_file), self.key)
