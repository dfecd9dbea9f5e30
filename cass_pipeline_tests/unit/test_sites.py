"""Synthetic sites: the external preset is another hospital (scanner, contrast, export and
report styles, other patients); the internal site is every cohort as before."""

import numpy as np
import pytest

from cass_pipeline.domain.synthetic.config import (
    EXTERNAL_SITE,
    REPORT_STYLES,
    SiteProfile,
    preset,
)
from cass_pipeline.domain.synthetic.coronary_tree import build_anatomy


def test_the_external_preset_is_another_site_with_other_patients():
    internal, external = preset("benchmark"), preset("benchmark-external")
    assert external.site == EXTERNAL_SITE and internal.site == SiteProfile()
    assert external.seed != internal.seed and external.export_style != internal.export_style
    assert set(external.site.report_styles) < set(REPORT_STYLES)
    assert external.fingerprint() != internal.fingerprint()


def test_the_sites_contrast_timing_sets_the_lumen():
    config = preset("benchmark-external")
    low, high = config.site.contrast_hu
    drawn = [build_anatomy(config, np.random.default_rng(k)).contrast_hu for k in range(20)]
    assert all(low <= hu <= high for hu in drawn)
    assert max(drawn) < max(
        build_anatomy(preset("benchmark"), np.random.default_rng(k)).contrast_hu for k in range(20)
    )


def test_a_site_with_an_unknown_report_style_is_refused():
    with pytest.raises(ValueError, match="report styles"):
        preset("tiny", site=SiteProfile(report_styles=("sonnet",)))
