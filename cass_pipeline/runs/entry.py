"""Entry point for `torchrun --nproc-per-node N -m cass_pipeline.runs.entry SPEC.json`.

SPEC.json is a `TrainingSpec`. Each rank trains (DDP); rank 0 logs to MLflow and, when
Dagster launched this through Pipes, reports the materialisation back to it.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

from cass_pipeline.domain.model.train import distributed_context
from cass_pipeline.runs.training import TrainingSpec, run_training


def main(argv: list[str] | None = None) -> None:
    spec = TrainingSpec.from_json(Path((argv or sys.argv[1:])[0]).read_text())
    with ExitStack() as stack:
        pipes = None
        if "DAGSTER_PIPES_CONTEXT" in os.environ and distributed_context()[0] == 0:
            from dagster_pipes import open_dagster_pipes

            pipes = stack.enter_context(open_dagster_pipes())
        summary = run_training(
            spec.layout,
            spec.config,
            spec.tracking,
            spec.tags,
            spec.run_name,
            progress=pipes.log.info if pipes is not None else print,
        )
        if summary is not None and pipes is not None:
            pipes.report_asset_materialization(
                metadata={k: v for k, v in asdict(summary).items() if v is not None}
            )


if __name__ == "__main__":
    main()
