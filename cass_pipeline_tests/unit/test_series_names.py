"""A site's own alias table is merged over the default one, and the merged table travels."""

import yaml

from cass_pipeline.domain.imaging.config import IngestConfig
from cass_pipeline.domain.imaging.series_names import (
    DEFAULT_ALIASES,
    alias_table,
    branch_of_series,
    closest_branch,
    merged_aliases,
)


def test_site_aliases_extend_and_override_the_default(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("RCA: [Rechte Kranzarterie]\nOM-1: [CX]\n")  # CX was LCX by default
    assert branch_of_series("Rechte Kranzarterie") is None
    assert branch_of_series("Rechte Kranzarterie", DEFAULT_ALIASES, site) == "RCA"
    assert branch_of_series("CX", DEFAULT_ALIASES, site) == "OM-1"
    assert branch_of_series("LAD", DEFAULT_ALIASES, site) == "LAD"
    config = IngestConfig(site_aliases=str(site))
    assert config.branch_of("rechte kranzarterie *") == "RCA"
    assert config.fingerprint() != IngestConfig().fingerprint()
    bundled = tmp_path / "bundle.yaml"  # what a registered model carries
    bundled.write_text(yaml.safe_dump(merged_aliases(DEFAULT_ALIASES, site)))
    assert alias_table(bundled) == alias_table(DEFAULT_ALIASES, site)


def test_an_unknown_name_gets_the_closest_branch_as_a_hint():
    assert closest_branch("LAD proximal") == "LAD"
    assert closest_branch("Calcium score") is None
