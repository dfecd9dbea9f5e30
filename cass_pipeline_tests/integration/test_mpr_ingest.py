"""Ingestion of a cohort folder: bad inputs land in rejects, the rest is stored and indexed."""

import os
import shutil

import cv2
import dagster as dg
import numpy as np
import pandas as pd
import pydicom
import pytest

from cass_pipeline.defs.assets import imaging
from cass_pipeline.defs.assets.cohort import raw_cohort
from cass_pipeline.defs.resources import CassPaths, PseudonymKey, RawFormat
from cass_pipeline.domain.cohort.index import folder_patient_key
from cass_pipeline.domain.imaging.config import CleanupConfig, IngestConfig
from cass_pipeline.domain.imaging.ingest import ingest_cohort
from cass_pipeline.domain.imaging.pixel_text import identifier_readable, searchable
from cass_pipeline.domain.privacy import Pseudonyms, pseudonymise
from cass_pipeline.domain.synthetic.cohort import generate_cohort
from cass_pipeline.domain.synthetic.config import preset
from cass_pipeline_tests.helpers import layout_of, published_images, zoomed_text

SECRET = b"ingest-test"
KEYS = Pseudonyms(SECRET)
CONFIG = IngestConfig(cleanup=CleanupConfig(size=32), min_views=3)


def run(raw, store):
    results = list(ingest_cohort(raw, store, KEYS, CONFIG, workers=1))
    rows = pd.DataFrame([r for res in results for r in res.rows])
    rejects = pd.DataFrame([r for res in results for r in res.rejects])
    return results, rows, rejects


@pytest.fixture
def damaged_export(tmp_path, tiny_cohort):
    """Two synthetic patients, one with a corrupt file, an unknown and a short series and a
    duplicate view."""
    raw = tmp_path / "raw"
    for case in ("CASE-0001", "CASE-0002"):
        shutil.copytree(tiny_cohort / "mpr" / case, raw / "mpr" / case)
    patient = raw / "mpr" / "CASE-0001"
    lad = next(
        p for p in patient.iterdir() if p.name.upper().startswith("LAD") and "-" not in p.name
    )
    (lad / "001.dcm").write_bytes((lad / "001.dcm").read_bytes()[:-1000])  # truncated
    shutil.copy(lad / "002.dcm", lad / "002_copy.dcm")  # duplicate view
    unknown, short = patient / "Calcium score", patient / "RCA"
    unknown.mkdir()
    short.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        cv2.imwrite(str(unknown / f"{i}.png"), rng.integers(0, 200, (64, 64), dtype=np.uint8))
    for i in range(2):
        cv2.imwrite(str(short / f"{i}.png"), rng.integers(0, 200, (64, 64), dtype=np.uint8))
    cv2.imwrite(str(short / "flat.png"), np.full((64, 64), 7, np.uint8))
    return raw, lad.name


def test_bad_inputs_are_rejected_with_reasons_and_the_rest_ingested(damaged_export, tmp_path):
    raw, lad = damaged_export
    _, rows, rejects = run(raw, tmp_path / "store")
    pid = KEYS(folder_patient_key(raw / "mpr" / "CASE-0001"))
    reasons = rejects.set_index("source_path").reason
    assert reasons[f"{lad}/001.dcm"] == "truncated DICOM file: 3096 of 4096 bytes of pixel data"
    assert reasons[f"{lad}/002_copy.dcm"] == f"duplicate view of {lad}/002.dcm"
    assert all(
        reasons[f"Calcium score/{i}.png"] == "unknown series name 'Calcium score'" for i in range(4)
    )
    assert reasons["RCA/flat.png"] == "constant image (value 7)"
    assert reasons["RCA/0.png"] == "RCA has 2 views, fewer than 3"
    patient_rows = rows[rows.patient_id == pid]
    assert set(patient_rows.branch) >= {"LAD"}
    assert len(patient_rows[patient_rows.branch == "LAD"]) == 3  # 4 views minus the corrupt one
    assert rows[rows.patient_id == KEYS(folder_patient_key(raw / "mpr" / "CASE-0002"))].shape[0]
    assert "CASE-0001" not in rows.to_csv() + rejects.to_csv()


def test_store_matches_manifest_and_rerun_skips(tiny_cohort, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_cohort / "mpr", raw / "mpr")
    results, rows, _ = run(raw, tmp_path / "store")
    assert not any(r.skipped for r in results)
    for pid, group in rows.groupby("patient_id"):
        store = np.load(tmp_path / "store" / f"{pid}.npy", mmap_mode="r")
        assert store.shape == (len(group), 32, 32) and store.dtype == np.uint8
        assert sorted(group.store_index) == list(range(len(group)))
        for branch_rows in group.groupby("branch").view_index:
            assert sorted(branch_rows[1]) == list(range(len(branch_rows[1])))
    before = {p.name: p.read_bytes() for p in (tmp_path / "store").glob("*.npy")}
    again, rows_again, _ = run(raw, tmp_path / "store")
    assert all(r.skipped for r in again)
    assert rows_again.equals(rows)
    # A changed patient is redone alone, a new patient is added alone, same bytes otherwise.
    changed = next((raw / "mpr" / "CASE-0002").rglob("*.dcm"))
    changed.touch()
    shutil.copytree(tiny_cohort / "mpr" / "CASE-0003", raw / "mpr" / "CASE-9999")
    third, _, _ = run(raw, tmp_path / "store")
    redone = {r.patient_id for r in third if not r.skipped}
    assert redone == {KEYS(folder_patient_key(raw / "mpr" / c)) for c in ("CASE-0002", "CASE-9999")}
    after = {p.name: p.read_bytes() for p in (tmp_path / "store").glob("*.npy")}
    assert all(after[name] == data for name, data in before.items())


def test_volumes_with_centrelines_take_the_same_path(tiny_cohort, tmp_path):
    raw = tmp_path / "raw"
    for folder in ("volumes", "centrelines"):
        shutil.copytree(tiny_cohort / folder, raw / folder)
    _, rows, rejects = run(raw, tmp_path / "store")
    assert rejects.empty
    assert set(rows.source_kind) == {"volume"}
    assert rows.patient_id.nunique() == 4
    assert (rows.groupby(["patient_id", "branch"]).size() == CONFIG.volume_views).all()


def test_assets_and_checks(tiny_cohort, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_cohort, raw)
    result = dg.materialize(
        [
            raw_cohort,
            imaging.mpr_images,
            imaging.mpr_store_matches_manifest,
            imaging.mpr_missing_views,
            imaging.mpr_rejects_ratio,
        ],
        resources={
            "paths": CassPaths(raw_dir=str(raw), processed_dir=str(tmp_path / "out")),
            "pseudonyms": PseudonymKey(key_file=str(tmp_path / "key"), key="k"),
            "raw_format": RawFormat(),
        },
        selection=dg.AssetSelection.groups("images"),
        run_config=dg.RunConfig({"mpr_images": {"config": {"image_size": 48, "workers": 1}}}),
    )
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    manifest = result.asset_materializations_for_node("mpr_images")
    by_key = {m.asset_key.path[-1]: m.metadata for m in manifest}
    assert by_key["mpr_manifest"]["image_size"].value == 48
    assert by_key["mpr_cleanup_examples"]["examples"].value >= 1
    assert "data:image/png;base64," in by_key["mpr_cleanup_examples"]["example_0"].value


@pytest.mark.slow
def test_cleanup_examples_show_no_identifier_at_8x_zoom(tmp_path):
    """A 512-px export (the paper's size, its burned-in MRN and date legible) cleaned to 256
    px: the written before/after PNGs show no identifier a closer look reads."""
    raw = tmp_path / "raw"
    generate_cohort(preset("tiny", n_patients=1, image_size=512), raw, workers=1)
    headers = [pydicom.dcmread(p) for p in sorted(raw.rglob("mpr/**/*.dcm"))]
    identifiers = searchable(
        str(value) for h in headers for value in (h.PatientID, h.PatientName, h.StudyDate)
    )
    assert identifier_readable(zoomed_text(headers[0].pixel_array), identifiers)
    result = dg.materialize(
        [raw_cohort, imaging.mpr_images],
        resources={
            "paths": CassPaths(raw_dir=str(raw), processed_dir=str(tmp_path / "out")),
            "pseudonyms": PseudonymKey(key_file=str(tmp_path / "key"), key="k"),
            "raw_format": RawFormat(),
        },
        run_config=dg.RunConfig({"mpr_images": {"config": {"image_size": 256, "workers": 1}}}),
    )
    assert result.success
    written = sorted((tmp_path / "out").rglob("examples/*.png"))
    assert len(written) == 4  # one per branch: none withheld by the pipeline's own check
    for path in written:
        assert not identifier_readable(zoomed_text(cv2.imread(str(path))), identifiers), path


def test_a_series_named_after_the_patient_loses_the_name_and_the_check_catches_a_leak(
    tiny_cohort, tmp_path
):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_cohort, raw)
    folder = raw / "mpr" / "CASE-0001" / "LCX"
    family = str(pydicom.dcmread(next(folder.glob("*.dcm"))).PatientName).split("^")[0]
    for path in folder.glob("*.dcm"):  # a workstation that puts the name in the description
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = f"LCX {family}"
        ds.save_as(path)
    paths = CassPaths(raw_dir=str(raw), processed_dir=str(tmp_path / "out"))
    config = IngestConfig(cleanup=CleanupConfig(size=32), min_views=3)
    from cass_pipeline.domain.imaging.tables import IMAGE_REJECT_SCHEMA, MANIFEST_SCHEMA
    from cass_pipeline.domain.storage import write_parquet_atomic

    with published_images(paths.processed) as layout:
        results = list(ingest_cohort(raw, layout.image_store, KEYS, config, 1))
        write_parquet_atomic(
            pd.DataFrame([r for x in results for r in x.rows]),
            layout.manifest,
            MANIFEST_SCHEMA,
        )
        write_parquet_atomic(
            pd.DataFrame(
                [r for x in results for r in x.rejects], columns=IMAGE_REJECT_SCHEMA.names
            ),
            layout.image_rejects,
            IMAGE_REJECT_SCHEMA,
        )
    context = dg.build_asset_check_context()
    manifest = pd.read_parquet(paths.layout.manifest)
    assert "LCX [identifier]" in set(manifest.series_name)  # the name never reaches it
    assert imaging.no_identifiers_in_image_outputs(context, paths, RawFormat()).passed
    manifest.loc[manifest.series_name == "LCX [identifier]", "series_name"] = f"LCX {family}"
    write_parquet_atomic(manifest, paths.layout.manifest, MANIFEST_SCHEMA)  # a leak planted
    check = imaging.no_identifiers_in_image_outputs(context, paths, RawFormat())
    assert not check.passed
    assert sum(check.metadata["outputs_with_identifiers"].value.values()) >= 1


def test_a_second_ingestion_waits_for_the_writer_of_the_store(tiny_cohort, tmp_path):
    from cass_pipeline.domain.storage import exclusive_writer

    raw = tmp_path / "raw"
    shutil.copytree(tiny_cohort, raw)
    paths = CassPaths(raw_dir=str(raw), processed_dir=str(tmp_path / "out"), writer_wait_seconds=1)
    with exclusive_writer(paths.layout.image_generations):  # another run is writing the store
        result = dg.materialize(
            [imaging.mpr_images],
            resources={
                "paths": paths,
                "pseudonyms": PseudonymKey(key_file=str(tmp_path / "k")),
                "raw_format": RawFormat(),
            },
            run_config=dg.RunConfig({"mpr_images": {"config": {"image_size": 32, "workers": 1}}}),
            raise_on_error=False,
        )
    assert not result.success
    error = result.failure_data_for_node("mpr_images").error
    message = error.cause.message if error.cause else error.message
    assert f"held by process {os.getpid()}" in message and "writing" in message
    assert "gave up" in message
    assert not paths.layout.manifest.exists()


def test_key_holder_finds_the_rejected_file_behind_a_pseudonym(damaged_export, tmp_path):
    from click.testing import CliRunner

    from cass_pipeline.cli import main
    from cass_pipeline.domain.imaging.tables import IMAGE_REJECT_SCHEMA
    from cass_pipeline.domain.storage import write_parquet_atomic

    raw, lad = damaged_export
    _, _, rejects = run(raw, tmp_path / "store")
    assert "CASE-0001" not in rejects.to_csv()  # the outputs stay pseudonymous
    processed = tmp_path / "processed"
    write_parquet_atomic(rejects, layout_of(processed).image_rejects, IMAGE_REJECT_SCHEMA)
    mrn = folder_patient_key(raw / "mpr" / "CASE-0001")
    pid = pseudonymise(mrn, SECRET)
    env = {"CASS_PSEUDONYM_KEY": SECRET.decode(), "CASS_PROCESSED_DIR": str(processed)}
    result = CliRunner().invoke(main, ["inspect", str(raw), "--patient", pid], env=env)
    assert result.exit_code == 0, result.output
    truncated = raw / "mpr" / "CASE-0001" / lad / "001.dcm"
    assert f"{pid}  {mrn}  [secret key]" in result.output
    assert f"rejected image: {truncated}: truncated DICOM file" in result.output
    assert truncated.is_file()
    wrong_key = CliRunner().invoke(
        main, ["inspect", str(raw), "--patient", pid], env={**env, "CASS_PSEUDONYM_KEY": "x"}
    )
    assert wrong_key.exit_code == 1
    assert "no patient in" in wrong_key.output and "with this key" in wrong_key.output
