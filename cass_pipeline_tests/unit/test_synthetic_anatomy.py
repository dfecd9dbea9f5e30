"""The cohort's statistics and lesion geometry match what the generator promises."""

import numpy as np
import pytest

from cass_pipeline.domain.synthetic.config import preset
from cass_pipeline.domain.synthetic.coronary_tree import (
    Lesion,
    apparent_stenosis,
    build_anatomy,
)


@pytest.mark.slow
def test_class_balance_and_dominance_follow_the_paper():
    config = preset("demo")
    labels, right = [], 0
    for i in range(250):
        anatomy = build_anatomy(config, np.random.default_rng([11, i]))
        right += anatomy.dominance == "right"
        labels += [b.stenosis_class for b in anatomy.branches.values()]
    labels = np.array(labels)
    shares = [np.mean(labels == c) for c in ("no_stenosis", "non_significant", "significant")]
    np.testing.assert_allclose(shares, [0.72, 0.21, 0.07], atol=0.04)
    assert 0.78 < right / 250 < 0.92


def test_branches_are_smooth_tapering_and_side_branches_leave_their_parent():
    anatomy = build_anatomy(preset("demo"), np.random.default_rng(5))
    lad = anatomy.branches["LAD"]
    assert 80 < lad.length_mm < 160
    assert lad.radius[0] > lad.radius[1]
    turn = np.einsum("ij,ij->i", lad.frames.tangents[1:], lad.frames.tangents[:-1])
    assert turn.min() > np.cos(np.deg2rad(5))  # no kinks between 0.25 mm steps
    for name in ("D-1", "LCX"):
        if name in anatomy.branches:
            start = anatomy.branches[name].frames.points[0]
            parent = anatomy.branches["LAD" if name == "D-1" else "LM"].frames.points
            assert np.linalg.norm(parent - start, axis=1).min() < 3.0


def test_eccentric_lesion_is_missed_by_perpendicular_views_only():
    lesion = Lesion(40.0, "soft", 0.5, 8.0, angle_deg=30.0, eccentricity=1.0, high_risk=False)
    seen = apparent_stenosis(lesion, np.array([30.0, 210.0, 120.0, 300.0, 75.0]))
    assert seen[0] == seen[1] == 40.0  # cut along the plaque, both sides of the same plane
    assert seen[2] == seen[3] == 0.0  # perpendicular cut misses a fully eccentric plaque
    assert 0 < seen[4] < 40
    concentric = Lesion(40.0, "soft", 0.5, 8.0, 30.0, eccentricity=0.0, high_risk=False)
    np.testing.assert_allclose(apparent_stenosis(concentric, np.arange(0, 180, 20)), 40.0)
    assert not apparent_stenosis(None, np.arange(3)).any()
