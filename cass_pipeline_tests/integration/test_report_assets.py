"""Report assets on a synthetic cohort: labels, rejects with reasons, and no identifier leaks."""

import json
import shutil
from datetime import datetime

import dagster as dg
import pandas as pd
import pydicom
import pytest
from click.testing import CliRunner

from cass_pipeline.cli import main
from cass_pipeline.defs.assets import reports as report_assets
from cass_pipeline.defs.resources import CassPaths, RawFormat
from cass_pipeline.domain.cohort.report_sources import text_report
from cass_pipeline.domain.privacy import pseudonymise
from cass_pipeline.layout import ground_truth_table
from cass_pipeline_tests.helpers import layout_of, materialise_reports

SECRET = "test-secret"


@pytest.fixture(scope="module")
def materialised(tmp_path_factory, tiny_cohort):
    root = tmp_path_factory.mktemp("reports")
    raw = root / "raw"
    shutil.copytree(
        tiny_cohort / "reports", raw / "reports"
    )  # reports only: each names its patient
    reports = raw / "reports"
    (reports / "BROKEN.txt").write_bytes(b"LAD: 70% stenosis \xff\xfe\xfa")
    (reports / "EMPTY.txt").write_text("   \n")
    shutil.copy(reports / "CASE-0001.txt", reports / "COPY.txt")
    (reports / "NOFINDINGS.txt").write_text("Patient: DOE, Jane\nExam aborted: contrast leak.\n")
    (reports / "UNREAD.txt").write_text(
        "Patient: ROE, Ann\nLAD, LCx and RCA reviewed, see images.\n"
    )
    result = materialise_reports(root, SECRET)
    return root, result


def test_labels_and_checks(materialised, tiny_cohort):
    root, result = materialised
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["branch_labels_traceable"].passed
    assert checks["no_identifiers_in_report_outputs"].passed
    # 4 of 9 reports are planted rejects, 1 is held unread: coverage 4/9 is a warning.
    coverage = checks["branch_label_coverage"]
    assert not coverage.passed and coverage.severity == dg.AssetCheckSeverity.WARN
    assert coverage.metadata["coverage"].value == round(4 / 9, 4)
    labels = pd.read_parquet(layout_of(root / "processed").branch_labels)
    truth = pd.read_parquet(ground_truth_table(tiny_cohort, "branches"))
    mrn = {c: text_report(tiny_cohort / "reports" / f"{c}.txt").mrn for c in truth.case_id}
    truth["patient_id"] = [pseudonymise(mrn[c], SECRET.encode()) for c in truth.case_id]
    merged = truth.merge(labels, on=["patient_id", "branch"], suffixes=("_true", ""))
    assert len(merged) == len(truth)
    expected = merged.stenosis_class_true.where(~merged.reported_non_diagnostic, None)
    assert merged.stenosis_class.tolist() == expected.tolist()


def test_rejects_carry_reasons(materialised):
    root, _ = materialised
    rejects = pd.read_parquet(layout_of(root / "processed").report_rejects)
    copied = text_report(root / "raw" / "reports" / "CASE-0001.txt").mrn  # COPY names it too
    names = {"BROKEN": "BROKEN", "EMPTY": "EMPTY", "NOFINDINGS": "NOFINDINGS", copied: "COPY"}
    keys = {pseudonymise(k, SECRET.encode()): name for k, name in names.items()}
    by_key = {keys[p]: r for p, r in zip(rejects.patient_id, rejects.reason, strict=True)}
    assert by_key["BROKEN"].startswith("unreadable encoding")
    assert by_key["EMPTY"] == "empty report"
    assert by_key["COPY"] == "a second report for the same patient"
    assert by_key["NOFINDINGS"] == "no vessel findings"
    assert len(rejects) == 4  # UNREAD names vessels: it waits for a reviewer instead
    unread = pseudonymise("UNREAD", SECRET.encode())
    labels = pd.read_parquet(layout_of(root / "processed").patient_labels).set_index("patient_id")
    assert labels.held_for_review[unread] and labels.patient_class.isna()[unread]
    review = pd.read_parquet(layout_of(root / "processed").label_review)
    held = review[(review.patient_id == unread) & (review.status == "to review")]
    assert held.flag.tolist() == ["vessel findings not read"]


def test_no_header_identifier_reaches_any_parquet_output(materialised, tiny_cohort):
    root, _ = materialised
    identifiers = set()
    for case in (tiny_cohort / "mpr").iterdir():
        ds = pydicom.dcmread(next(case.rglob("*.dcm")))
        family, given = str(ds.PatientName).split("^")
        born = datetime.strptime(ds.PatientBirthDate, "%Y%m%d")
        identifiers |= {
            family,
            given,
            ds.PatientID,
            ds.AccessionNumber,
            case.name,
            born.strftime("%Y-%m-%d"),
            born.strftime("%d.%m.%Y"),
            born.strftime("%m/%d/%Y"),
        }
    outputs = list((root / "processed").rglob("*.parquet"))
    assert len(outputs) == 6
    for path in outputs:
        blob = pd.read_parquet(path).to_json().lower()
        leaked = [v for v in identifiers if v.lower() in blob]
        assert leaked == [], f"{path.name}: {leaked}"


def test_identifier_check_catches_a_planted_leak(materialised):
    root, _ = materialised
    paths = CassPaths(raw_dir=str(root / "raw"), processed_dir=str(root / "processed"))
    mentions_path = layout_of(root / "processed").report_table("report_mentions")
    original = mentions_path.read_bytes()
    report = (root / "raw" / "reports" / "CASE-0002.txt").read_text()
    mrn = report.split("MRN: ")[1].split()[0]
    frame = pd.read_parquet(mentions_path)
    frame.loc[0, "text"] = f"seen by {mrn}"
    frame.to_parquet(mentions_path)
    try:
        check = report_assets.no_identifiers_in_report_outputs(paths, RawFormat())
        assert not check.passed
        assert check.metadata["tables_with_identifiers"].value == {"report_mentions": 1}
    finally:
        mentions_path.write_bytes(original)


def test_parse_report_cli_prints_one_json_object(tmp_path):
    report = tmp_path / "r.txt"
    report.write_text("Patient: DOE, Jane  MRN: 12345678\nLAD: 70-90%\nRCA: NORMAL\nCAD-RADS 4A\n")
    result = CliRunner().invoke(main, ["parse-report", str(report), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["branches"]["LAD"] == {
        "stenosis_class": "significant",
        "max_stenosis_pct": [70, 90],
        "evidence": ["70-90%"],
    }
    assert payload["branches"]["RCA"]["stenosis_class"] == "no_stenosis"
    assert payload["patient_class"] == "significant"
    assert payload["cad_rads"] == {"category": "4A", "modifiers": []}
    assert set(payload) == {"branches", "patient_class", "cad_rads", "flags"}
    assert payload["flags"] == []
    assert "12345678" not in result.output and "DOE" not in result.output


def test_parse_report_explain_shows_the_sentence_the_rule_and_the_flags(tmp_path):
    report = tmp_path / "r.txt"
    report.write_text(
        "Patient: DOE, Jane  MRN: 12345678\nFINDINGS:\nLAD: 25-49% stenosis in the mid "
        "segment.\nRCA: normal.\nIMPRESSION:\nModerate (50-69%) stenosis of the mid LAD. "
        "CAD-RADS 2.\n"
    )
    result = CliRunner().invoke(main, ["parse-report", str(report), "--explain"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["LAD", "significant", "50-69%"]
    assert "the most severe finding on the branch" in lines[0]
    assert '"Moderate (50-69%) stenosis of the mid LAD."' in lines[1]
    assert "placed by the vessel after it" in lines[1]
    assert "patient: significant; CAD-RADS 3 (stated: 2)" in result.output
    assert "HOLD branch graded twice LAD: '25-49%' in the findings" in result.output
    assert "HOLD stated CAD-RADS disagrees: stated 2, derived 3" in result.output
    assert "12345678" not in result.output and "DOE" not in result.output


def test_short_common_names_inside_ordinary_words_are_not_leaks(materialised):
    root, _ = materialised
    paths = CassPaths(raw_dir=str(root / "raw"), processed_dir=str(root / "processed"))
    reports = root / "raw" / "reports"
    names = {"CASE-0001": "TED, Ina", "CASE-0002": "PAT, Art", "CASE-0003": "AL, Li"}
    originals = {case: (reports / f"{case}.txt").read_text() for case in names}
    mentions_path = layout_of(root / "processed").report_table("report_mentions")
    original_mentions = mentions_path.read_bytes()
    try:
        for case, name in names.items():
            rest = originals[case].split("    DOB:", 1)[1]
            (reports / f"{case}.txt").write_text(f"Patient: {name}    DOB:{rest}")
        outputs = " ".join(
            pd.read_parquet(p).to_csv().lower() for p in (root / "processed").rglob("*.parquet")
        )
        inside_words = [n for n in ("ted", "ina", "pat", "art", "al", "li") if n in outputs]
        assert len(inside_words) >= 4  # the old substring scan blocked on these
        assert report_assets.no_identifiers_in_report_outputs(paths, RawFormat()).passed
        frame = pd.read_parquet(mentions_path)
        frame.loc[0, "text"] = "discussed with Ina on the ward"
        frame.to_parquet(mentions_path)
        check = report_assets.no_identifiers_in_report_outputs(paths, RawFormat())
        assert not check.passed
        assert check.metadata["tables_with_identifiers"].value == {"report_mentions": 1}
    finally:
        for case, text in originals.items():
            (reports / f"{case}.txt").write_text(text)
        mentions_path.write_bytes(original_mentions)
