"""The Makefile's Dagster instance: a DAGSTER_HOME set by the user wins; paths with spaces work."""

import os
import shutil
import subprocess
from pathlib import Path

from dotenv import dotenv_values

ROOT = Path(__file__).parents[2]
INSTANCE_YAML = ROOT / "config" / "dagster_instance.yaml"


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
    shutil.copytree(ROOT / "config", checkout / "config")
    make(checkout, ".env", "instance")
    repository_home = checkout / "data" / "dagster_home"
    assert (repository_home / "dagster.yaml").read_text() == INSTANCE_YAML.read_text()
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert dotenv_values(checkout / ".env") == {"DAGSTER_HOME": str(repository_home)}

    mine = tmp_path / "my instance"
    mine.mkdir()
    (mine / "dagster.yaml").write_text("run_monitoring:\n  enabled: true\n")
    make(checkout, "instance", DAGSTER_HOME=str(mine))
    assert (mine / "dagster.yaml").read_text() == "run_monitoring:\n  enabled: true\n"
    monkeypatch.setenv("DAGSTER_HOME", str(mine))
    assert dotenv_values(checkout / ".env") == {"DAGSTER_HOME": str(mine)}


def test_the_instance_fails_dead_runs_and_serialises_store_writers(tmp_path):
    import logging
    import time

    import dagster as dg
    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.storage.dagster_run import DagsterRunStatus
    from dagster._core.test_utils import create_run_for_test
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import EmptyWorkspaceTarget
    from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

    from cass_pipeline.definitions import defs

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # an earlier copy
    make(ROOT, "instance", DAGSTER_HOME=str(home))
    assert (home / "dagster.yaml").read_text() == INSTANCE_YAML.read_text()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        pools = instance.get_concurrency_config().pool_config
        assert (pools.default_pool_limit, pools.pool_granularity.value) == (1, "run")
        queue = instance.run_coordinator.get_run_queue_config()
        assert queue.should_block_op_concurrency_limited_runs
        # a burst of inbox studies queues two at a time, whatever else is queued (the run
        # queue daemon reads the instance's concurrency settings)
        (limit,) = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert (limit["key"], limit["value"], limit["limit"]) == ("cass/queue", "inbox", 2)
        # a run whose process was killed: STARTED, nobody left to finish it
        run = create_run_for_test(
            instance,
            job_name="demo",
            status=DagsterRunStatus.STARTING,
            tags={"dagster/max_runtime_seconds": "1"},
        )
        instance.report_dagster_event(
            DagsterEvent(DagsterEventType.RUN_START.value, job_name="demo"), run_id=run.run_id
        )
        time.sleep(1.5)
        with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as context:
            list(execute_run_monitoring_iteration(context, logging.getLogger("test")))
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    writers = {a.node_def.name: a.op.pool for a in defs.assets}
    assert {writers["raw_cohort"], writers["mpr_images"], writers["report_labels"]} == {
        "raw_folder",
        "image_store",
        "report_tables",
    }
