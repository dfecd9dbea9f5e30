"""The model card: intended use, training data per class, figures with intervals, the
calibration and its doubts, and what is not measured yet; the paper's figures never stand
as comparable."""

import pandas as pd

from cass_pipeline.domain.evaluation.model_card import CardFacts, card_tags, model_card
from cass_pipeline.domain.model.calibration import Calibration, calibration_doubt


def facts(calibration: Calibration, grades=None) -> CardFacts:
    splits = pd.DataFrame(
        {
            "patient_id": [f"P{i}" for i in range(10)],
            "patient_class": ["no_stenosis", "significant"] * 5,
            "split": ["train"] * 6 + ["validation"] * 2 + ["test"] * 2,
        }
    )
    level = {"n": 2, "accuracy": 0.5, "f1_weighted": 0.4, "ci95": {"f1_weighted": [0.1, 0.9]}}
    return CardFacts(
        version=3,
        run_id="abc",
        arch="shufflenet_v2_x1_0",
        target="grades",
        image_size=128,
        data_source="synthetic cohort, CASS generator",
        splits=splits,
        metrics={"segment": level, "artery": level, "patient": level},
        grades=grades,
        on_test={"ece_before": 0.2, "ece_after": 0.1, "sensitivity": 1.0, "patients": 2},
        calibration=calibration,
    )


def test_the_card_states_use_data_figures_and_limits():
    doubt = calibration_doubt(6, 2)
    card = model_card(facts(Calibration(1.4, 0.3, fitted_on="validation split", unreliable=doubt)))
    assert "Not a diagnosis" in card and "version 3" in card
    assert "| train | 6 | 3 | 3 |" in card and "| test | 2 | 1 | 1 |" in card
    assert "0.400 (0.10-0.90)" in card  # weighted F1 with its interval
    assert "Cross-validated figures: not measured" in card and "not comparable" in card
    assert "**Calibration not reliable: fitted on 6 validation patients" in card
    assert "P(significant) is at least 0.300" in card


def test_tags_state_the_key_facts():
    grades = {"patient": {"n": 2, "kappa_linear": 0.61, "accuracy": 0.5}}
    tags = card_tags(facts(Calibration(), grades))
    assert tags["calibration_reliable"] == "yes" and tags["training_patients"] == "6"
    assert tags["test_cad_rads_kappa_linear"] == "0.610" and tags["external_validation"] == "no"


def test_a_calibration_is_doubted_on_few_patients_or_none_significant():
    assert "fewer than 30" in calibration_doubt(6, 3)
    assert "no significant patient" in calibration_doubt(40, 0)
    assert calibration_doubt(40, 5) == ""


def test_an_ensembles_card_shows_its_members_and_cross_validated_figures():
    from dataclasses import replace

    table = "| level | figure | fold 0 | fold 1 | mean +- SD | pooled (n) |"
    card = model_card(replace(facts(Calibration()), members=5, cross_validation=table))
    assert "a fold ensemble of 5 networks" in card
    assert "## Cross-validated on the training and validation patients" in card and table in card
    assert "Cross-validated figures: above" in card
    tags = card_tags(replace(facts(Calibration()), members=5, cross_validation=table))
    assert tags["cross_validated"] == "yes" and tags["ensemble_members"] == "5"


def test_external_figures_are_added_to_the_card_once():
    from cass_pipeline.domain.evaluation.model_card import with_external

    card = model_card(facts(Calibration()))
    once = with_external(card, "site-b", 80, "| figure | internal test | external site |")
    twice = with_external(once, "site-b", 81, "| figure | internal test | external site |")
    assert once.startswith(card.rstrip("\n")) and "80 patients of the site `site-b`" in once
    assert twice.count("## External site") == 1 and "81 patients" in twice


def test_reader_labelled_patients_are_counted_apart_and_named_a_limit():
    from dataclasses import replace

    plain = facts(Calibration())
    origin = ["report"] * 4 + ["reader"] * 2 + ["report"] * 4
    card = model_card(replace(plain, splits=plain.splits.assign(origin=origin)))
    assert "| train | 4 | 2 | 2 |" in card and "| train (labelled by readers) | 2 | 1 | 1 |" in card
    assert "2 training patients were labelled by readers' verdicts" in card
    assert "labelled by readers" not in model_card(plain)
