"""The ingestion settings: the cleanup's parameters, the views a branch needs, volume
rendering and the series alias tables (saved beside the image store, bundled with every
model). Light to import: the command line builds its options from them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cass_pipeline.domain.imaging.series_names import DEFAULT_ALIASES, branch_of_series
from cass_pipeline.domain.options import option
from cass_pipeline.domain.storage import settings_hash, write_text_atomic

#: The version of the cleanup algorithm (`cleanup.py`), recorded in every fingerprint: it
#: changes whenever the cleanup gives other pixels for the same settings.
CLEANUP_VERSION = 8


@dataclass(frozen=True)
class CleanupConfig:
    """Cleanup parameters; 512 px as in the paper (the demo uses less)."""

    size: int = option(512, "output size in pixels", min=16)
    text_level: int = option(254, "pixels at or above this level are burned-in text")
    dilate_px: int = option(3, "pixels the text mask grows by before inpainting", min=0)
    inpaint_radius: int = option(3, "inpainting neighbourhood in pixels", min=1)
    border_level: int = option(8, "edge rows and columns darker than this are cut")
    stroke_px: float = option(
        3.5,
        "a bright component no thicker than twice this (at 512 px), at the edges or "
        "elongated, is text; thicker ones and compact blobs inside (calcium, contrast) stay",
        min=0.5,
    )

    def fingerprint(self) -> str:
        return settings_hash({**asdict(self), "version": CLEANUP_VERSION})


@dataclass(frozen=True)
class IngestConfig:
    """Ingestion settings (all recorded in each patient's state)."""

    cleanup: CleanupConfig = field(default_factory=CleanupConfig)
    min_views: int = option(4, "views a branch needs", min=1)
    volume_views: int = 8
    volume_width_mm: float = 24.0
    volume_pixel_mm: float = 0.25
    aliases: str = str(DEFAULT_ALIASES)
    site_aliases: str | None = None

    def fingerprint(self) -> str:
        tables = Path(self.aliases).read_bytes()
        if self.site_aliases:
            tables += Path(self.site_aliases).read_bytes()
        return settings_hash({**asdict(self), "cleanup": self.cleanup.fingerprint()}, tables)

    def branch_of(self, series_name: str | None) -> str | None:
        """The canonical branch of a series name through the alias tables."""
        site = Path(self.site_aliases) if self.site_aliases else None
        return branch_of_series(series_name, Path(self.aliases), site)

    def branch_of_series(self, series_name: str | None, folder: str) -> str | None:
        """The branch of a series by its name, else by the name of the folder it lies in."""
        return self.branch_of(series_name) or self.branch_of(folder)

    def write(self, path: Path) -> None:
        """Saved beside the image store, so that training bundles what the store was made with."""
        write_text_atomic(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> IngestConfig:
        data = json.loads(path.read_text())
        return cls(cleanup=CleanupConfig(**data.pop("cleanup")), **data)
