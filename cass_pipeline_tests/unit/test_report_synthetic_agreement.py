"""On synthetic reports, parsed labels agree with the ground truth they were written from,
in every style the generator writes (templates, dictation, coded exports with a legend and
typing errors, addenda, histories, technique lines, non-assessable segments)."""

from collections import Counter

import numpy as np
import pytest

from cass_pipeline.domain.reports.pipeline import parse_chunk
from cass_pipeline.domain.synthetic.config import REPORT_STYLES, preset
from cass_pipeline.domain.synthetic.coronary_tree import build_anatomy
from cass_pipeline.domain.synthetic.reports import (
    make_identity,
    report_truth,
    write_report,
)


@pytest.mark.slow
def test_branch_and_cad_rads_agreement_on_synthetic_reports():
    config = preset("demo", difficulty="hard")
    truth, items = [], []
    for i in range(240):
        anatomy = build_anatomy(config, np.random.default_rng([3, i]))
        style = REPORT_STYLES[i % len(REPORT_STYLES)]
        report = write_report(
            anatomy,
            make_identity(np.random.default_rng([3, i, 1])),
            style,
            np.random.default_rng([3, i, 2]),
        )
        items.append((str(i), report.text))
        truth.append(report_truth(anatomy, report))
    agree = total = patients_agree = 0
    wrong, flags = [], Counter()
    for (pid, _, _, labels), (classes, category) in zip(
        parse_chunk(items, True), truth, strict=True
    ):
        for name, expected in classes.items():
            total += 1
            got = labels.branches.get(name)
            ok = got is not None and got.stenosis_class == expected
            agree += ok
            if not ok:
                wrong.append((pid, name, expected, got and got.stenosis_class))
        patients_agree += labels.cad_rads == category
        flags.update(flag.kind for flag in labels.flags)
    assert total > 1500
    assert agree == total, wrong[:10]
    assert patients_agree == len(truth)
    assert not any(
        flag.holds for _, _, _, labels in parse_chunk(items, True) for flag in labels.flags
    )
    # the styles are exercised: addenda revise, segments are not assessable, the coded
    # export's typing errors are read (its coded rows and legend are in every 7th report)
    assert flags["addendum revised a finding"] > 5 and flags["non-diagnostic segments"] > 5
    assert flags["word read despite a typing error"] > 5
