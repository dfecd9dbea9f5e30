"""Report parsing throughput: reports/s for 1,000 synthetic reports, one process and all cores.

Usage: python benchmarks/report_parsing.py [--reports 1000]
Reference: the target of 300 reports/s on 2 cores; also shown is the single-core rate times
the number of cores (the ideal the parallel run is compared with).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from cass_pipeline.domain.reports.pipeline import parse_report_folder
from cass_pipeline.domain.synthetic.config import preset
from cass_pipeline.domain.synthetic.coronary_tree import build_anatomy
from cass_pipeline.domain.synthetic.reports import REPORT_STYLES, make_identity, write_report

TARGET = 300.0


def write_reports(folder: Path, n: int) -> None:
    """n reports from 200 distinct anatomies, each with its own identity and wording."""
    config = preset("demo")
    anatomies = [build_anatomy(config, np.random.default_rng([5, i])) for i in range(min(n, 200))]
    for i in range(n):
        rng = np.random.default_rng([5, i, 2])
        text = write_report(
            anatomies[i % len(anatomies)],
            make_identity(np.random.default_rng([5, i, 1])),
            REPORT_STYLES[i % len(REPORT_STYLES)],
            rng,
        )
        (folder / f"R{i:05d}.txt").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=int, default=1000)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_reports(folder, args.reports)
        rates = {}
        for workers in (1, cores):
            start = time.perf_counter()
            cohort = parse_report_folder(folder, b"benchmark", workers=workers)
            rates[workers] = args.reports / (time.perf_counter() - start)
            assert len(cohort.reports) + len(cohort.rejects) == args.reports
    print(f"{args.reports} reports (de-identify + parse + label), {cores} cores")
    print(f"{'setting':<28}{'reports/s':>10}")
    print(f"{'1 process':<28}{rates[1]:>10.0f}")
    print(f"{f'{cores} processes':<28}{rates[cores]:>10.0f}")
    print(f"{'ideal (1 process x cores)':<28}{rates[1] * cores:>10.0f}")
    print(f"{'target':<28}{TARGET:>10.0f}")
    verdict = "meets" if rates[cores] >= TARGET else "misses"
    print(f"\n{verdict} the target; parallel efficiency {rates[cores] / (rates[1] * cores):.0%}")


if __name__ == "__main__":
    main()
