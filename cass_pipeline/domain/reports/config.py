"""How reports are read, declared once for the report asset and `cass parse-report`."""

from __future__ import annotations

from dataclasses import dataclass

from cass_pipeline.domain.options import option


@dataclass(frozen=True)
class ReportSettings:
    """The one reading rule a site may change, and how many processes parse."""

    bare_50_significant: bool = option(
        True, "a bare '50%' is significant (CAD-RADS 3); off: non-significant"
    )
    hold_flagged: bool = option(
        True,
        "hold reports whose labels disagree or leave a stenosis unplaced out of training "
        "until reviewed",
    )
    workers: int | None = option(None, "processes (default: all cores)")
