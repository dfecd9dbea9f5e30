"""Dagster resources: data locations and MLflow tracking over the plain MLflow client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, fields
from pathlib import Path

import dagster as dg
from mlflow.tracking import MlflowClient
from pydantic import Field

from cass_pipeline.defs.config import config_class, config_fields, settings_from
from cass_pipeline.domain.cohort.index import CohortIndex, index_cohort
from cass_pipeline.domain.cohort.report_sources import ReportColumns
from cass_pipeline.domain.dicom.config import SendSettings
from cass_pipeline.domain.generations import GenerationMissingError, Generations
from cass_pipeline.domain.imaging.config import IngestConfig
from cass_pipeline.domain.prediction.config import PredictSettings
from cass_pipeline.domain.privacy import Pseudonyms, load_secret
from cass_pipeline.domain.review.store import ReviewStore
from cass_pipeline.domain.storage import exclusive_writer, shared_reader
from cass_pipeline.domain.synthetic.provenance import cohort_pseudonyms
from cass_pipeline.layout import DataLayout, dicom_node_health, dicom_outbox, dicom_rejects
from cass_pipeline.runs.tracking import LoadedModel, RegistryError, Tracking
from cass_pipeline.settings import CassSettings

#: The run id of an asset or check called directly (a test), outside any run.
DIRECT_INVOCATION = "EPHEMERAL"


class CassPaths(dg.ConfigurableResource):
    """Roots of raw inputs and processed outputs (defaults from `CassSettings.from_env`)."""

    raw_dir: str
    processed_dir: str
    writer_wait_seconds: float = 600.0
    #: Where the inbox studies readers judged are (the key holder's side); without it, the
    #: patients readers labelled have no images to train on.
    inbox_dir: str | None = None

    @classmethod
    def from_settings(cls, settings: CassSettings) -> CassPaths:
        return cls(
            raw_dir=str(settings.raw_dir),
            processed_dir=str(settings.processed_dir),
            inbox_dir=str(settings.inbox_dir),
        )

    @property
    def raw(self) -> Path:
        return Path(self.raw_dir)

    @property
    def processed(self) -> Path:
        return Path(self.processed_dir)

    @property
    def layout(self) -> DataLayout:
        """Where every table lives under these roots."""
        return DataLayout(self.raw, self.processed)

    def exclusive_writer(self, folder: Path, notify: Callable[[str], None]):
        """One writer of `folder` at a time (`storage.exclusive_writer`), waiting at most
        `writer_wait_seconds` for the current one."""
        return exclusive_writer(folder, self.writer_wait_seconds, notify)

    def raw_reader(self, notify: Callable[[str], None]):
        """Read `raw/` while no generator writes it (`storage.shared_reader`)."""
        return shared_reader(self.raw, self.writer_wait_seconds, notify)

    @property
    def generations(self) -> Generations:
        return Generations(self.layout.image_generations)

    @contextmanager
    def images_of_run(self, context) -> Iterator[DataLayout]:
        """The layout at the image generation this run wrote or first read (else the
        published one, marked as the run's), held for the step: every step of a run reads
        one generation."""
        run_id = context.op_execution_context.run_id
        in_a_run = run_id != DIRECT_INVOCATION
        generations = self.generations
        try:
            with generations.reading(generations.used_by(run_id) if in_a_run else None) as name:
                if in_a_run:
                    with suppress(PermissionError):  # a reader that may not write: its lock holds
                        generations.mark_user(name, run_id)
                yield self.layout.at_generation(name)
        except GenerationMissingError as error:
            raise dg.Failure(str(error)) from error


def run_in_progress(instance: dg.DagsterInstance) -> Callable[[str], bool]:
    """Whether a run (by id) has not finished: a generation it uses is kept meanwhile."""

    def in_progress(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and not run.is_finished

    return in_progress


class MlflowTrackingResource(dg.ConfigurableResource):
    """MLflow tracking and registry for one experiment; works with sqlite or an http server."""

    @classmethod
    def from_settings(cls, settings: CassSettings) -> MlflowTrackingResource:
        return cls(**asdict(Tracking.from_settings(settings)))

    def tracking(self) -> Tracking:
        """The tracking object every MLflow operation goes through (`runs.tracking`)."""
        return settings_from(self, Tracking)

    def registry(self) -> Tracking:
        """`tracking()`, checked reachable: an unreachable store fails the step in one line."""
        tracking = self.tracking()
        try:
            tracking.check_reachable()
        except RegistryError as error:
            raise dg.Failure(str(error)) from error
        return tracking

    def load(self, reference: str, engine: str = PredictSettings.engine) -> LoadedModel:
        """A registered model (`Tracking.load`), its errors failing the step in one line."""
        try:
            return self.tracking().load(reference, engine)
        except (RegistryError, ValueError) as error:
            raise dg.Failure(str(error)) from error

    def client(self) -> MlflowClient:
        return self.tracking().client()

    def start_run(self, run_name: str, tags: dict[str, str] | None = None):
        """An active fluent-API run in this experiment, so `mlflow.log_*` calls land in it."""
        return self.tracking().start_run(run_name, tags)


MlflowTracking = config_class(
    "MlflowTracking",
    MlflowTrackingResource,
    "MLflow tracking and registry for one experiment (the fields of `runs.tracking.Tracking`); "
    "works with sqlite or an http server.",
    **config_fields(Tracking),
)


class Inbox(dg.ConfigurableResource):
    """Where new patients' exports arrive (one folder each) and how long a folder must stay
    unchanged before it is read."""

    folder: str
    quiet_seconds: float = 30.0
    series_aliases: str | None = None

    @classmethod
    def from_settings(cls, settings: CassSettings) -> Inbox:
        aliases = settings.series_aliases
        return cls(folder=str(settings.inbox_dir), series_aliases=aliases and str(aliases))

    @property
    def path(self) -> Path:
        return Path(self.folder)

    def ingest_config(self) -> IngestConfig:
        """The series aliases (built-in and the site's) that tell which export is coronary."""
        return IngestConfig(site_aliases=self.series_aliases)


class ReviewDatabase(dg.ConfigurableResource):
    """The review app's store of accounts, label decisions and readers' verdicts (SQLAlchemy
    URL: SQLite under data/ by default, PostgreSQL when CASS_REVIEW_DB says so)."""

    url: str
    #: `reader_agreement_holds` warns below this CAD-RADS kappa against the readers...
    min_kappa: float = 0.6
    #: ...once there are at least this many verdicts.
    min_verdicts: int = 10
    #: Which verdicts label training patients (`review/cohort.py`): off, corrected, judged.
    reader_labels: str = "off"

    @classmethod
    def from_settings(cls, settings: CassSettings) -> ReviewDatabase:
        return cls(url=settings.review_db, reader_labels=settings.reader_labels)

    def store(self) -> ReviewStore:
        return ReviewStore(self.url)


class DicomFolder(dg.ConfigurableResource):
    """The DICOM folder on the key holder's side, beside the inbox: the node's rejects and
    heartbeat, the outbox of each inbox patient's result objects."""

    folder: str

    @classmethod
    def from_settings(cls, settings: CassSettings):
        sent = settings.send_settings()
        return cls(folder=str(settings.dicom_dir), **{f: getattr(sent, f) for f in SEND_FIELDS})

    @property
    def outbox(self) -> Path:
        return dicom_outbox(Path(self.folder))

    @property
    def node_rejects(self) -> Path:
        return dicom_rejects(Path(self.folder))

    @property
    def node_health(self) -> Path:
        return dicom_node_health(Path(self.folder))

    def send_settings(self) -> SendSettings:
        return settings_from(self, SendSettings)


SEND_FIELDS = tuple(f.name for f in fields(SendSettings))
DicomResults = config_class(
    "DicomResults",
    DicomFolder,
    "The DICOM folder (the node's rejects and heartbeat, the outbox) and where and how the "
    "results are sent: the domain's `SendSettings`.",
    **config_fields(SendSettings),
)


class PseudonymKey(dg.ConfigurableResource):
    """The secret behind patient pseudonyms (shared by the report and the image side)."""

    key_file: str
    key: str | None = None

    @classmethod
    def from_settings(cls, settings: CassSettings) -> PseudonymKey:
        return cls(key_file=str(settings.pseudonym_key_file), key=settings.pseudonym_key)

    def secret_pseudonyms(self) -> Pseudonyms:
        """Pseudonyms on the secret key alone (new patients arriving in the inbox)."""
        return Pseudonyms(load_secret(Path(self.key_file), self.key))

    def pseudonyms_for(self, raw_dir: Path, index: CohortIndex | None = None) -> Pseudonyms:
        """Patient key -> pseudonym for the patients in `raw_dir` (`cohort_pseudonyms`)."""
        return cohort_pseudonyms(Path(raw_dir), Path(self.key_file), self.key, index)


class RawFormatResource(dg.ConfigurableResource):
    """How a site's raw export is written, and the site's own series alias table (YAML,
    merged over the default)."""

    series_aliases: str | None = Field(
        default=None, description="the site's series alias table (YAML), merged over ours"
    )
    report_vocabulary: str = Field(
        default="",
        description="the site's report vocabulary files (YAML, separated by the system's "
        "path separator), read besides the built-in English one",
    )

    @classmethod
    def from_settings(cls, settings: CassSettings) -> RawFormatResource:
        aliases = settings.series_aliases
        return cls(
            series_aliases=str(aliases) if aliases else None,
            report_vocabulary=settings.report_vocabulary,
        )

    def columns(self) -> ReportColumns:
        return settings_from(self, ReportColumns, REPORT_COLUMN_FIELDS)

    def index(self, raw_dir: Path) -> CohortIndex:
        """Patients, studies, reports and their links in `raw_dir` (`index_cohort`)."""
        return index_cohort(Path(raw_dir), self.columns())


#: The RIS columns' config names say they are columns.
REPORT_COLUMN_FIELDS = {
    name: f"{name}_column" for name in ("mrn", "accession", "exam_date", "text")
}
RawFormat = config_class(
    "RawFormat",
    RawFormatResource,
    "How a site's raw export is written: the column names of its RIS report table and how "
    "many days an exam date may lie from a study date (the domain's `ReportColumns`), and the "
    "site's own series alias table (YAML, merged over the default) and report vocabulary.",
    **config_fields(ReportColumns, rename=REPORT_COLUMN_FIELDS),
)
