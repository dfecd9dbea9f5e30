"""A fold ensemble as one model: the members' mean logits, each attention head on its own
member's embeddings, one bundle folder that ONNX Runtime and PyTorch serve alike."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from cass_pipeline.domain.imaging.config import CleanupConfig, IngestConfig
from cass_pipeline.domain.model.aggregation import AttentionPooling, decide_branches
from cass_pipeline.domain.model.ensemble import EnsembleEngine, EnsembleHead, NetworkEnsemble
from cass_pipeline.domain.model.inference import TorchEngine, predict_outputs, softmax
from cass_pipeline.domain.model.network import build_model, to_model_input
from cass_pipeline.domain.prediction.bundle import ModelBundle, write_bundle
from cass_pipeline.domain.prediction.predictor import Predictor
from cass_pipeline.runs.serving import example_request

BUNDLE = ModelBundle("shufflenet_v2_x0_5", IngestConfig(CleanupConfig(size=32)))


def networks(count: int) -> list[torch.nn.Module]:
    torch.manual_seed(5)
    return [build_model("shufflenet_v2_x0_5", "none").model.eval() for _ in range(count)]


def views(count: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (count, 32, 32), dtype=np.uint8)


def test_the_ensemble_scores_the_mean_of_its_members_logits():
    members = networks(3)
    images = views(5)
    engine = EnsembleEngine([TorchEngine(m) for m in members])
    logits, embeddings = engine.outputs(images)
    own = [TorchEngine(m).outputs(images) for m in members]
    assert np.allclose(logits, np.mean([o[0] for o in own], axis=0), atol=1e-6)
    assert embeddings.shape == (5, sum(o[1].shape[1] for o in own))
    with torch.no_grad():  # the PyTorch module explained by Integrated Gradients agrees
        module = NetworkEnsemble(members)(to_model_input(images)).numpy()
    assert np.allclose(softmax(module), softmax(logits), atol=1e-5)


def test_one_member_is_the_member_itself():
    (member,) = networks(1)
    images = views(4)
    alone = predict_outputs(TorchEngine(member), images)[0]
    assert np.allclose(predict_outputs(EnsembleEngine([TorchEngine(member)]), images)[0], alone)


def test_each_attention_head_reads_its_own_members_embeddings():
    torch.manual_seed(1)
    heads = [AttentionPooling(4, 3).eval(), AttentionPooling(6, 3).eval()]
    bag = torch.randn(7, 10)
    with torch.no_grad():
        expected = (heads[0](bag[:, :4]) + heads[1](bag[:, 4:])) / 2
        assert torch.allclose(EnsembleHead(heads).eval()(bag), expected, atol=1e-6)
    table = pd.DataFrame({"patient_id": "P", "branch": ["LAD"] * 7, "pred": 0})
    decided = decide_branches(table, bag.numpy(), EnsembleHead(heads))
    assert (decided == int(expected.argmax())).all()  # the branch decided by the mean logits


@pytest.fixture(scope="module")
def ensemble_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ensemble")
    members = networks(2)
    bundle = replace(BUNDLE, members=("fold-0", "fold-1"))
    assert write_bundle(NetworkEnsemble(members), bundle, folder, views(6, 1)) <= 1e-4
    return folder, members


@pytest.mark.slow
def test_an_ensemble_bundle_serves_its_members_mean_on_both_runtimes(ensemble_folder):
    folder, members = ensemble_folder
    assert sorted(p.name for p in (folder / "fold-0").iterdir()) == ["model.onnx", "weights.pt"]
    images = views(9, 3)
    onnx = Predictor.load(folder)
    torch_ = Predictor.load(folder, "pytorch")
    assert onnx.bundle.members == ("fold-0", "fold-1") and onnx.engine.name == "onnxruntime x2"
    expected = predict_outputs(EnsembleEngine([TorchEngine(m) for m in members]), images)[0]
    assert np.abs(onnx.probabilities(images) - expected).max() < 1e-4
    assert np.abs(torch_.probabilities(images) - expected).max() < 1e-5
    assert isinstance(torch_.network(), NetworkEnsemble)
    table = onnx.predict_frame(example_request(32))
    assert table.loc[table.level == "patient", "stenosis_class"].notna().all()


def test_a_bundle_with_the_wrong_number_of_networks_is_refused(tmp_path):
    bundle = replace(BUNDLE, members=("fold-0", "fold-1", "fold-2"))
    with pytest.raises(ValueError, match="2 networks for 3 bundle members"):
        write_bundle(NetworkEnsemble(networks(2)), bundle, tmp_path, views(2))
