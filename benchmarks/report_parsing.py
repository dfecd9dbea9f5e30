"""Report parsing throughput: reports/s for 1,000 synthetic reports, one process and all cores.

Usage: python benchmarks/report_parsing.py [--reports 1000]
It also prints how often the labels match the ground truth the reports were written from.
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

from cass_pipeline.domain.cohort.index import index_cohort
from cass_pipeline.domain.privacy import Pseudonyms, pseudonymise
from cass_pipeline.domain.reports.pipeline import parse_cohort_reports
from cass_pipeline.domain.synthetic.config import REPORT_STYLES, preset
from cass_pipeline.domain.synthetic.coronary_tree import build_anatomy
from cass_pipeline.domain.synthetic.reports import (
    make_identity,
    report_truth,
    write_report,
)
from cass_pipeline.layout import RawLayout

TARGET = 300.0


def write_reports(raw: Path, n: int) -> dict[str, tuple]:
    """n reports under raw/reports from 200 distinct anatomies, each with its own identity
    and wording; returns the truth of each report (`report_truth`), keyed by the MRN its
    header states (a report without images is its own patient, keyed by that MRN)."""
    config = preset("demo")
    anatomies = [build_anatomy(config, np.random.default_rng([5, i])) for i in range(min(n, 200))]
    folder = RawLayout(raw).reports
    folder.mkdir(parents=True)
    truth = {}
    for i in range(n):
        identity = make_identity(np.random.default_rng([5, i, 1]))
        anatomy = anatomies[i % len(anatomies)]
        report = write_report(
            anatomy,
            identity,
            REPORT_STYLES[i % len(REPORT_STYLES)],
            np.random.default_rng([5, i, 2]),
        )
        (folder / f"R{i:05d}.txt").write_text(report.text)
        truth[identity.mrn] = report_truth(anatomy, report)
    return truth


def agreement(cohort, truth: dict[str, tuple], secret: bytes) -> tuple[float, float]:
    """Shares of branches whose class, and of patients whose CAD-RADS, match the truth."""
    by_pid = {pseudonymise(mrn, secret): expected for mrn, expected in truth.items()}
    branches = correct_branches = correct_patients = 0
    for report in cohort.reports:
        classes, category = by_pid[report.patient_id]
        for name, expected in classes.items():
            got = report.labels.branches.get(name)
            branches += 1
            correct_branches += got is not None and got.stenosis_class == expected
        correct_patients += report.labels.cad_rads == category
    return correct_branches / branches, correct_patients / len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=int, default=1000)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        truth = write_reports(raw, args.reports)
        rates = {}
        for workers in (1, cores):
            start = time.perf_counter()
            index = index_cohort(raw)
            cohort = parse_cohort_reports(index, Pseudonyms(b"benchmark"), workers=workers)
            rates[workers] = args.reports / (time.perf_counter() - start)
            assert len(cohort.reports) + len(cohort.rejects) == args.reports
        branch_share, patient_share = agreement(cohort, truth, b"benchmark")
    print(f"{args.reports} reports (de-identify + parse + label), {cores} cores")
    print(f"{'setting':<28}{'per second':>10}")
    print(f"{'1 process':<28}{rates[1]:>10.0f}")
    print(f"{f'{cores} processes':<28}{rates[cores]:>10.0f}")
    print(f"{'ideal (1 process x cores)':<28}{rates[1] * cores:>10.0f}")
    print(f"{'target':<28}{TARGET:>10.0f}")
    verdict = "meets" if rates[cores] >= TARGET else "misses"
    print(f"\n{verdict} the target; parallel efficiency {rates[cores] / (rates[1] * cores):.0%}")
    print(
        f"labels against the generator's ground truth: branch classes {branch_share:.2%} "
        f"(goal 99%), CAD-RADS categories {patient_share:.2%} (goal 98%)"
    )


if __name__ == "__main__":
    main()
