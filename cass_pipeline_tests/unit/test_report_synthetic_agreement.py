"""On synthetic reports, parsed labels agree with the ground truth they were written from."""

import numpy as np
import pytest

from cass_pipeline.domain.anatomy import cad_rads_category
from cass_pipeline.domain.reports.pipeline import parse_chunk
from cass_pipeline.domain.synthetic.config import preset
from cass_pipeline.domain.synthetic.coronary_tree import build_anatomy
from cass_pipeline.domain.synthetic.reports import REPORT_STYLES, make_identity, write_report


@pytest.mark.slow
def test_branch_and_cad_rads_agreement_on_synthetic_reports():
    config = preset("demo", difficulty="hard")
    truth, items = [], []
    for i in range(160):
        anatomy = build_anatomy(config, np.random.default_rng([3, i]))
        style = REPORT_STYLES[i % len(REPORT_STYLES)]
        text = write_report(
            anatomy,
            make_identity(np.random.default_rng([3, i, 1])),
            style,
            np.random.default_rng([3, i, 2]),
        )
        items.append((str(i), text))
        truth.append(anatomy)
    agree = total = patients_agree = 0
    for (_, _, _, labels), anatomy in zip(parse_chunk(items, True), truth, strict=True):
        for name, branch in anatomy.branches.items():
            total += 1
            got = labels.branches.get(name)
            agree += got is not None and got.stenosis_class == branch.stenosis_class
        expected = cad_rads_category({n: b.stenosis_pct for n, b in anatomy.branches.items()})
        patients_agree += labels.cad_rads == expected
    assert total > 1000
    assert agree / total >= 0.99
    assert patients_agree / len(truth) >= 0.98
