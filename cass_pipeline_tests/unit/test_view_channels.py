"""Neighbouring views as channels: which views fill them, in training and in serving."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cass_pipeline.domain.imaging.config import CleanupConfig, IngestConfig
from cass_pipeline.domain.model.config import TrainConfig
from cass_pipeline.domain.model.data import ViewDataset, model_views, neighbour_rows
from cass_pipeline.domain.model.explain import integrated_gradients
from cass_pipeline.domain.model.inference import softmax
from cass_pipeline.domain.model.network import build_model, to_model_input
from cass_pipeline.domain.prediction.bundle import BUNDLE_FILE, ModelBundle, write_bundle
from cass_pipeline.domain.prediction.predictor import Predictor, request_file
from cass_pipeline.runs.serving import example_request

NEIGHBOURS = ModelBundle(
    "shufflenet_v2_x0_5", IngestConfig(CleanupConfig(size=32)), view_channels="neighbours"
)


def shuffled_views() -> pd.DataFrame:
    """Two branches of three views, rows out of order; `image` is the row's store index."""
    rows = [("P1", "RCA", 2), ("P1", "LAD", 1), ("P1", "RCA", 0), ("P1", "LAD", 0)]
    rows += [("P1", "RCA", 1), ("P1", "LAD", 2)]
    frame = pd.DataFrame(rows, columns=["patient_id", "branch", "view_index"])
    return frame.assign(store_path="P1.npy", store_index=range(len(frame)), size=8, label=0)


def test_each_view_sits_between_its_neighbours_and_a_branch_end_repeats_itself():
    views = shuffled_views()
    rows = neighbour_rows(views)
    named = {
        (r.branch, r.view_index): [int(views.view_index[j]) for j in rows[i]]
        for i, r in enumerate(views.itertuples())
    }
    assert named[("LAD", 0)] == [0, 0, 1]
    assert named[("LAD", 1)] == [0, 1, 2]
    assert named[("RCA", 2)] == [1, 2, 2]
    # never a view of another branch
    assert all((views.branch[rows[i]] == views.branch[i]).all() for i in range(len(views)))
    images = np.arange(6, dtype=np.uint8)[:, None, None].repeat(8, 1).repeat(8, 2)
    assert model_views(images, views, "grey") is images
    stacked = model_views(images, views, "neighbours")
    assert stacked.shape == (6, 3, 8, 8)
    assert stacked[1, :, 0, 0].tolist() == [3, 1, 5]  # LAD 1 between LAD 0 and LAD 2


def test_the_training_dataset_gives_the_network_the_neighbouring_views(tmp_path):
    views = shuffled_views()
    store = np.stack([np.full((8, 8), 40 * k, np.uint8) for k in range(6)])
    np.save(tmp_path / "P1.npy", store)
    item = ViewDataset(views, tmp_path, channels="neighbours")[1][0]
    expected = to_model_input(store[[3, 1, 5]][None])[0]
    assert item.shape == (3, 8, 8) and torch.allclose(item, expected)
    grey = ViewDataset(views, tmp_path)[1][0]
    assert torch.allclose(grey, to_model_input(store[[1]])[0])


def test_neighbours_need_every_view_of_a_branch():
    with pytest.raises(ValueError, match="view_step 1"):
        TrainConfig(view_channels="neighbours", view_step=2)
    with pytest.raises(ValueError, match="unknown view_channels"):
        model_views(np.zeros((1, 4, 4), np.uint8), shuffled_views().head(1), "stack")


@pytest.mark.slow
def test_a_neighbours_model_is_served_on_the_views_it_was_trained_on(tmp_path):
    model = build_model("shufflenet_v2_x0_5", "none").model
    check = np.random.default_rng(1).integers(0, 255, (6, 3, 32, 32), dtype=np.uint8)
    assert write_bundle(model, NEIGHBOURS, tmp_path, check) <= 1e-4
    assert ModelBundle.read(tmp_path).view_channels == "neighbours"
    predictor = Predictor.load(tmp_path)  # ONNX Runtime, three views per input
    request = example_request(32, views=5)
    files = [request_file(i, row) for i, row in enumerate(request.to_dict("records"))]
    prediction = predictor.predict_files(files, "P1")
    stack = prediction.images["LAD"]
    inputs = stack[[[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 4]]]
    with torch.no_grad():
        expected = softmax(model.eval()(to_model_input(inputs)).numpy())
    served = prediction.rows("view")[["p_no_stenosis", "p_non_significant", "p_significant"]]
    np.testing.assert_allclose(served.to_numpy(), expected, atol=1e-4)
    attribution = integrated_gradients(model, inputs[1], int(expected[1].argmax()), steps=4)
    assert attribution.shape == (32, 32)
    # a model registered before view channels existed takes the grey view
    data = json.loads((tmp_path / BUNDLE_FILE).read_text())
    data.pop("view_channels")
    (tmp_path / BUNDLE_FILE).write_text(json.dumps(data))
    assert ModelBundle.read(tmp_path).view_channels == "grey"
