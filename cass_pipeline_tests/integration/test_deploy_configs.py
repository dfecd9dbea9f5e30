"""Every configuration docs/deploy.md shows lives in deploy/ and is validated here, so the
document cannot rot: instance files by Dagster's instance schema and each configured class,
executor run configs by their executor's schema, asset run configs by the asset job."""

import configparser
import importlib
import shlex
import subprocess
from pathlib import Path

import click
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config

from cass_pipeline import cli
from cass_pipeline.defs.executors import executor_named

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
FILES = sorted(p for p in DEPLOY.rglob("*") if p.is_file())
INSTANCE_KEYS = {"storage", "run_launcher", "run_coordinator"}
PG_ENV = {
    "CASS_PG_HOST": "db.example.org",
    "CASS_PG_PORT": "5432",
    "CASS_PG_USER": "cass",
    "CASS_PG_PASSWORD": "secret",
    "CASS_DAGSTER_DB": "dagster",
}


def check(config_type, value) -> None:
    result = process_config(config_type, value)
    assert result.success, [e.message for e in result.errors]


def validate_instance(path: Path, tmp_path: Path) -> None:
    """Base settings + this file, as deploy.md says to combine them, through Dagster."""
    combined = yaml.safe_load((ROOT / "config" / "dagster_instance.yaml").read_text())
    combined |= yaml.safe_load(path.read_text())
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(combined))
    config, _ = dagster_instance_config(str(home))
    if "postgres" in config.get("storage", {}):
        from dagster_postgres import DagsterPostgresStorage

        check(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    for key in ("run_launcher", "run_coordinator"):
        if key in config:
            section = config[key]
            cls = getattr(importlib.import_module(section["module"]), section["class"])
            check(cls.config_type(), section.get("config", {}))


def validate_executor(config: dict) -> None:
    name = "dask" if "cluster" in config["execution"]["config"] else "k8s"
    check(executor_named(name).config_schema.config_type, config["execution"]["config"])


def validate_assets(config: dict) -> None:
    from cass_pipeline.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    check(job.run_config_schema.config_type, config)


def validate_unit(path: Path) -> None:
    """A systemd unit whose ExecStart is a `cass` command the CLI parses."""
    unit = configparser.ConfigParser(interpolation=None)
    unit.read_string(path.read_text())
    program, command, *args = shlex.split(unit["Service"]["ExecStart"])
    assert program.endswith("/cass"), f"{path.name} does not start cass"
    cli.main.commands[command].make_context(command, args)  # bad options raise here


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_deploy_file_is_valid(path: Path, tmp_path, monkeypatch):
    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    if path.suffix == ".sh":
        subprocess.run(["bash", "-n", str(path)], check=True)
        return
    if path.suffix == ".service":
        validate_unit(path)
        return
    assert path.suffix == ".yaml", f"no validator for {path.name}"
    config = yaml.safe_load(path.read_text())
    if INSTANCE_KEYS & config.keys():
        validate_instance(path, tmp_path)
    elif "execution" in config:
        validate_executor(config)
    else:
        assert "ops" in config, f"no validator for {path.name}"
        validate_assets(config)


def test_a_unit_with_a_wrong_option_is_caught(tmp_path):
    broken = tmp_path / "broken.service"
    broken.write_text((DEPLOY / "cass-dicom-node.service").read_text().replace("--port", "--prot"))
    with pytest.raises(click.UsageError):
        validate_unit(broken)


def test_a_broken_config_is_caught(tmp_path, monkeypatch):
    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (DEPLOY / "k8s" / "dagster-instance.yaml")
        .read_text()
        .replace("job_namespace", "job_namespaces")
    )
    with pytest.raises(AssertionError):
        validate_instance(broken, tmp_path)
    with pytest.raises(AssertionError):
        validate_assets({"ops": {"stenosis_model": {"config": {"nproc": "four"}}}})
    with pytest.raises(AssertionError):
        validate_executor({"execution": {"config": {"cluster": {"local": 3}}}})


def test_deploy_md_shows_every_deploy_file():
    text = (ROOT / "docs" / "deploy.md").read_text()
    missing = [str(p.relative_to(ROOT)) for p in FILES if str(p.relative_to(ROOT)) not in text]
    assert not missing, f"docs/deploy.md does not show {missing}"
