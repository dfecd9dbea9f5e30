"""Self-supervised pretraining: the views it may learn from, its loss, and weights that
training starts from."""

import pandas as pd
import torch

from cass_pipeline.domain.model.config import PretrainSettings
from cass_pipeline.domain.model.network import build_model
from cass_pipeline.domain.model.pretrain import nt_xent, pretrain, unlabelled_views
from cass_pipeline_tests.helpers import layout_of, write_training_data


def test_the_loss_is_low_when_each_view_finds_its_partner():
    torch.manual_seed(0)
    images = torch.randn(8, 16)
    paired = nt_xent(torch.cat([images, images + 0.01 * torch.randn(8, 16)]), 0.2)
    unpaired = nt_xent(torch.randn(16, 16), 0.2)
    assert paired < 0.5 < unpaired


def test_pretraining_never_sees_the_test_split_and_writes_weights_training_takes(tmp_path):
    root = write_training_data(tmp_path / "processed")
    layout = layout_of(root)
    manifest, splits = pd.read_parquet(layout.manifest), pd.read_parquet(layout.splits)
    unreported = manifest[manifest.patient_id == "P000"].assign(patient_id="P099")
    views = unlabelled_views(pd.concat([manifest, unreported]), splits, view_step=2)
    tested = set(splits.patient_id[splits.split == "test"])
    assert tested and not tested & set(views.patient_id)
    assert "P099" in set(views.patient_id)  # no report, no split: still a view to learn from
    assert set(views.view_index) == {0, 2}
    settings = PretrainSettings(arch="shufflenet_v2_x0_5", epochs=1, batch_size=8)
    result = pretrain(views, layout.images, settings, tmp_path / "ssl.pt")
    assert len(result.losses) == 1 and result.losses[0] > 0
    built = build_model("shufflenet_v2_x0_5", str(result.weights), outputs=6)
    assert built.weights_used.startswith("path (")
    state = torch.load(result.weights, weights_only=True)
    torch.testing.assert_close(built.model.conv1[0].weight, state["conv1.0.weight"])
