"""Test-time augmentation: the mean logits of the view and its mirror image (and shifts
along the vessel), carried by the bundle so that evaluation and serving use it alike."""

import numpy as np
import pytest

from cass_pipeline.domain.imaging.config import CleanupConfig, IngestConfig
from cass_pipeline.domain.model.inference import augmented, mirrored, shifted
from cass_pipeline.domain.prediction.bundle import ModelBundle


class LeftHeavy:
    """A toy engine: logit 0 is the mean of the left half, logit 1 of the top rows."""

    name = "toy"

    def logits(self, images):
        half = images.shape[-1] // 2
        left = images[..., :half].mean(axis=(-2, -1))
        top = images[..., :4, :].mean(axis=(-2, -1))
        return np.stack([left, top, np.zeros_like(left)], axis=1).astype(np.float32)

    def outputs(self, images):
        logits = self.logits(images)
        return logits, logits[:, :2]


def views() -> np.ndarray:
    images = np.zeros((2, 64, 32), np.uint8)
    images[:, :, :16] = 200  # bright on the left
    images[:, :4, :] = 100
    return images


def test_flip_averages_the_view_and_its_mirror_image():
    engine = augmented(LeftHeavy(), "flip")
    plain = LeftHeavy().logits(views())
    flipped = LeftHeavy().logits(mirrored(views()))
    assert np.allclose(engine.logits(views()), (plain + flipped) / 2)
    assert augmented(LeftHeavy(), "none").logits(views()) == pytest.approx(plain)
    logits, embeddings = engine.outputs(views())
    assert embeddings.shape == (2, 2) and np.allclose(logits, engine.logits(views()))


def test_shifts_move_along_the_vessel_and_repeat_the_edge():
    images = np.arange(8 * 3, dtype=np.uint8).reshape(1, 8, 3)
    down = shifted(images, 2)
    assert (down[0, :2] == images[0, 0]).all() and (down[0, 2:] == images[0, :6]).all()
    up = shifted(images, -2)
    assert (up[0, :6] == images[0, 2:]).all() and (up[0, 6:] == images[0, 7]).all()
    four = augmented(LeftHeavy(), "flip_shift").logits(views())
    assert four.shape == (2, 3)


def test_an_unknown_augmentation_fails_at_once_and_the_bundle_keeps_its_own():
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        augmented(LeftHeavy(), "rotate")
    bundle = ModelBundle("shufflenet_v2_x0_5", IngestConfig(CleanupConfig(32)), tta="flip")
    assert bundle.to_json()["tta"] == "flip"
    assert np.allclose(
        bundle.engine(LeftHeavy()).logits(views()), augmented(LeftHeavy(), "flip").logits(views())
    )
