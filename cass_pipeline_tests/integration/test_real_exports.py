"""Real exports in: a flat PACS dump with a RIS CSV gives what the folder layout gives."""

import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from cass_pipeline.domain.cohort.index import index_cohort
from cass_pipeline.domain.imaging.config import CleanupConfig, IngestConfig
from cass_pipeline.domain.imaging.ingest import ingest_cohort
from cass_pipeline.domain.privacy import Pseudonyms
from cass_pipeline.domain.reports.pipeline import parse_cohort_reports
from cass_pipeline.domain.synthetic.pacs import RIS_EXPORT, write_pacs_dump

KEYS = Pseudonyms(b"site key")
CONFIG = IngestConfig(cleanup=CleanupConfig(size=32), min_views=3)


def ingest(raw: Path, out: Path):
    """Manifest, image rejects, branch labels and report rejects of `raw`."""
    index = index_cohort(raw)
    results = list(ingest_cohort(raw, out / "store", KEYS, CONFIG, workers=1, index=index))
    manifest = pd.DataFrame([r for x in results for r in x.rows])
    rejects = pd.DataFrame([r for x in results for r in x.rejects])
    cohort = parse_cohort_reports(index, KEYS, workers=1)
    labels = {
        (r.patient_id, name): branch.stenosis_class
        for r in cohort.reports
        for name, branch in r.labels.branches.items()
    }
    return manifest, rejects, labels, cohort.rejects


@pytest.fixture(scope="module")
def pacs_dump(tiny_cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pacs")
    write_pacs_dump(tiny_cohort, out, seed=3)
    return out


def test_a_pacs_dump_gives_what_the_folder_layout_gives(tiny_cohort, pacs_dump, tmp_path):
    files = list((pacs_dump / "mpr").iterdir())
    assert all(p.is_file() and p.suffix == "" for p in files)  # flat, no extensions
    assert (pacs_dump / "reports").iterdir().__next__().name == RIS_EXPORT
    folders = ingest(tiny_cohort, tmp_path / "folders")
    dump = ingest(pacs_dump, tmp_path / "dump")
    for manifest in (folders[0], dump[0]):
        assert manifest.patient_id.nunique() == 4
    counts = [m.groupby(["patient_id", "branch"]).size().to_dict() for m in (folders[0], dump[0])]
    assert counts[0] == counts[1]
    assert folders[2] == dump[2] and len(folders[2]) > 0  # labels, under the same pseudonyms
    assert set(folders[0].patient_id) == {pid for pid, _ in folders[2]}
    assert folders[3] == dump[3] == []


def test_a_big_tree_has_its_headers_read_on_all_cores_with_the_same_index(pacs_dump, monkeypatch):
    from cass_pipeline.domain.cohort import index as cohort_index

    serial = cohort_index.image_files(pacs_dump / "mpr", workers=1)
    monkeypatch.setattr(cohort_index, "PARALLEL_FILES", 0)  # every tree counts as big
    assert cohort_index.image_files(pacs_dump / "mpr", workers=2) == serial
    assert len(serial[0]) > 50 and {f.patient for f in serial[0]} != {None}


def test_one_patient_in_two_folders_is_one_patient_and_a_second_study_is_set_aside(
    tiny_cohort, tmp_path
):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_cohort / "reports", raw / "reports")
    case = tiny_cohort / "mpr" / "CASE-0001"
    series = sorted(p for p in case.iterdir() if p.is_dir())
    for folder in series[:1]:  # one series exported into a second folder
        shutil.copytree(folder, raw / "mpr" / "export-2" / folder.name)
    for folder in series[1:]:
        shutil.copytree(folder, raw / "mpr" / "export-1" / folder.name)
    earlier = raw / "mpr" / "export-0" / series[0].name  # the same patient, an older study
    shutil.copytree(series[0], earlier)
    for path in earlier.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.AccessionNumber, ds.StudyDate = "1.2.3.4", "OLD1", "20200101"
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(path)
    index = index_cohort(raw)
    with_images = [p for p in index.patients.values() if p.files]
    assert len(with_images) == 1
    [patient] = with_images
    assert len(patient.files) == sum(len(list(s.glob("*.dcm"))) for s in series)
    assert patient.report is not None and patient.report.stem == "CASE-0001"
    set_aside = [r for r in index.rejects if r.kind == "image"]
    assert len(set_aside) == len(list(earlier.glob("*.dcm")))
    assert all("second study" in r.reason and "linked to the report" in r.reason for r in set_aside)
    assert [r.stem for r in index.unlinked_reports] == ["CASE-0002", "CASE-0003", "CASE-0004"]


def test_ris_export_columns_are_configurable_and_unlinked_reports_are_rejected(pacs_dump, tmp_path):
    from cass_pipeline.domain.cohort.report_sources import ReportColumns

    raw = tmp_path / "raw"
    shutil.copytree(pacs_dump, raw)
    table = pd.read_csv(raw / "reports" / RIS_EXPORT, dtype=str)
    table = table.rename(columns={"MRN": "Patient ID", "ReportText": "Befund"})
    extra = table.iloc[:1].assign(**{"Patient ID": "999", "Accession": "X9", "Befund": "LAD ok"})
    (raw / "reports" / RIS_EXPORT).unlink()
    pd.concat([table, extra]).to_csv(raw / "reports" / "ris.tsv", sep="\t", index=False)
    columns = ReportColumns(mrn="Patient ID", text="Befund")
    index = index_cohort(raw, columns)
    assert sum(p.report is not None for p in index.patients.values()) == 4
    assert [r.mrn for r in index.unlinked_reports] == ["999"]
    default = index_cohort(raw)
    assert any("without column(s) ReportText, MRN" in r.reason for r in default.rejects)
    parsed = parse_cohort_reports(index, KEYS, workers=1)
    assert [(r.stage, r.reason) for r in parsed.rejects] == [
        ("link", "no study with its accession number, or of its MRN near its exam date")
    ]


def inspect(raw: Path, *options: str, **env: str):
    from click.testing import CliRunner

    from cass_pipeline.cli import main

    return CliRunner().invoke(main, ["inspect", str(raw), *options], env=env)


def test_inspect_reads_both_layouts_alike_and_writes_nothing(tiny_cohort, pacs_dump):
    import json

    before = sorted(p for p in pacs_dump.rglob("*"))
    results = [json.loads(inspect(raw, "--json").output) for raw in (tiny_cohort, pacs_dump)]
    assert sorted(p for p in pacs_dump.rglob("*")) == before
    for result in results:
        assert result["patients"] == result["patients_ingestible"] == 4
        assert result["reports"]["linked"] == 4 and result["reports"]["unlinked"] == []
        assert result["unusable_files"] == result["unknown_series"] == []
    assert results[0]["branches"] == results[1]["branches"]
    assert results[0]["views_per_branch"] == results[1]["views_per_branch"]


def test_inspect_reports_every_planted_problem(pacs_dump, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(pacs_dump, raw)
    dump = sorted((raw / "mpr").iterdir())
    truncated = dump[0]
    truncated.write_bytes(truncated.read_bytes()[:-500])
    (raw / "mpr" / "notes.txt").write_text("not an image")
    anonymous = dump[1]
    ds = pydicom.dcmread(anonymous)
    del ds.PatientID
    ds.save_as(anonymous)
    renamed = [p for p in dump[2:] if pydicom.dcmread(p).SeriesDescription.startswith("RCA")]
    for path in renamed:  # a site's own name the alias table does not know
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = "Rechte Kranzarterie"
        ds.save_as(path)
    table = pd.read_csv(raw / "reports" / RIS_EXPORT, dtype=str)
    extra = table.iloc[:1].assign(MRN="999", Accession="X9")
    pd.concat([table, extra]).to_csv(raw / "reports" / RIS_EXPORT, index=False)
    (raw / "reports" / "old_export.csv").write_text("id,text\n1,LAD ok\n")
    result = inspect(raw)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"unusable file: mpr/{truncated.name}: truncated DICOM file" in out
    assert "set aside: mpr/notes.txt: not a DICOM file (12 bytes without a DICOM header)" in out
    assert f"set aside: mpr/{anonymous.name}: no PatientID in the header" in out
    assert f"unknown series name 'Rechte Kranzarterie': {len(renamed)} files" in out
    assert f"unlinked report: reports/{RIS_EXPORT}#row 5" in out
    assert "report problem: reports/old_export.csv: report table without column(s)" in out
    site = tmp_path / "site_aliases.yaml"  # the user extends the alias table, re-runs, clean
    site.write_text("RCA: [Rechte Kranzarterie]\n")
    fixed = inspect(raw, CASS_SERIES_ALIASES=str(site)).output
    assert "unknown series name" not in fixed

    empty = tmp_path / "empty"
    (empty / "mpr" / "scans").mkdir(parents=True)
    (empty / "mpr" / "scans" / "readme.txt").write_text("nothing here")
    nothing = inspect(empty)
    assert nothing.exit_code == 1 and "nothing is ingestible" in nothing.output


def test_output_paths_start_below_the_patient_folder_even_with_one_series(tiny_cohort, tmp_path):
    raw = tmp_path / "raw"
    series = next(p for p in (tiny_cohort / "mpr" / "CASE-0001").iterdir() if p.is_dir())
    shutil.copytree(series, raw / "mpr" / "55500011" / series.name)  # one exported branch
    index = index_cohort(raw)
    [patient] = index.patients.values()
    assert patient.root == raw / "mpr" / "55500011"
    results = list(ingest_cohort(raw, tmp_path / "store", KEYS, CONFIG, workers=1, index=index))
    paths = {row["source_path"] for result in results for row in result.rows}
    assert paths and all(p.startswith(f"{series.name}/") for p in paths)


def test_dicomdir_is_skipped_and_views_without_instance_numbers_follow_content_time(
    tiny_cohort, tmp_path
):
    from pydicom.dataset import FileMetaDataset

    raw = tmp_path / "raw"
    series = next(p for p in (tiny_cohort / "mpr" / "CASE-0001").iterdir() if p.is_dir())
    shutil.copytree(series, raw / "mpr" / "P1" / "export")
    views = sorted((raw / "mpr" / "P1" / "export").glob("*.dcm"))
    for rank, path in enumerate(views):  # no InstanceNumber; times run against the names
        ds = pydicom.dcmread(path)
        del ds.InstanceNumber
        ds.ContentTime = f"10{59 - rank:02d}00"
        ds.save_as(path)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    directory = pydicom.Dataset()
    directory.file_meta = meta
    directory.FileSetID = "EXPORT"
    directory.save_as(raw / "mpr" / "DICOMDIR", enforce_file_format=True)
    index = index_cohort(raw)
    assert index.dicomdirs == 1 and not [r for r in index.rejects if "DICOMDIR" in str(r.path)]
    results = list(ingest_cohort(raw, tmp_path / "store", KEYS, CONFIG, workers=1, index=index))
    rows = sorted((r["view_index"], r["source_path"]) for x in results for r in x.rows)
    assert [path for _, path in rows] == [f"export/{p.name}" for p in reversed(views)]


def test_an_xlsx_ris_export_links_like_the_csv(pacs_dump, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(pacs_dump, raw)
    table = pd.read_csv(raw / "reports" / RIS_EXPORT, dtype=str)
    (raw / "reports" / RIS_EXPORT).unlink()
    table.to_excel(raw / "reports" / "ris.xlsx", index=False)
    index = index_cohort(raw)
    assert sum(p.report is not None for p in index.patients.values()) == 4
    assert index.unlinked_reports == [] and index.rejects == []


def test_an_inconsistent_series_is_ordered_and_kept(tiny_cohort, tmp_path):
    import numpy as np

    raw = tmp_path / "raw"
    series = next(p for p in (tiny_cohort / "mpr" / "CASE-0001").iterdir() if p.is_dir())
    shutil.copytree(series, raw / "mpr" / "P1" / series.name)
    views = sorted((raw / "mpr" / "P1" / series.name).glob("*.dcm"))  # 000..003
    edits = {0: 2, 1: 2, 2: None, 3: 0}  # duplicate numbers, one missing, one first
    for path, number in zip(views, edits.values(), strict=True):
        ds = pydicom.dcmread(path)
        if number is None:
            del ds.InstanceNumber
        else:
            ds.InstanceNumber = number
        if path == views[3]:  # another image size in the same series
            big = np.resize(ds.pixel_array, (80, 80)).astype(ds.pixel_array.dtype)
            ds.Rows, ds.Columns, ds.PixelData = 80, 80, big.tobytes()
        ds.save_as(path)
    results = list(ingest_cohort(raw, tmp_path / "store", KEYS, CONFIG, workers=1))
    rows = sorted((r["view_index"], r["source_path"], r["size"]) for x in results for r in x.rows)
    names = [path.rsplit("/", 1)[1] for _, path, _ in rows]
    assert names == ["003.dcm", "000.dcm", "001.dcm", "002.dcm"]  # 0, 2, 2 (by name), none
    assert {size for _, _, size in rows} == {CONFIG.cleanup.size}
    assert not [r for x in results for r in x.rejects]
