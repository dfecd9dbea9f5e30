"""Shared fixtures: one tiny synthetic cohort per test session."""

from pathlib import Path

import pytest

from cass_pipeline.domain.synthetic.cohort import generate_cohort
from cass_pipeline.domain.synthetic.config import preset


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """Four patients, four 64 px views per branch, DICOM, with volumes and centrelines."""
    out = tmp_path_factory.mktemp("tiny_cohort")
    generate_cohort(preset("tiny", write_volumes=True), out, workers=2)
    return out
