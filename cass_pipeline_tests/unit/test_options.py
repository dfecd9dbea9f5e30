"""Every default once: the CLI options and the Dagster config are generated from the domain's
settings dataclasses, so they offer the same fields, defaults and choices."""

from dataclasses import fields

import click
import pytest
import yaml
from click.testing import CliRunner

from cass_pipeline.cli import main
from cass_pipeline.defs.assets.imaging import MprConfig
from cass_pipeline.defs.assets.model import SplitConfig, TrainAssetConfig
from cass_pipeline.defs.demo import DEMO_RUN_CONFIG, demo_job
from cass_pipeline.domain.imaging.config import CleanupConfig
from cass_pipeline.domain.model.config import TrainConfig
from cass_pipeline.domain.model.splits import SplitSettings


def command_options(name: str) -> dict[str, click.Option]:
    command = main.commands[name]
    return {p.name: p for p in command.params if isinstance(p, click.Option)}


def test_cass_train_offers_every_training_field_with_the_domain_default():
    options = command_options("train")
    for spec in fields(TrainConfig):
        assert options[spec.name].default == spec.default, spec.name
    assert list(options["lr_schedule"].type.choices) == ["constant", "cosine"]
    assert list(options["aggregation"].type.choices) == [
        "vote",
        "attention",
        "attention_end_to_end",
    ]
    assert options["amp"].is_bool_flag and options["channels_last"].secondary_opts


def test_the_dagster_configs_default_to_the_domain():
    assert TrainAssetConfig().train_config() == TrainConfig()
    assert MprConfig().ingest_config().cleanup == CleanupConfig(size=128)  # the asset's size
    split = SplitConfig()
    assert (split.train, split.validation, split.test) == SplitSettings().ratios
    assert split.seed == SplitSettings.seed
    assert command_options("clean-mpr")["dilate_px"].default == CleanupConfig.dilate_px


def test_a_value_outside_the_choices_is_refused_by_both_front_ends():
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainAssetConfig(lr_schedule="linear")
    result = CliRunner().invoke(main, ["train", "--lr-schedule", "linear"])
    assert result.exit_code == 2 and "'linear' is not one of" in result.output


def test_the_demo_job_carries_the_demo_run_config():
    from cass_pipeline.definitions import defs

    expected = yaml.safe_load(DEMO_RUN_CONFIG.read_text())
    assert demo_job.config == expected
    assert defs.resolve_job_def("demo").executor_def.name == "in_process"
    assert expected["ops"]["stenosis_model"]["config"] == {
        "arch": "shufflenet_v2_x1_0",
        "lr": 0.002,
        "epochs": 8,
        "patience": 6,
    }
