"""The Makefile's Dagster instance: a DAGSTER_HOME set by the user wins; paths with spaces work."""

import os
import shutil
import subprocess
from pathlib import Path

from dotenv import dotenv_values

ROOT = Path(__file__).parents[2]


def make(checkout: Path, *targets: str, **env: str) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "MAKEFLAGS")}
    subprocess.run(
        ["make", "--no-print-directory", *targets],
        cwd=checkout,
        env={**environment, **env},
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_user_dagster_home_wins_and_a_path_with_a_space_works(tmp_path, monkeypatch):
    checkout = tmp_path / "my projects" / "cass"
    checkout.mkdir(parents=True)
    shutil.copy(ROOT / "Makefile", checkout / "Makefile")
    make(checkout, ".env", "instance")
    repository_home = checkout / "data" / "dagster_home"
    assert (repository_home / "dagster.yaml").read_text().startswith("telemetry:")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert dotenv_values(checkout / ".env") == {"DAGSTER_HOME": str(repository_home)}

    mine = tmp_path / "my instance"
    mine.mkdir()
    (mine / "dagster.yaml").write_text("run_monitoring:\n  enabled: true\n")
    make(checkout, "instance", DAGSTER_HOME=str(mine))
    assert (mine / "dagster.yaml").read_text() == "run_monitoring:\n  enabled: true\n"
    monkeypatch.setenv("DAGSTER_HOME", str(mine))
    assert dotenv_values(checkout / ".env") == {"DAGSTER_HOME": str(mine)}
