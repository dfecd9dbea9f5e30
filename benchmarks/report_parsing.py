"""Report parsing: throughput on 1,000 synthetic reports (one process and all cores) and how
right the labels are.

Usage: python benchmarks/report_parsing.py [--reports 1000] [--baseline GIT_REF]
Prints reports/s beside the target of 300 on 2 cores and the ideal (one process times the
cores); with --baseline, the same reports parsed by another commit's parser in the same run
(issue 40's goal: speed within 10%). Quality: the synthetic reports against the ground truth
they were written from; the hand-written corpus (goal 100% of branches); the held-out
real-style reports: branches right or held for review (goal 97%), wrong labels that would
train silently (goal 0), and reports held although every label was right (goal at most 1
per 25).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from cass_pipeline.domain.cohort.index import index_cohort
from cass_pipeline.domain.privacy import Pseudonyms, pseudonymise
from cass_pipeline.domain.reports.pipeline import parse_cohort_reports, parse_report_text
from cass_pipeline.domain.reports.vocabulary import BUILT_IN
from cass_pipeline.domain.synthetic.config import REPORT_STYLES, preset
from cass_pipeline.domain.synthetic.coronary_tree import build_anatomy
from cass_pipeline.domain.synthetic.reports import (
    make_identity,
    report_truth,
    write_report,
)
from cass_pipeline.layout import RawLayout

TARGET = 300.0
DATA = Path(__file__).parents[1] / "cass_pipeline_tests" / "data"
VOCABULARY = BUILT_IN.parent
#: Times the parser of the importable `cass_pipeline` on a folder of reports (run under
#: another commit's checkout for --baseline).
TIMING = """
import sys, time
from pathlib import Path
from cass_pipeline.domain.cohort.index import index_cohort
from cass_pipeline.domain.privacy import Pseudonyms
from cass_pipeline.domain.reports.pipeline import parse_cohort_reports
raw, n, workers = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
best = 0.0
for _ in range(3):
    start = time.perf_counter()
    parse_cohort_reports(index_cohort(raw), Pseudonyms(b"benchmark"), workers=workers)
    best = max(best, n / (time.perf_counter() - start))
print(best)
"""


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


def rate(raw: Path, n: int, workers: int, checkout: Path | None = None) -> float:
    """Best of three reports/s of the parser of `checkout` (default: this one)."""
    env = {**os.environ, "PYTHONPATH": str(checkout or Path(__file__).parents[1])}
    run = [sys.executable, "-c", TIMING, str(raw), str(n), str(workers)]
    return float(subprocess.run(run, env=env, check=True, capture_output=True, text=True).stdout)


def corpus_share() -> float:
    """Share of the hand-written corpus's branches read right."""
    right = total = 0
    for entry in yaml.safe_load((DATA / "report_corpus.yaml").read_text()):
        files = tuple(str(VOCABULARY / name) for name in entry.get("vocabulary", []))
        _, labels = parse_report_text(entry["text"], site_files=files)
        for name, expected in entry["branches"].items():
            total += 1
            got = labels.branches.get(name)
            right += (got.stenosis_class if got else "absent") == expected
    return right / total


def held_out_figures() -> dict[str, float]:
    """The held-out real-style reports: branches right or held, labels that are wrong and
    would train (report not held), reports held although every label was right."""
    entries = yaml.safe_load((DATA / "report_heldout.yaml").read_text())
    branches = right_or_held = wrong_trained = held_right = 0
    for entry in entries:
        _, labels = parse_report_text(entry["text"])
        held = any(flag.holds for flag in labels.flags)
        got = {name: lab.stenosis_class for name, lab in labels.branches.items()}
        expected = entry["branches"]
        right = {n for n, c in expected.items() if got.get(n, "absent") == c}
        wrong = {n for n, c in got.items() if c is not None and expected.get(n) != c}
        branches += len(expected)
        right_or_held += len(expected) if held else len(right)
        wrong_trained += 0 if held else len(wrong)
        held_right += held and len(right) == len(expected) and not wrong
    return {
        "reports": len(entries),
        "right_or_held": right_or_held / branches,
        "wrong_trained": wrong_trained,
        "held_right_per_25": 25 * held_right / len(entries),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--baseline", help="a git ref whose parser is timed beside this one")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "cohort"
        truth = write_reports(raw, args.reports)
        cohort = parse_cohort_reports(index_cohort(raw), Pseudonyms(b"benchmark"), workers=cores)
        assert len(cohort.reports) + len(cohort.rejects) == args.reports
        branch_share, patient_share = agreement(cohort, truth, b"benchmark")
        rates = {w: rate(raw, args.reports, w) for w in (1, cores)}
        baseline = {}
        if args.baseline:
            checkout = Path(tmp) / "baseline"
            root = Path(__file__).parents[1]
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(root),
                    "worktree",
                    "add",
                    "-q",
                    "--detach",
                    str(checkout),
                    args.baseline,
                ],
                check=True,
            )
            try:
                baseline = {w: rate(raw, args.reports, w, checkout) for w in (1, cores)}
            finally:
                subprocess.run(
                    ["git", "-C", str(root), "worktree", "remove", "--force", str(checkout)],
                    check=True,
                )
    print(f"{args.reports} reports (de-identify + parse + label), {cores} cores, best of 3")
    print(
        f"{'setting':<28}{'per second':>10}"
        + (f"{args.baseline:>14}{'ratio':>8}" if baseline else "")
    )
    for workers, name in ((1, "1 process"), (cores, f"{cores} processes")):
        line = f"{name:<28}{rates[workers]:>10.0f}"
        if baseline:
            line += f"{baseline[workers]:>14.0f}{rates[workers] / baseline[workers]:>8.2f}"
        print(line)
    print(f"{'ideal (1 process x cores)':<28}{rates[1] * cores:>10.0f}")
    print(f"{'target':<28}{TARGET:>10.0f}")
    verdict = "meets" if rates[cores] >= TARGET else "misses"
    print(f"\n{verdict} the target; parallel efficiency {rates[cores] / (rates[1] * cores):.0%}")
    print(
        f"synthetic reports against their ground truth: branch classes {branch_share:.2%} "
        f"(goal 99%), CAD-RADS categories {patient_share:.2%} (goal 98%)"
    )
    print(f"hand-written corpus: {corpus_share():.2%} of branches (goal 100%)")
    held = held_out_figures()
    print(
        f"held-out real-style reports ({held['reports']}): {held['right_or_held']:.1%} of "
        f"branches right or held (goal 97%), {held['wrong_trained']} wrong labels that would "
        f"train (goal 0), {held['held_right_per_25']:.1f} held although right per 25 (goal <= 1)"
    )


if __name__ == "__main__":
    main()
