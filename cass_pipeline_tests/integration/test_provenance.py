"""The generator proves, per patient, which files it wrote: only those patients get the public
key, are skipped, pruned or rewritten; anybody else's files are never touched."""

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pydicom
import pytest

from cass_pipeline.defs.assets import imaging, reports
from cass_pipeline.defs.assets.cohort import raw_cohort, raw_cohort_files_complete
from cass_pipeline.defs.resources import CassPaths, PseudonymKey, RawFormat
from cass_pipeline.domain.cohort.index import folder_patient_key
from cass_pipeline.domain.privacy import SYNTHETIC_COHORT_KEY, pseudonymise
from cass_pipeline.domain.synthetic.cohort import generate_cohort
from cass_pipeline.domain.synthetic.config import preset
from cass_pipeline.domain.synthetic.provenance import (
    ForeignFilesError,
    Provenance,
    cohort_pseudonyms,
    provenance,
)
from cass_pipeline_tests.helpers import layout_of

REAL = "55500011"


def add_real_patient(raw: Path, like: str = "CASE-0001") -> None:
    """A real export copied in beside the synthetic cases: patient "LI, Ted", MRN as folder."""
    shutil.copytree(raw / "mpr" / like, raw / "mpr" / REAL)
    for path in (raw / "mpr" / REAL).rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID = "LI^TED", REAL
        ds.save_as(path)
    body = (raw / "reports" / f"{like}.txt").read_text().split("\n", 2)[2]
    header = f"Patient: LI, Ted    DOB: 1961-03-04    MRN: {REAL}\nAccession: A1    Exam date: x\n"
    (raw / "reports" / f"{REAL}.txt").write_text(header + body)


def every_file(raw: Path) -> dict[str, bytes]:
    return {
        p.relative_to(raw).as_posix(): p.read_bytes()
        for p in raw.rglob("*")
        if p.is_file() and ".synth" not in p.parts and "ground_truth" not in p.parts
    }


@pytest.fixture
def raw(tiny_cohort, tmp_path) -> Path:
    """The tiny cohort (4 generated patients) in a folder of its own."""
    shutil.copytree(tiny_cohort, tmp_path / "raw")
    return tmp_path / "raw"


def test_public_key_only_for_patients_the_generator_wrote(raw, tmp_path):
    add_real_patient(raw)
    (raw / "reports" / "CASE-0002.txt").write_text("LAD: 80% stenosis.")  # content replaced
    (raw / "mpr" / "CASE-0003" / "LAD" / "extra.dcm").write_bytes(b"not ours")
    mrn = {c: folder_patient_key(raw / "mpr" / c) for c in ("CASE-0001", "CASE-0002", "CASE-0004")}
    keys = cohort_pseudonyms(raw, tmp_path / "key")
    assert keys.public_keys == {mrn["CASE-0001"], mrn["CASE-0004"]}
    secret = (tmp_path / "key").read_bytes().strip()
    assert keys(REAL) == pseudonymise(REAL, secret) != pseudonymise(REAL, SYNTHETIC_COHORT_KEY)
    assert keys(mrn["CASE-0002"]) == pseudonymise(mrn["CASE-0002"], secret)
    assert keys(mrn["CASE-0001"]) == pseudonymise(mrn["CASE-0001"], SYNTHETIC_COHORT_KEY)
    assert keys.key_counts([REAL, mrn["CASE-0001"], mrn["CASE-0002"]]) == {
        "public (generated patients)": 1,
        "secret": 2,
    }
    configured = cohort_pseudonyms(raw, tmp_path / "key", env_value="site key")
    assert configured(mrn["CASE-0001"]) == pseudonymise(mrn["CASE-0001"], b"site key")


def test_generator_never_deletes_or_overwrites_files_it_did_not_write(tmp_path):
    raw = tmp_path / "raw"
    generate_cohort(preset("tiny", n_patients=3), raw, workers=1)
    add_real_patient(raw)
    (raw / "mpr" / "CASE-0007" / "LAD").mkdir(parents=True)  # somebody else's CASE-* folder
    (raw / "mpr" / "CASE-0007" / "LAD" / "1.dcm").write_bytes(b"theirs")
    (raw / "reports" / "CASE-0007.txt").write_text("LAD: normal")
    (raw / "mpr" / "CASE-0003" / "notes.txt").write_text("kept")  # added to a generated one
    before = every_file(raw)
    generate_cohort(preset("tiny", n_patients=2), raw, workers=1)  # a smaller cohort
    summaries = {"cohort.json", "contact_sheet.png"}
    after = every_file(raw)
    assert {k: v for k, v in after.items() if k not in summaries} == {
        k: v for k, v in before.items() if k not in summaries
    }

    fresh = tmp_path / "fresh"
    (fresh / "reports").mkdir(parents=True)
    (fresh / "reports" / "CASE-0001.txt").write_text("a report the user put here")
    with pytest.raises(ForeignFilesError, match=r"CASE-0001.*never overwrites"):
        generate_cohort(preset("tiny", n_patients=2), fresh, workers=1)
    assert (fresh / "reports" / "CASE-0001.txt").read_text() == "a report the user put here"
    assert not (fresh / "mpr").exists()


def test_smaller_cohort_prunes_only_untouched_generated_patients(tmp_path):
    generate_cohort(preset("tiny", n_patients=3), tmp_path, workers=1)
    generate_cohort(preset("tiny", n_patients=2), tmp_path, workers=1)
    assert not (tmp_path / "mpr" / "CASE-0003").exists()
    assert not (tmp_path / "reports" / "CASE-0003.txt").exists()
    assert provenance(tmp_path, "CASE-0003") is Provenance.ABSENT


def test_deleted_files_are_detected_and_regenerated(raw, tmp_path):
    view = next((raw / "mpr" / "CASE-0002").rglob("*.dcm"))
    report = raw / "reports" / "CASE-0001.txt"
    expected = {view: view.read_bytes(), report: report.read_bytes()}
    view.unlink()
    report.unlink()
    paths = CassPaths(raw_dir=str(raw), processed_dir=str(tmp_path / "out"))
    check = raw_cohort_files_complete(paths)
    assert not check.passed
    assert check.metadata["damaged_patients"].value == 2
    assert "regenerate" in check.description
    assert provenance(raw, "CASE-0001") is Provenance.INCOMPLETE
    generate_cohort(preset("tiny", write_volumes=True), raw, workers=1)
    assert {path: path.read_bytes() for path in expected} == expected
    assert raw_cohort_files_complete(paths).passed


def test_interrupted_publication_is_finished_by_the_next_run(tmp_path):
    config = preset("tiny", n_patients=2)
    generate_cohort(config, tmp_path, workers=1)
    reference = every_file(tmp_path)
    marker = tmp_path / ".synth" / "CASE-0002.json"
    # killed between the marker listing the files and their publication
    marker.write_text(marker.read_text().replace('"complete": true', '"complete": false'))
    (tmp_path / "reports" / "CASE-0002.txt").unlink()
    (tmp_path / ".synth" / "staging" / "CASE-0002" / "mpr").mkdir(parents=True)
    assert provenance(tmp_path, "CASE-0002") is Provenance.INCOMPLETE
    generate_cohort(config, tmp_path, workers=1)
    assert every_file(tmp_path) == reference
    assert provenance(tmp_path, "CASE-0002") is Provenance.GENERATED


def test_mixed_folder_ingests_the_real_patient_on_the_secret_key(tmp_path):
    raw = tmp_path / "raw"
    generate_cohort(preset("tiny", n_patients=2), raw, workers=1)
    add_real_patient(raw)
    before = every_file(raw)
    keys = PseudonymKey(key_file=str(tmp_path / "key"))
    result = dg.materialize(
        [
            raw_cohort,
            raw_cohort_files_complete,
            imaging.mpr_images,
            imaging.no_identifiers_in_image_outputs,
            reports.report_labels,
            reports.no_identifiers_in_report_outputs,
        ],
        resources={
            "paths": CassPaths(raw_dir=str(raw), processed_dir=str(tmp_path / "out")),
            "pseudonyms": keys,
            "raw_format": RawFormat(),
        },
        run_config=dg.RunConfig(
            {
                "raw_cohort": {"config": {"preset": "tiny", "n_patients": 2, "workers": 1}},
                "mpr_images": {"config": {"image_size": 32, "workers": 1}},
                "report_labels": {"config": {"workers": 1}},
            }
        ),
    )
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    assert every_file(raw) == before
    metadata = result.asset_materializations_for_node("raw_cohort")[0].metadata
    assert metadata["patients_not_generated"].value == 1
    secret = (tmp_path / "key").read_bytes().strip()
    manifest = pd.read_parquet(layout_of(tmp_path / "out").manifest)
    labels = pd.read_parquet(layout_of(tmp_path / "out").patient_labels)
    for table in (manifest, labels):
        assert pseudonymise(REAL, secret) in set(table.patient_id)
        assert pseudonymise(REAL, SYNTHETIC_COHORT_KEY) not in set(table.patient_id)
        generated = folder_patient_key(raw / "mpr" / "CASE-0001")
        assert pseudonymise(generated, SYNTHETIC_COHORT_KEY) in set(table.patient_id)
