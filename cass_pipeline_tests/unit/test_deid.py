"""De-identification removes every identifier a report header or body carries."""

from cass_pipeline.domain.cohort.report_sources import header_identifiers
from cass_pipeline.domain.privacy import load_secret, pseudonymise
from cass_pipeline.domain.reports.deid import deidentify

REPORT = """Patient name: SMITH, John    DOB: 12.03.1957    MRN: 48213975
Accession No: A2024031400123    Exam date: 14/03/2024
Address: 12 Baker Street, London NW1
Phone: +44 20 7946 0958
Referred by Dr. Jane Okafor. Mr Smith has atypical chest pain since March 3, 2024.
LAD: 70% stenosis. Agatston score 412. Compared with the study of 2023-11-02.
"""


def test_every_identifier_is_replaced():
    result = deidentify(REPORT)
    for value in (
        "SMITH",
        "Smith",
        "John",
        "12.03.1957",
        "48213975",
        "A2024031400123",
        "14/03/2024",
        "Baker Street",
        "7946",
        "Okafor",
        "March 3, 2024",
        "2023-11-02",
    ):
        assert value not in result.text, value
    assert result.counts["NAME"] >= 3 and result.counts["DOB"] == 1
    assert result.counts["MRN"] == 1 and result.counts["ACCESSION"] == 1
    assert result.counts["PHONE"] == 1 and result.counts["ADDRESS"] == 1


def test_clinical_content_survives():
    text = deidentify(REPORT).text
    assert "LAD: 70% stenosis." in text
    assert "Agatston score 412" in text
    assert "[NAME]" in text and "[DATE]" in text


def test_header_identifiers_lists_values_and_name_parts():
    found = header_identifiers(REPORT)
    assert {"SMITH, John", "SMITH", "John", "12.03.1957", "48213975", "A2024031400123"} <= set(
        found
    )


def test_pseudonyms_are_stable_keyed_and_not_reversible(tmp_path):
    secret = load_secret(tmp_path / "key")
    assert load_secret(tmp_path / "key") == secret  # created once, then reused
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600
    first = pseudonymise("MRN48213975", secret)
    assert first == pseudonymise(" MRN48213975 ", secret)
    assert first != pseudonymise("MRN48213975", b"other secret")
    assert first.startswith("P") and len(first) == 17 and "48213975" not in first
    assert load_secret(tmp_path / "unused", env_value="from-env") == b"from-env"


def test_a_lower_case_word_after_patient_is_not_a_name_in_clinical_phrases():
    text = (
        "Patient: DOE, Jane\nQuestion from the patient: non-atherosclerotic disease?\n"
        "Findings: a non-atherosclerotic disease of the mid LAD. Mrs Doe tolerated the scan."
    )
    cleaned = deidentify(text).text
    assert "Question from the patient: [NAME]" in cleaned  # the field's value, where it stands
    assert "a non-atherosclerotic disease of the mid LAD" in cleaned  # not "[NAME]" inside
    assert "Doe" not in cleaned and "Jane" not in cleaned


def test_a_name_that_is_a_clinical_word_leaves_the_findings_readable():
    text = (
        "Patient: Main, Grace Normal\nReferring: Dr. Right\n"
        "Right coronary artery: 30% stenosis.\nLeft main: normal. LAD: mild stenosis.\n"
        "Grace Normal and Mr Main were told by Dr Right."
    )
    cleaned = deidentify(text).text
    assert "Left main: normal. LAD: mild stenosis." in cleaned
    assert "\nRight coronary artery: 30% stenosis." in cleaned  # not taken into Dr Right's name
    assert "[NAME] [NAME] and Mr [NAME] were told by Dr [NAME]." in cleaned
    capitals = deidentify("Patient: LAD, TOM\nLAD: normal. Tom Lad consented.").text
    assert "TOM" not in capitals and "Lad" not in capitals  # written as a name: privacy first
    assert "[NAME]: normal" in capitals


def test_the_leak_check_passes_a_name_used_only_as_a_clinical_word_and_fails_the_name():
    from cass_pipeline.domain.reports.deid import identifiers_in_reports

    identifiers = ["Main, Grace", "Main", "Grace", "48213975"]
    assert identifiers_in_reports(["Left main: normal.", "LAD: 30%"], identifiers) == set()
    assert identifiers_in_reports(["Left main: normal. Mrs Main agreed."], identifiers) == {"main"}
    assert identifiers_in_reports(["MAIN, GRACE", "id 48213975"], identifiers) == {
        "main grace",
        "main",
        "grace",
        "48213975",
    }
