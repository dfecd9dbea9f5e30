"""MLflow tracking and registry for one experiment, usable from Dagster, the CLI and torchrun.

Wiring layer (imports mlflow); the Dagster resource `MlflowTracking` builds one of these.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import mlflow
from mlflow.tracking import MlflowClient

from cass_pipeline.settings import REGISTERED_MODEL_NAME, CassSettings


@dataclass(frozen=True)
class Tracking:
    """Where runs and models go: sqlite (absolute URI) or an http tracking server."""

    tracking_uri: str
    experiment_name: str
    artifact_root: str | None = None
    registry_uri: str | None = None

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

    def load_model(self, alias: str, name: str = REGISTERED_MODEL_NAME):
        """(torch model, version, training run id) of `models:/name@alias`, or None."""
        import mlflow.pytorch

        try:
            version = self.client().get_model_version_by_alias(name, alias)
        except mlflow.exceptions.MlflowException:
            return None
        self.activate()
        model = mlflow.pytorch.load_model(f"models:/{name}/{version.version}", map_location="cpu")
        return model.eval(), int(version.version), version.run_id

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
