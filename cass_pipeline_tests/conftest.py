"""Shared fixtures: one tiny synthetic cohort per test session, tiny training data per test
(built by `helpers`)."""

from pathlib import Path

import pytest

from cass_pipeline.domain.synthetic.cohort import generate_cohort
from cass_pipeline.domain.synthetic.config import preset
from cass_pipeline_tests.helpers import write_training_data


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """Four patients, four 64 px views per branch, DICOM, with volumes and centrelines."""
    out = tmp_path_factory.mktemp("tiny_cohort")
    generate_cohort(preset("tiny", write_volumes=True), out, workers=2)
    return out


@pytest.fixture
def training_data(tmp_path) -> Path:
    return write_training_data(tmp_path / "processed")
