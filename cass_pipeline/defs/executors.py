"""Which Dagster executor runs the steps: `CASS_DAGSTER_EXECUTOR` (docs/deploy.md).

`default` is Dagster's own (a process per step, or in-process by run config); `dask` sends
each step to a Dask cluster (`dagster-dask`: a local cluster, or a scheduler's address in run
config); `k8s` runs each step as a Kubernetes job (`dagster-k8s`). The last two need the
`scale` extra.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from copy import copy
from dataclasses import dataclass

import dagster as dg


def executor_named(name: str) -> dg.ExecutorDefinition | None:
    """The executor for `name` (None: Dagster's default)."""
    if name == "default":
        return None
    if name not in EXECUTORS:
        choices = ["default", *EXECUTORS]
        raise ValueError(f"CASS_DAGSTER_EXECUTOR must be one of {choices}, not {name!r}")
    entry = EXECUTORS[name]
    if importlib.util.find_spec(entry.package) is None:
        raise ImportError(
            f"the {name} executor needs {entry.package.replace('_', '-')}: "
            "pip install 'cass-pipeline[scale]'"
        )
    return entry.build()


def k8s_executor() -> dg.ExecutorDefinition:
    """`dagster_k8s.k8s_job_executor`: each step a Kubernetes job."""
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor


def pool_safe_dask_executor() -> dg.ExecutorDefinition:
    """`dagster_dask.dask_executor`, handing Dask the run without its pool record: dask >=
    2024.12 walks every tuple it is given, and that record (our assets have pools) refuses to
    be walked ("Iteration is not allowed on `@record` RunOpConcurrency"). Pools act on whole
    runs before the executor starts (config/dagster_instance.yaml), so the steps lose nothing."""
    from dagster_dask.executor import DaskExecutor, dask_executor
    from dagster_shared.record import copy as copy_record

    class PoolSafeDaskExecutor(DaskExecutor):
        def execute(self, plan_context, execution_plan):
            run = plan_context.dagster_run
            if run.run_op_concurrency is not None:
                plan_context = copy(plan_context)
                plan_context._plan_data = plan_context.plan_data._replace(
                    dagster_run=copy_record(run, run_op_concurrency=None)
                )
            yield from super().execute(plan_context, execution_plan)

    @dg.executor(
        name="dask",
        config_schema=dask_executor.config_schema,
        requirements=dg.multiple_process_executor_requirements(),
    )
    def pool_safe_dask(init_context):
        ((cluster_type, cluster_configuration),) = init_context.executor_config["cluster"].items()
        return PoolSafeDaskExecutor(cluster_type, cluster_configuration)

    return pool_safe_dask


@dataclass(frozen=True)
class ExecutorEntry:
    """An executor past one machine: the package it needs and how it is built."""

    package: str
    build: Callable[[], dg.ExecutorDefinition]


#: The executors `CASS_DAGSTER_EXECUTOR` names besides `default`.
EXECUTORS = {
    "dask": ExecutorEntry("dagster_dask", pool_safe_dask_executor),
    "k8s": ExecutorEntry("dagster_k8s", k8s_executor),
}


@contextmanager
def cluster_pool() -> Iterator[tuple[Executor | None, str]]:
    """On a Dask worker: an executor over the whole cluster (this step's task secedes while it
    waits), so a step fans its work out across the workers; elsewhere None. With what it is.
    A Dask worker has imported `distributed`; other processes are not made to."""
    if "distributed" not in sys.modules:
        yield None, "local processes"
        return
    from distributed import get_worker, worker_client

    try:
        get_worker()
    except ValueError:  # distributed is loaded, but this is not a worker
        yield None, "local processes"
        return
    with worker_client() as client:
        workers = len(client.scheduler_info()["workers"])
        yield client.get_executor(), f"Dask cluster of {workers} workers"
