"""A site's report vocabulary as data: its words are read without a code change, each names
the file it came from, and typing errors of vessel and grade words are read and noted, never
those of abbreviations or real words."""

import pytest
from click.testing import CliRunner

from cass_pipeline.cli import main
from cass_pipeline.domain.reports.explain import explain_lines
from cass_pipeline.domain.reports.flags import FOREIGN_WORDS, TYPO
from cass_pipeline.domain.reports.pipeline import parse_report_text
from cass_pipeline.domain.reports.vocabulary import (
    BUILT_IN,
    VocabularyError,
    edit_distance,
    load_vocabulary,
)

SHIPPED = BUILT_IN.parent
GERMAN, FRENCH = str(SHIPPED / "de.yaml"), str(SHIPPED / "fr.yaml")


def classes(text: str, *files: str) -> dict[str, str | None]:
    _, labels = parse_report_text(text, site_files=files)
    return {name: lab.stenosis_class for name, lab in labels.branches.items()}


def test_a_site_file_teaches_words_without_code(tmp_path):
    german = "Befund:\nRIVA: hochgradige Stenose proximal.\nRCX: ohne Plaque.\nACD: unauffällig."
    assert classes(german).get("LAD") is None  # English alone cannot read the grade
    assert classes(german, GERMAN) == {
        "LAD": "significant",
        "LCX": "no_stenosis",
        "RCA": "no_stenosis",
    }
    french = "Conclusion : IVA : sténose serrée. CD : pas de sténose. Circonflexe : normale."
    assert classes(french, FRENCH) == {
        "LAD": "significant",
        "RCA": "no_stenosis",
        "LCX": "no_stenosis",
    }
    own = tmp_path / "site.yaml"
    own.write_text("vessels:\n  LAD: [Vorderwandarterie]\ngrades:\n  severe: [kritisch]\n")
    assert classes("Vorderwandarterie kritisch.", str(own)) == {"LAD": "significant"}
    _, labels = parse_report_text("Vorderwandarterie kritisch.", site_files=(str(own),))
    explained = "\n".join(explain_lines(labels))
    assert "'Vorderwandarterie': vessel LAD (site.yaml)" in explained
    assert "'kritisch': grade severe (site.yaml)" in explained


def test_words_of_a_language_not_in_use_hold_the_report_and_name_the_file(tmp_path):
    text = "LM: keine Plaques. LAD: 30% stenosis. RCA: pas de plaque."
    _, labels = parse_report_text(text)
    assert "LM" not in labels.branches  # not read as plaque, the English noun
    held = [f for f in labels.flags if f.kind == FOREIGN_WORDS]
    assert [f.holds for f in held] == [True, True]
    assert "'keine Plaques': words of de.yaml" in held[0].detail
    assert "'pas de plaque': words of fr.yaml" in held[1].detail
    assert "unread word of de.yaml 'keine Plaques'" in "\n".join(explain_lines(labels))
    _, german = parse_report_text(text, site_files=(GERMAN,))
    assert [f.detail.split(":")[0] for f in german.flags if f.kind == FOREIGN_WORDS] == [
        "'pas de plaque'"
    ]
    assert german.branches["LM"].stenosis_class == "no_stenosis"
    own = tmp_path / "site-de.yaml"  # a site's own German file stands for the example's
    own.write_text("language: de\nnormal: [keine Plaques]\n")
    _, site = parse_report_text("LM: keine Plaques. LAD: 30% stenosis.", site_files=(str(own),))
    assert not [f for f in site.flags if f.kind == FOREIGN_WORDS]


def test_plain_english_words_for_normal():
    assert classes("LAD: NAD. LCx: clean. RCA: clear.") == dict.fromkeys(
        ("LAD", "LCX", "RCA"), "no_stenosis"
    )


def test_typing_errors_of_vessel_and_grade_words_are_read_and_noted():
    text = (
        "Lef main: normal.\nDiagnol: mild plaque.\nRigth coronary artery: 50-69% stenosis.\n"
        "First marignal: moderate stenosis.\nLCx: modrate narrowing."
    )
    _, labels = parse_report_text(text)
    got = {name: lab.stenosis_class for name, lab in labels.branches.items()}
    assert got == {
        "LM": "no_stenosis",
        "D-1": "non_significant",
        "RCA": "significant",
        "OM-1": "significant",
        "LCX": "significant",
    }
    notes = sorted(f.detail for f in labels.flags if f.kind == TYPO)
    assert notes == [
        "'Diagnol' read as 'diagonal' (en.yaml)",
        "'First marignal' read as 'first marginal' (en.yaml)",
        "'Lef main' read as 'left main' (en.yaml)",
        "'Rigth coronary artery' read as 'right coronary artery' (en.yaml)",
        "'modrate' read as 'moderate' (en.yaml)",
    ]
    assert not any(f.holds for f in labels.flags if f.kind == TYPO)
    assert "typing error, edit distance 2" in "\n".join(explain_lines(labels))


def test_abbreviations_real_words_and_endings_are_never_typos():
    vocabulary = load_vocabulary()
    for written in ("LCA", "LDA", "clinical", "insignificant", "marginally", "moderately", "mild"):
        assert vocabulary.fuzzy(written) is None, written
    # real words two edits from a vessel or grade word, found by running every word of the
    # installed packages' text through the typo reading
    for written in ("margins", "tolerate", "occasion", "occluder", "cardinal"):
        assert vocabulary.fuzzy(written) is None, written
    _, labels = parse_report_text(
        "LAD: 70% stenosis, smooth margins. Clinical correlation is advised. "
        "Amplatzer occluder in the atrial septum; tolerated on this occasion."
    )
    assert not labels.flags and set(labels.branches) == {"LAD"}
    assert edit_distance("rigth", "right", 2) == 1  # a swap counts one


def test_a_broken_file_is_refused_with_the_reason(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("vessels:\n  LADD: [Vorderwand]\n")
    with pytest.raises(VocabularyError, match="unknown branch 'LADD'"):
        load_vocabulary((str(bad),))
    bad.write_text("grades:\n  awful: [schlimm]\n")
    with pytest.raises(VocabularyError, match="unknown grade 'awful'"):
        load_vocabulary((str(bad),))
    report = tmp_path / "report.txt"
    report.write_text("LAD: 70% stenosis.")
    result = CliRunner().invoke(main, ["parse-report", str(report), "--vocabulary", str(bad)])
    assert result.exit_code == 1 and "unknown grade 'awful'" in result.output
    result = CliRunner().invoke(
        main, ["parse-report", str(report), "--explain", "--vocabulary", GERMAN]
    )
    assert result.exit_code == 0 and "LAD      significant" in result.output
