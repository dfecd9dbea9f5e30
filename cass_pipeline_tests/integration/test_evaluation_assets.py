"""Evaluation, promotion and explanations on a tiny trained model; the CLI's JSON."""

import json

import dagster as dg
import pandas as pd
import pytest
from click.testing import CliRunner

from cass_pipeline.cli import main
from cass_pipeline.defs.assets import evaluation, model
from cass_pipeline.defs.resources import CassPaths
from cass_pipeline.domain.evaluation import promotion
from cass_pipeline_tests.helpers import TINY_MODEL, layout_of, local_tracking

pytestmark = pytest.mark.slow  # trains models or starts servers

ASSETS = [
    model.stenosis_model,
    evaluation.test_predictions,
    evaluation.evaluation_report,
    evaluation.calibration_is_reliable,
    evaluation.promotion_decision,
    evaluation.promotion_keeps_significant_sensitivity,
    evaluation.champion_model,
    evaluation.explanations,
]


def run(root, tmp_path, lr, raise_on_error=True, **train_options):
    return dg.materialize(
        ASSETS,
        raise_on_error=raise_on_error,
        resources={
            "paths": CassPaths(raw_dir=str(tmp_path / "raw"), processed_dir=str(root)),
            "mlflow_tracking": local_tracking(tmp_path, "eval-test"),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
        },
        run_config=dg.RunConfig(
            {
                "stenosis_model": {
                    "config": {**TINY_MODEL, "lr": lr, "resume": False, **train_options}
                },
                "evaluation_report": {"config": {"bootstrap": 50}},
                "explanations": {"config": {"per_class": 1, "steps": 4}},
            }
        ),
    )


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    from cass_pipeline_tests.helpers import write_training_data

    tmp_path = tmp_path_factory.mktemp("evaluation")
    root = write_training_data(tmp_path / "processed")
    first = run(root, tmp_path, 1e-3)
    first_decision = json.loads(layout_of(root).promotion.read_text())
    # the second tiny model may refer fewer significant patients (CPU-dependent): its
    # promotion is then refused by the blocking check, which the test asserts
    second = run(root, tmp_path, 3e-3, raise_on_error=False)
    second_decision = json.loads(layout_of(root).promotion.read_text())
    return root, first, first_decision, second, second_decision


def test_first_model_becomes_champion_and_metrics_are_reported(two_rounds):
    root, first, decision, _, _ = two_rounds
    assert first.success
    assert decision["promote"] and decision["reason"] == "no champion yet"
    report = first.asset_materializations_for_node("evaluation_report")[0].metadata
    assert "| segment |" in report["metrics"].value and "0.81 / 0.81" in report["metrics"].value
    assert "data:image/png;base64," in report["confusion_matrices"].value
    metrics = json.loads(layout_of(root).evaluation_report.read_text())["metrics"]
    assert set(metrics) == {"segment", "artery", "patient"}
    assert metrics["patient"]["n"] == 2  # two test patients
    explained = first.asset_materializations_for_node("explanations")[0].metadata
    assert explained["views_explained"].value == 3  # one per class
    assert 0 <= explained["vessel_band_attribution_fraction"].value <= 1


def test_the_champion_is_validated_on_another_sites_export_beside_its_internal_figures(
    two_rounds, tmp_path
):
    """A second site's synthetic export (another scanner, contrast, export and report style)
    scored from its raw files as served, labelled from its own reports."""
    from cass_pipeline.defs.assets import external
    from cass_pipeline.defs.resources import PseudonymKey, RawFormat
    from cass_pipeline.domain.synthetic.cohort import generate_cohort
    from cass_pipeline.domain.synthetic.config import preset

    root = two_rounds[0]
    site = tmp_path / "external" / "raw"
    config = preset("benchmark-external", n_patients=3, n_views=4, image_size=64, voxel_mm=0.8)
    generate_cohort(config, site, workers=1)
    result = dg.materialize(
        [external.external_validation, external.external_kappa_holds],
        resources={
            "paths": CassPaths(raw_dir=str(tmp_path / "raw"), processed_dir=str(root)),
            "mlflow_tracking": local_tracking(root.parent, "eval-test"),
            "pseudonyms": PseudonymKey(key_file=str(tmp_path / "key"), key="k"),
            "raw_format": RawFormat(),
        },
        run_config=dg.RunConfig(
            {"external_validation": {"config": {"raw_dir": str(site), "bootstrap": 20}}}
        ),
    )
    assert result.success
    shown = result.asset_materializations_for_node("external_validation")[0].metadata
    assert "| patient weighted F1 |" in shown["internal_vs_external"].value
    document = json.loads(layout_of(root).external_report.read_text())
    assert document["patients"] >= 1 and document["internal"]["patient weighted F1"] is not None
    assert document["external"]["patient weighted F1"] is not None
    table = pd.read_parquet(layout_of(root).external_predictions)
    assert table.model_version.nunique() == 1 and table.label.between(0, 2).all()
    assert not set(table.patient_id) & {case.name for case in (site / "mpr").iterdir()}
    registry = local_tracking(root.parent, "eval-test").tracking()
    card = registry.version_description(document["model_version"])
    assert card.count("## External site") == 1 and "| patient weighted F1 |" in card


def test_every_model_reports_its_calibration_and_operating_point(two_rounds, tmp_path):
    root, first, _, second, _ = two_rounds
    for result in (first, second):
        report = result.asset_materializations_for_node("evaluation_report")[0].metadata
        assert "| test |" in report["calibration_and_operating_point"].value
        assert "| validation |" in report["calibration_and_operating_point"].value
        assert "data:image/png;base64," in report["reliability_diagram"].value
        assert 0 <= report["test_ece_after"].value <= 1
    ranking = pd.read_parquet(layout_of(root).patient_ranking)
    assert ranking["rank"].tolist() == list(range(1, len(ranking) + 1))
    assert ranking.score.is_monotonic_decreasing and set(ranking.patient_id) == {"P010", "P011"}
    assert "patient_id" in report["patient_ranking_top"].value.splitlines()[0]
    saved = json.loads(layout_of(root).evaluation_report.read_text())
    fitted = saved["calibration"]
    assert fitted["fitted_on"].startswith("validation split")
    assert 0.05 <= fitted["temperature"] <= 20
    assert fitted["referral_threshold"] is not None  # the tiny cohort has significant patients
    assert fitted["validation"]["sensitivity"] >= fitted["target_sensitivity"]
    assert set(saved["calibration_test"]) >= {"ece_before", "ece_after", "sensitivity", "roc_auc"}
    runs = local_tracking(root.parent, "eval-test").tracking()
    run = runs.client().get_run(saved["run_id"])
    assert {"test_ece_before", "test_ece_after", "val_ece_after"} <= set(run.data.metrics)
    assert float(run.data.params["referral_threshold"]) == fitted["referral_threshold"]
    # a handful of validation patients: the calibration says it is not to be trusted
    assert "fewer than 30" in fitted["unreliable"]
    (check,) = [
        c for c in first.get_asset_check_evaluations() if c.check_name == "calibration_is_reliable"
    ]
    assert not check.passed and "fewer than 30" in check.description


def test_every_registered_version_carries_its_model_card(two_rounds):
    root, first, _, _, _ = two_rounds
    saved = json.loads(layout_of(root).evaluation_report.read_text())
    runs = local_tracking(root.parent, "eval-test").tracking()
    version = runs.client().get_model_version("cass-stenosis", str(saved["model_version"]))
    card = version.description
    assert "## Intended use" in card and "Not a diagnosis" in card
    assert "| train |" in card and "| test | 2 |" in card  # patients per split and class
    assert "not measured for this version" in card and "not comparable" in card
    assert "Calibration not reliable" in card
    assert version.tags["calibration_reliable"] == "no" and version.tags["test_patients"] == "2"
    logged = runs.client().list_artifacts(saved["run_id"], "evaluation")
    assert "evaluation/model_card.md" in {a.path for a in logged}
    report = first.asset_materializations_for_node("evaluation_report")[0].metadata
    assert "## Known limits" in report["model_card"].value


def test_second_model_is_compared_with_the_re_evaluated_champion(two_rounds):
    _, _, _, second, decision = two_rounds
    refused = promotion.refused_on_sensitivity(decision)
    assert second.success is not refused  # a refused promotion fails its blocking check
    assert decision["champion_version"] == 1 and decision["challenger_version"] == 2
    assert decision["promote"] == (
        decision["challenger_patient_f1"] >= decision["champion_patient_f1"]
    )
    champion = second.asset_materializations_for_node("champion_model")
    if refused:
        assert champion == []  # the champion keeps its place
    else:
        assert champion[0].metadata["champion_version"].value == (2 if decision["promote"] else 1)


def test_promotion_with_worse_significant_sensitivity_is_blocked(two_rounds, tmp_path):
    root, *_ = two_rounds
    path = layout_of(root).promotion
    original = path.read_text()
    planted = {
        **json.loads(original),
        "promote": True,
        "challenger_significant_sensitivity": 0.4,
        "champion_significant_sensitivity": 0.9,
    }
    path.write_text(json.dumps(planted))
    try:
        paths = CassPaths(raw_dir=str(tmp_path), processed_dir=str(root))
        assert not evaluation.promotion_keeps_significant_sensitivity(paths).passed
        path.write_text(json.dumps({**planted, "challenger_significant_sensitivity": 0.9}))
        assert evaluation.promotion_keeps_significant_sensitivity(paths).passed
    finally:
        path.write_text(original)


def test_evaluate_cli_json(tmp_path):
    rows = [
        ("A", "LAD", 0, 2, 2),
        ("A", "LAD", 1, 2, 0),
        ("A", "LAD", 2, 2, 2),
        ("A", "D-1", 0, 0, 1),
        ("A", "D-1", 1, 0, 0),
        ("B", "RCA", 0, 1, 1),
        ("B", "RCA", 1, 1, 0),
    ]
    frame = pd.DataFrame(rows, columns=["patient_id", "branch", "view_index", "label", "pred"])
    frame.to_parquet(tmp_path / "p.parquet")
    result = CliRunner().invoke(
        main, ["evaluate", str(tmp_path / "p.parquet"), "--json", "--bootstrap", "0"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    # branches: A/LAD 2->2, A/D-1 0->1 (tie to the more severe), B/RCA 1->1 (tie)
    assert payload["segment"]["n"] == 3 and payload["segment"]["accuracy"] == pytest.approx(2 / 3)
    assert payload["segment"]["confusion_matrix"] == [[0, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert payload["artery"]["n"] == 2 and payload["patient"]["accuracy"] == 1.0
    for level in ("segment", "artery", "patient"):
        assert {"accuracy", "f1_weighted", "confusion_matrix", "n"} <= set(payload[level])


def test_a_champion_that_cannot_be_served_loses_its_place(two_rounds):
    from cass_pipeline.domain.evaluation.config import CHAMPION
    from cass_pipeline.runs.tracking import Tracking
    from cass_pipeline_tests.helpers import register_without_bundle

    root = two_rounds[0]
    tracking = Tracking(
        f"sqlite:///{root.parent}/mlflow.db", "eval-test", (root.parent / "a").as_uri()
    )
    serving = tracking.alias_version(CHAMPION)
    legacy = register_without_bundle(tracking, 32)
    tracking.set_alias(CHAMPION, legacy)
    try:
        paths = CassPaths(raw_dir=str(root.parent), processed_dir=str(root))
        decision = evaluation.against_champion(tracking, paths.layout, 0.1, legacy)
        assert decision["promote"] and "is not a CASS serving model" in decision["reason"]
        tracking.set_alias(CHAMPION, serving)
        kept = evaluation.against_champion(tracking, paths.layout, -1.0, serving)
        assert not kept["promote"] and kept["champion_patient_f1"] >= 0
    finally:
        tracking.set_alias(CHAMPION, serving)


def test_a_champion_is_compared_only_on_test_patients_it_never_learnt_from(two_rounds, monkeypatch):
    import pandas as pd

    from cass_pipeline.domain.evaluation.config import CHAMPION
    from cass_pipeline.runs.tracking import Tracking

    root = two_rounds[0]
    tracking = Tracking(
        f"sqlite:///{root.parent}/mlflow.db", "eval-test", (root.parent / "a").as_uri()
    )
    paths = CassPaths(raw_dir=str(root.parent), processed_dir=str(root))
    version = tracking.alias_version(CHAMPION)
    images, learnt = tracking.learnt_from(tracking.load(CHAMPION).run_id)
    assert learnt == {f"P{p:03d}" for p in range(10)}  # train and validation of its run
    manifest = pd.read_parquet(layout_of(root).manifest)
    assert images == set(manifest[manifest.patient_id.isin(learnt)].source_sha256.str[:16])
    splits_path = layout_of(root).splits
    original = splits_path.read_bytes()
    splits = pd.read_parquet(splits_path)
    try:  # the splits changed since the champion was trained: 5 of its patients are now test
        splits.loc[splits.patient_id.isin([f"P{p:03d}" for p in range(5)]), "split"] = "test"
        splits.to_parquet(splits_path)
        unfair = evaluation.against_champion(tracking, paths.layout, -1.0, version)
        assert unfair["promote"]
        assert "learnt from 5 of the test patients" in unfair["reason"]
        monkeypatch.setattr(promotion, "MIN_FAIR_TEST_PATIENTS", 2)
        fair = evaluation.against_champion(tracking, paths.layout, -1.0, version)
        assert "on the 2 test patients neither model learnt from" in fair["reason"]
        assert fair["challenger_patient_f1"] >= 0  # recomputed on the same 2 patients
    finally:
        splits_path.write_bytes(original)


def test_a_change_of_pseudonyms_does_not_hide_what_the_champion_learnt_from(two_rounds):
    import pandas as pd

    from cass_pipeline.runs.tracking import Tracking

    root = two_rounds[0]
    tracking = Tracking(
        f"sqlite:///{root.parent}/mlflow.db", "eval-test", (root.parent / "a").as_uri()
    )
    paths = CassPaths(raw_dir=str(root.parent), processed_dir=str(root))
    layout = layout_of(root)
    renamed = (layout.manifest, layout.splits, layout.branch_labels)
    saved = {path: path.read_bytes() for path in renamed}
    try:  # a new key: every patient renamed; P000-P004 (learnt) now in the test split
        for path in renamed:
            table = pd.read_parquet(path)
            table["patient_id"] = "Q" + table.patient_id.str[1:]
            if path == layout.splits:
                moved = table.patient_id.isin([f"Q{p:03d}" for p in range(5)])
                table.loc[moved, "split"] = "test"
            table.to_parquet(path)
        decision = evaluation.against_champion(tracking, paths.layout, -1.0, 1)
        assert "learnt from 5 of the test patients" in decision["reason"]
    finally:
        for path, data in saved.items():
            path.write_bytes(data)


def test_a_champion_cleaned_otherwise_than_the_store_gives_way(two_rounds):
    import json

    import pandas as pd

    from cass_pipeline.domain.evaluation.config import CHAMPION
    from cass_pipeline.domain.prediction.bundle import ModelBundle
    from cass_pipeline.runs.tracking import Tracking

    root = two_rounds[0]
    tracking = Tracking(
        f"sqlite:///{root.parent}/mlflow.db", "eval-test", (root.parent / "a").as_uri()
    )
    paths = CassPaths(raw_dir=str(root.parent), processed_dir=str(root))
    manifest_path = layout_of(root).manifest
    original = manifest_path.read_bytes()
    try:  # the store was re-ingested with another cleanup since the champion was trained
        pd.read_parquet(manifest_path).assign(cleanup_fingerprint="0123456789abcdef").to_parquet(
            manifest_path
        )
        decision = evaluation.against_champion(tracking, paths.layout, -1.0, 1)
        assert decision["promote"]
        assert "cannot be re-evaluated on this image store" in decision["reason"]
    finally:
        manifest_path.write_bytes(original)
    bundle = tracking.load(CHAMPION).predictor.bundle
    folder = root.parent / "old_bundle"
    folder.mkdir()
    (folder / "bundle.json").write_text(
        json.dumps({**bundle.to_json(), "cleanup_fingerprint": "an older cleanup"})
    )
    old = ModelBundle.read(folder)
    assert not old.cleans_as_trained() and old.cleanup_fingerprint == "an older cleanup"


@pytest.mark.parametrize("aggregation", ["attention", "attention_end_to_end"])
def test_an_attention_model_decides_its_branches_with_its_head(two_rounds, tmp_path, aggregation):
    """Last in the module: it rewrites the evaluation folder (with its own registry); the
    head trained on the finished network or with it."""
    from cass_pipeline.domain.model.aggregation import Bags, branch_outputs
    from cass_pipeline.domain.model.inference import TorchEngine, view_outputs
    from cass_pipeline.domain.model.metrics import evaluate
    from cass_pipeline.runs.tracking import Tracking

    root = two_rounds[0]
    result = run(root, tmp_path, 3e-3, aggregation=aggregation)
    assert result.success
    report = json.loads(layout_of(root).evaluation_report.read_text())
    assert report["aggregation"] == aggregation
    assert set(report["vote_metrics"]) == {"segment", "artery", "patient"}
    shown = result.asset_materializations_for_node("evaluation_report")[0].metadata
    assert shown["aggregation"].value == aggregation
    served = pd.read_parquet(layout_of(root).test_predictions)
    everyone_healthy = served[["patient_id", "branch", "view_index", "label"]].assign(pred=0)
    expected_baseline = evaluate(everyone_healthy, bootstrap=0)["segment"]["f1_weighted"]
    assert shown["segment_f1_majority_baseline"].value == pytest.approx(expected_baseline)
    assert "| segment |" in shown["aggregation_vs_vote"].value
    loaded = Tracking(f"sqlite:///{tmp_path}/mlflow.db", "eval-test").load(
        str(report["model_version"])
    )
    head = loaded.predictor.bundle.attention
    assert head is not None and loaded.predictor.bundle.aggregation == aggregation
    # the served (ONNX) decisions are the head's over the PyTorch network's embeddings
    views = evaluation.test_views(layout_of(root))
    _, embeddings = view_outputs(
        TorchEngine(loaded.predictor.network()), views, layout_of(root).images
    )
    outputs = loaded.predictor.bundle.outputs
    expected = branch_outputs(head, Bags.of(views, embeddings, outputs).embeddings)
    assert outputs.grades and head.classify.out_features == 6
    decided = served.groupby(["patient_id", "branch"], sort=True)
    assert (decided.branch_grade.nunique() == 1).all()
    assert decided.branch_grade.first().tolist() == expected.tolist()
    assert decided.branch_pred.first().tolist() == outputs.classes_of(expected).tolist()


def test_a_fold_ensemble_is_evaluated_explained_and_promoted_as_one_model(two_rounds, tmp_path):
    """Last in the module too: `ensemble_folds` registers two fold networks as one version,
    which the evaluation scores through its one predictor (ONNX checked against PyTorch)."""
    root = two_rounds[0]
    result = run(root, tmp_path, 3e-3, ensemble_folds=2, target="soft_grade")
    assert result.success
    trained = result.asset_materializations_for_node("stenosis_model")[0].metadata
    assert "| cad_rads | kappa_linear |" in trained["figures"].value
    scored = result.asset_materializations_for_node("test_predictions")[0].metadata
    assert scored["engine"].value == "onnxruntime x2"
    assert scored["onnx_vs_pytorch_views_changing_class"].value == 0
    report = json.loads(layout_of(root).evaluation_report.read_text())
    assert report["model_version"] == trained["model_version"].value
    assert report["cad_rads"] is not None
    assert (
        result.asset_materializations_for_node("explanations")[0].metadata["views_explained"].value
        > 0
    )
