"""Only a coronary curved-MPR export is scored: pydicom's own test files (a head CT, an MR,
secondary captures of test patterns) are refused with a reason, the generator's exports of
every style pass."""

import shutil
from pathlib import Path

import pydicom
import pytest

from cass_pipeline.domain.imaging.config import IngestConfig
from cass_pipeline.domain.prediction.gate import export_problem

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


def study_of(path: Path) -> str:
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, force=True).StudyInstanceUID)
    except Exception:
        return "unreadable"


def test_none_of_pydicoms_test_studies_passes(tmp_path):
    studies: dict[str, Path] = {}
    for number, path in enumerate(sorted(p for p in PYDICOM_FILES.rglob("*") if p.is_file())):
        folder = studies.setdefault(study_of(path), tmp_path / f"study-{len(studies)}")
        folder.mkdir(exist_ok=True)
        shutil.copy(path, folder / f"{number}.dcm")
    problems = [export_problem(folder, IngestConfig()) for folder in studies.values()]
    assert len(problems) >= 20 and all(problems)
    assert all("coronary" in problem for problem in problems)


def test_every_generated_export_passes(tiny_cohort):
    folders = sorted((tiny_cohort / "mpr").iterdir())
    assert folders and [export_problem(f, IngestConfig()) for f in folders] == [None] * len(folders)


def test_too_few_views_of_a_branch_is_refused_with_the_counts(tiny_cohort, tmp_path):
    export = next(iter(sorted((tiny_cohort / "mpr").iterdir())))
    series = next(p for p in export.rglob("*") if p.is_file()).parent
    partial = tmp_path / "partial" / series.name
    partial.mkdir(parents=True)
    shutil.copy(sorted(series.iterdir())[0], partial / "1.dcm")
    problem = export_problem(tmp_path / "partial", IngestConfig())
    assert problem is not None and "views" in problem and ": 1" in problem


@pytest.mark.parametrize("size", [32, 5000])
def test_pictures_of_another_size_than_a_curved_mpr_are_refused(tiny_cohort, tmp_path, size):
    export = sorted((tiny_cohort / "mpr").iterdir())[0]
    for path in (p for p in export.rglob("*") if p.is_file()):
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        dataset.Rows = size
        target = tmp_path / "odd" / path.relative_to(export)
        target.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(target)
    assert "px" in export_problem(tmp_path / "odd", IngestConfig())
