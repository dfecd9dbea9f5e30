"""Where data, the Dagster instance and the MLflow store live; read from the environment.

Pure module (no dagster, no mlflow): the CLI, the Dagster resources and the tests all build
their paths from `CassSettings.from_env()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cass_pipeline.domain.dicom.config import SendSettings
from cass_pipeline.layout import DataLayout

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_EXPERIMENT = "cass-stenosis"
REGISTERED_MODEL_NAME = "cass-stenosis"


def project_root() -> Path:
    """The checkout holding this package (editable install), else the working directory."""
    candidate = PACKAGE_DIR.parent
    if (candidate / "pyproject.toml").is_file():
        return candidate
    return Path.cwd().resolve()


def sqlite_uri(db_path: Path) -> str:
    """Absolute SQLAlchemy URI for an sqlite file (MLflow's relative default is a trap)."""
    return "sqlite:///" + str(db_path.resolve())


@dataclass(frozen=True)
class CassSettings:
    """Resolved locations; every path is absolute."""

    data_dir: Path
    raw_dir: Path
    processed_dir: Path
    inbox_dir: Path
    #: The DICOM node's rejects and quarantine, and the outbox of results for the PACS: the
    #: key holder's side (identifiable), like the inbox.
    dicom_dir: Path
    mlflow_dir: Path
    dagster_home: Path
    tracking_uri: str
    artifact_root: str
    experiment_name: str
    pseudonym_key_file: Path
    pseudonym_key: str | None = None
    series_aliases: Path | None = None
    #: A site's report vocabulary files (YAML), paths separated by os.pathsep.
    report_vocabulary: str = ""
    executor: str = "default"
    #: Comma-separated AE@host:port that get each inbox patient's result objects.
    dicom_destinations: str = ""
    #: The review app's accounts and decisions (SQLAlchemy URL: SQLite or PostgreSQL).
    review_db: str = ""
    #: Which readers' verdicts label training patients: off, corrected or judged.
    reader_labels: str = "off"

    def send_settings(self, **options) -> SendSettings:
        """The result sender's settings: `options` (the command line's), the destinations
        from CASS_DICOM_DESTINATIONS where none are given."""
        options = {k: v for k, v in options.items() if v not in (None, "")}
        return SendSettings(**{"destinations": self.dicom_destinations, **options})

    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.raw_dir, self.processed_dir)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> CassSettings:
        """Defaults under `<project>/data`, each overridable by a `CASS_*` or MLflow variable."""
        env = dict(os.environ if env is None else env)

        def path(name: str, default: Path) -> Path:
            value = env.get(name)
            return Path(value).expanduser().resolve() if value else default.resolve()

        data_dir = path("CASS_DATA_DIR", project_root() / "data")
        mlflow_dir = path("CASS_MLFLOW_DIR", data_dir / "mlflow")
        return cls(
            data_dir=data_dir,
            raw_dir=path("CASS_RAW_DIR", data_dir / "raw"),
            processed_dir=path("CASS_PROCESSED_DIR", data_dir / "processed"),
            inbox_dir=path("CASS_INBOX_DIR", data_dir / "inbox"),
            dicom_dir=path("CASS_DICOM_DIR", data_dir / "dicom"),
            mlflow_dir=mlflow_dir,
            dagster_home=path("DAGSTER_HOME", data_dir / "dagster_home"),
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or sqlite_uri(mlflow_dir / "mlflow.db"),
            artifact_root=env.get("CASS_MLFLOW_ARTIFACT_ROOT")
            or (mlflow_dir / "artifacts").resolve().as_uri(),
            experiment_name=env.get("CASS_MLFLOW_EXPERIMENT") or DEFAULT_EXPERIMENT,
            pseudonym_key_file=path(
                "CASS_PSEUDONYM_KEY_FILE", data_dir / "secrets" / "pseudonym.key"
            ),
            pseudonym_key=env.get("CASS_PSEUDONYM_KEY") or None,
            series_aliases=path("CASS_SERIES_ALIASES", Path())
            if env.get("CASS_SERIES_ALIASES")
            else None,
            report_vocabulary=env.get("CASS_REPORT_VOCABULARY") or "",
            executor=env.get("CASS_DAGSTER_EXECUTOR") or "default",
            dicom_destinations=env.get("CASS_DICOM_DESTINATIONS") or "",
            review_db=env.get("CASS_REVIEW_DB") or sqlite_uri(data_dir / "review" / "review.db"),
            reader_labels=env.get("CASS_READER_LABELS") or "off",
        )
