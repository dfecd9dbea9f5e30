"""The code location loads the way `dagster dev` and the CLI load it."""

import subprocess
import sys
import tomllib
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner

from cass_pipeline.cli import main
from cass_pipeline.definitions import build_definitions, defs
from cass_pipeline.settings import CassSettings, project_root

ROOT = project_root()
BIN = Path(sys.executable).parent


def test_definitions_load_with_resources():
    dg.Definitions.validate_loadable(defs)
    resources = defs.resources
    assert {"paths", "mlflow_tracking", "pseudonyms"} <= set(resources)
    assert resources["mlflow_tracking"].tracking_uri.startswith("sqlite:////")


def test_definitions_follow_overridden_settings(tmp_path):
    custom = build_definitions(CassSettings.from_env({"CASS_DATA_DIR": str(tmp_path)}))
    assert custom.resources["paths"].raw_dir == str(tmp_path / "raw")


def test_pyproject_and_workspace_name_the_same_module():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    entry = workspace["load_from"][0]["python_module"]
    assert entry["module_name"] == tool["module_name"] == "cass_pipeline.definitions"
    assert entry["location_name"] == tool["code_location_name"]


@pytest.mark.slow
def test_dagster_validates_the_workspace(tmp_path):
    env = {"DAGSTER_HOME": str(tmp_path), "PATH": str(BIN), "HOME": str(tmp_path)}
    result = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cass_pipeline" in result.stdout + result.stderr


def test_cli_help_and_info():
    runner = CliRunner()
    assert "info" in runner.invoke(main, ["--help"]).output
    result = runner.invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    settings = CassSettings.from_env()
    assert settings.tracking_uri in result.output
    assert str(settings.dagster_home) in result.output
    assert "Training device: cpu" in result.output or "cuda" in result.output
    assert "torchvision" in result.output


def test_module_entry_point_has_every_command():
    """`python -m cass_pipeline.cli` is what torchrun runs; it must know all commands."""
    result = subprocess.run(
        [sys.executable, "-m", "cass_pipeline.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for command in (
        "info",
        "synth",
        "parse-report",
        "clean-mpr",
        "train",
        "lr-find",
        "evaluate",
        "explain",
    ):
        assert command in result.stdout


def test_console_script_is_installed():
    result = subprocess.run(
        [str(BIN / "cass"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "cass" in result.stdout
