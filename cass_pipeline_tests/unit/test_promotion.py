"""The promotion rule, one case each: first model, same model, better, worse, tie, too few
unseen patients, and the refusal on sensitivity."""

import pandas as pd

from cass_pipeline.domain.evaluation import promotion


def views(patients: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {"patient_id": patients, "source_sha256": [f"{p}0123456789abcdef" for p in patients]}
    )


def test_the_first_model_is_promoted():
    decision = promotion.without_comparison(challenger_version=1, champion_version=None)
    assert decision["promote"] and decision["reason"] == "no champion yet"


def test_the_champion_itself_is_kept():
    decision = promotion.without_comparison(challenger_version=3, champion_version=3)
    assert not decision["promote"] and "already the champion" in decision["reason"]
    assert promotion.without_comparison(4, 3) is None  # a real comparison is needed


def test_a_better_challenger_is_promoted_and_a_worse_one_kept():
    assert promotion.compare(0.80, 0.70, "on the same test split")["promote"]
    kept = promotion.compare(0.60, 0.70, "on the same test split")
    assert not kept["promote"]
    assert (
        kept["reason"] == "patient-level weighted F1 0.600 vs champion 0.700 on the same test split"
    )


def test_a_tie_promotes_the_newer_model():
    assert promotion.compare(0.75, 0.75, "")["promote"]


def test_patients_the_champion_learnt_from_are_left_out():
    test = views(["P1", "P2", "P3"])
    fair, learnt = promotion.unseen_patients(test, {"P10123456789abcd"}, {"P2"})
    assert learnt == {"P1", "P2"} and list(fair.patient_id) == ["P3"]  # by image, by pseudonym
    assert "too few to compare fairly" in promotion.too_few_to_compare(learnt, 1)
    assert promotion.too_few_to_compare(learnt, promotion.MIN_FAIR_TEST_PATIENTS) is None
    assert promotion.too_few_to_compare(set(), 0) is None  # nothing learnt: the whole split


def test_a_promotion_that_refers_fewer_significant_patients_is_refused():
    decision = {
        "promote": True,
        "challenger_significant_sensitivity": 0.6,
        "champion_significant_sensitivity": 0.9,
    }
    assert promotion.refused_on_sensitivity(decision)
    assert not promotion.refused_on_sensitivity({**decision, "promote": False})  # kept anyway
    equal = {**decision, "challenger_significant_sensitivity": 0.9}
    assert not promotion.refused_on_sensitivity(equal)
    first = {"promote": True, "challenger_significant_sensitivity": 0.5}
    assert not promotion.refused_on_sensitivity(first)  # no champion to compare with


def test_the_challenger_entry_reads_its_evaluation_report():
    report = {
        "model_version": 4,
        "metrics": {"patient": {"f1_weighted": 0.7}},
        "calibration_test": {"sensitivity": None},
    }
    assert promotion.challenger_entry(report) == {
        "challenger_version": 4,
        "challenger_patient_f1": 0.7,
        "challenger_significant_sensitivity": 0.0,  # no significant test patient
    }
