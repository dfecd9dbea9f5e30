"""The prediction path: roll-up rules, request rows, the document, the ONNX export check."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from cass_pipeline.domain.imaging.config import CleanupConfig, IngestConfig
from cass_pipeline.domain.imaging.views import SourceFile
from cass_pipeline.domain.model.calibration import Calibration
from cass_pipeline.domain.model.network import build_model
from cass_pipeline.domain.prediction.bundle import ModelBundle, write_bundle
from cass_pipeline.domain.prediction.document import prediction_document
from cass_pipeline.domain.prediction.picture import decisive_views
from cass_pipeline.domain.prediction.predictor import PatientPrediction, Predictor
from cass_pipeline.domain.prediction.rollup import roll_up
from cass_pipeline.runs.serving import example_request

BUNDLE = ModelBundle("shufflenet_v2_x0_5", IngestConfig(CleanupConfig(size=32)))


def view(branch, index, p):
    classes = ("no_stenosis", "non_significant", "significant")
    return {
        "branch": branch,
        "view_index": index,
        "source": f"{branch}/{index}.dcm",
        "stenosis_class": classes[int(np.argmax(p))],
        "p_no_stenosis": p[0],
        "p_non_significant": p[1],
        "p_significant": p[2],
    }


def test_roll_up_votes_takes_the_most_severe_branch_and_artery():
    views = pd.DataFrame(
        [
            # LAD: a 1-1 tie between no and significant goes to significant
            view("LAD", 0, (0.7, 0.2, 0.1)),
            view("LAD", 1, (0.2, 0.2, 0.6)),
            # D-1: significant too, more confident: it decides the LAD artery
            view("D-1", 0, (0.1, 0.1, 0.8)),
            view("D-1", 1, (0.1, 0.1, 0.8)),
            # RCA: majority non-significant
            view("RCA", 0, (0.2, 0.7, 0.1)),
            view("RCA", 1, (0.2, 0.6, 0.2)),
            view("RCA", 2, (0.6, 0.3, 0.1)),
        ]
    )
    rejects = [{"branch": "LCX", "source_path": "LCX/9.dcm", "reason": "constant image"}]
    table = roll_up("P1", views, rejects, BUNDLE)
    branches = table[table.level == "branch"].set_index("branch")
    assert list(branches.index) == ["LAD", "D-1", "RCA"]  # anatomical order
    assert branches.loc["LAD", "stenosis_class"] == "significant"
    assert branches.loc["LAD", "p_significant"] == pytest.approx(0.35)  # mean of its views
    assert branches.loc["RCA", "stenosis_class"] == "non_significant"
    arteries = table[table.level == "artery"].set_index("artery")
    assert arteries.loc["LAD", "decided_by"] == "D-1"
    assert arteries.loc["LAD", "p_significant"] == pytest.approx(0.8)
    patient = table[table.level == "patient"].iloc[0]
    assert (patient.stenosis_class, patient.cad_rads, patient.decided_by) == (
        "significant",
        "3-5",
        "LAD",
    )
    assert patient.views_used == 7
    rejected = table[table.level == "rejected"].iloc[0]
    assert (rejected.branch, rejected.artery, rejected.reason) == ("LCX", "LCX", "constant image")
    assert set(table.patient) == {"P1"}


def test_referral_follows_the_threshold_on_the_worst_branch_score():
    views = pd.DataFrame(
        [
            view("LAD", 0, (0.3, 0.5, 0.2)),
            view("LAD", 1, (0.2, 0.4, 0.4)),  # LAD: non-significant, P(significant) 0.3
            view("RCA", 0, (0.8, 0.1, 0.1)),
        ]
    )
    triaged = replace(BUNDLE, calibration=Calibration(referral_threshold=0.25))
    table = roll_up("P1", views, [], triaged).set_index("level")
    patient = table.loc["patient"]
    assert patient.stenosis_class == "non_significant"
    assert patient.significant_score == pytest.approx(0.3) and patient.refer
    branches = table.loc["branch"].set_index("branch")
    assert branches.refer.to_dict() == {"LAD": True, "RCA": False}
    unfitted = roll_up("P1", views, [], BUNDLE).set_index("level").loc["patient"]
    assert not unfitted.refer  # without a threshold, only a significant class refers


def test_a_patient_without_usable_views_gets_a_reason_not_a_class():
    rejects = [{"branch": None, "source_path": "x.txt", "reason": "not a DICOM file"}]
    table = roll_up("P2", pd.DataFrame(), rejects, BUNDLE)
    document = prediction_document(table, {})
    assert document["patient_class"] is None and document["note"] == "no view could be used"
    assert document["rejected"] == [
        {"source": "x.txt", "branch": None, "reason": "not a DICOM file"}
    ]


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle")
    model = build_model("shufflenet_v2_x0_5", "none").model
    images = np.random.default_rng(1).integers(0, 255, (6, 32, 32), dtype=np.uint8)
    assert write_bundle(model, BUNDLE, folder, images) <= 1e-4
    return folder


@pytest.mark.slow
def test_onnx_runtime_and_pytorch_agree_within_1e_4(predictor):
    images = np.random.default_rng(2).integers(0, 255, (20, 32, 32), dtype=np.uint8)
    onnx = Predictor.load(predictor).probabilities(images)
    torch_ = Predictor.load(predictor, "pytorch").probabilities(images)
    assert np.abs(onnx - torch_).max() < 1e-4
    assert (onnx.argmax(1) == torch_.argmax(1)).all()


@pytest.mark.slow
def test_a_bundle_exported_before_embeddings_still_votes(predictor, tmp_path):
    """Registered models whose ONNX graph gives logits only (no embeddings output)."""
    import shutil

    import torch

    from cass_pipeline.domain.model.inference import OnnxEngine
    from cass_pipeline.domain.model.network import to_model_input

    class LogitsOnly(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, images):
            return self.network(to_model_input(images))

    folder = tmp_path / "old"
    shutil.copytree(predictor, folder)
    network = Predictor.load(predictor, "pytorch").network()
    torch.onnx.export(
        LogitsOnly(network).eval(),
        (torch.zeros(2, 32, 32, dtype=torch.uint8),),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},),
    ).save(str(folder / "model.onnx"))
    images = np.random.default_rng(4).integers(0, 255, (5, 32, 32), dtype=np.uint8)
    logits, embeddings = OnnxEngine(folder / "model.onnx").outputs(images)
    assert logits.shape == (5, 3) and embeddings.shape == (5, 0)
    old = Predictor.load(folder).predict_frame(example_request(32))
    new = Predictor.load(predictor).predict_frame(example_request(32))
    assert old.stenosis_class.tolist() == new.stenosis_class.tolist()


@pytest.mark.slow
def test_an_export_that_disagrees_with_the_network_is_refused(tmp_path, monkeypatch):
    import cass_pipeline.domain.prediction.bundle as prediction

    other = build_model("shufflenet_v2_x0_5", "none").model
    real_export = prediction.export_onnx
    monkeypatch.setattr(prediction, "export_onnx", lambda m, s, p, c: real_export(other, s, p, c))
    model = build_model("shufflenet_v2_x0_5", "none").model
    images = np.random.default_rng(3).integers(0, 255, (6, 32, 32), dtype=np.uint8)
    with pytest.raises(ValueError, match="ONNX export disagrees"):
        write_bundle(model, BUNDLE, tmp_path, images)


@pytest.mark.slow
def test_request_rows_stated_branches_unknown_names_and_patients(predictor):
    model = Predictor.load(predictor)
    request = example_request(32)  # four PNG views stated as LAD
    other = example_request(32).assign(branch="LAD-X", patient="B")
    table = model.predict_frame(pd.concat([request, other], ignore_index=True))
    first = table[table.patient == "patient"]
    assert first[first.level == "branch"].branch.tolist() == ["LAD"]
    assert first[first.level == "view"].source.tolist() == [
        f"example/{i:03d}.png" for i in range(4)
    ]
    second = table[table.patient == "B"]
    assert second[second.level == "patient"].reason.tolist() == ["no view could be used"]
    assert set(second[second.level == "rejected"].reason) == {"unknown branch 'LAD-X'"}
    by_series = model.predict_frame(request.drop(columns="branch").assign(series_name="LAD *"))
    assert by_series[by_series.level == "branch"].branch.tolist() == ["LAD"]
    with pytest.raises(ValueError, match="unknown request columns"):
        model.predict_frame(request.assign(name="Doe^John"))


@pytest.mark.slow
def test_document_counts_votes_and_names_the_decisive_view(predictor):
    empty = Predictor.load(predictor).predict_files([], "P3")
    assert prediction_document(empty.table, {})["branches"] == {}
    views = pd.DataFrame(
        [
            view("LAD", 0, (0.9, 0.05, 0.05)),
            view("LAD", 1, (0.1, 0.2, 0.7)),
            view("LAD", 2, (0.1, 0.1, 0.8)),
            view("LAD", 3, (0.2, 0.1, 0.7)),
        ]
    )
    prediction = PatientPrediction("P4", roll_up("P4", views, [], BUNDLE), {})
    lad = prediction_document(prediction.table, {"version": 1})["branches"]["LAD"]
    assert lad["votes"] == {"no_stenosis": 1, "non_significant": 0, "significant": 3}
    assert [v["view_index"] for v in lad["views"]] == [0, 1, 2, 3]
    assert decisive_views(prediction) == {"LAD": (2, 2)}  # the surest vote for significant


@pytest.mark.slow
def test_files_without_a_stated_order_keep_their_names_order(predictor):
    files = [
        SourceFile(row.source, "LAD", row.image)
        for row in example_request(32).iloc[::-1].itertuples()
    ]
    table = Predictor.load(predictor).predict_files(files, "P5").table
    views = table[table.level == "view"]
    assert views.source.tolist() == [f"example/{i:03d}.png" for i in range(4)]
    assert views.view_index.tolist() == [0, 1, 2, 3]


def test_the_entry_of_a_model_registered_before_the_move_still_finds_its_class(monkeypatch):
    import mlflow.models

    from cass_pipeline.runs.serving import StenosisModel

    entry = (  # the pyfunc entry that models registered up to 8958820 carry
        "import mlflow.models\n\nfrom cass_pipeline.serving import StenosisModel\n\n"
        "mlflow.models.set_model(StenosisModel())\n"
    )
    models = []
    monkeypatch.setattr(mlflow.models, "set_model", models.append)
    exec(compile(entry, "pyfunc_entry.py", "exec"), {})
    assert len(models) == 1 and isinstance(models[0], StenosisModel)


def test_only_the_chosen_outputs_are_written_and_an_unknown_one_is_refused(tmp_path):
    from cass_pipeline.domain.prediction.outputs import (
        PredictedPatient,
        output_writers,
        write_outputs,
    )

    document = {"schema": "cass-prediction/1", "patient": "P1"}
    written = write_outputs(PredictedPatient(None, document), tmp_path, output_writers(["json"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prediction.json"]
    assert json.loads(written["json"].path.read_bytes()) == document
    assert written["json"].path.read_bytes() == written["json"].data
    with pytest.raises(ValueError, match=r"unknown output formats \['pdf'\]"):
        output_writers(["json", "pdf"])
