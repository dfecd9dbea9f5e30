"""Synthetic cohort throughput: patients/s and peak memory, demo preset and a paper slice.

Usage: python benchmarks/synth_throughput.py [--paper-patients 40] [--workers N]
Peak memory is the largest resident set of the parent or any worker process (ru_maxrss), so it
shows whether memory grows with the cohort (it must not: patients are streamed).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from cass_pipeline.domain.synthetic.cohort import generate_cohort
from cass_pipeline.domain.synthetic.config import preset


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def run(name: str, n_patients: int, workers: int) -> dict:
    config = preset(name, n_patients=n_patients)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = generate_cohort(config, Path(tmp), workers=workers)
        seconds = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 2**20
    return {
        "preset": name,
        "patients": n_patients,
        "images": summary["images"],
        "seconds": seconds,
        "patients_per_s": n_patients / seconds,
        "images_per_s": summary["images"] / seconds,
        "disk_mb": size_mb,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--demo-patients", type=int, default=preset("demo").n_patients)
    parser.add_argument("--paper-patients", type=int, default=40)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    rows = [
        run("demo", args.demo_patients, args.workers),
        run("paper", args.paper_patients, args.workers),
    ]
    print(f"{args.workers} workers on {os.cpu_count()} cores")
    print(
        f"{'preset':<7}{'patients':>9}{'images':>8}{'s':>8}{'patients/s':>11}{'images/s':>9}"
        f"{'disk MB':>9}{'peak RSS MB':>12}"
    )
    for r in rows:
        print(
            f"{r['preset']:<7}{r['patients']:>9}{r['images']:>8}{r['seconds']:>8.1f}"
            f"{r['patients_per_s']:>11.2f}{r['images_per_s']:>9.1f}{r['disk_mb']:>9.1f}"
            f"{r['peak_rss_mb']:>12.0f}"
        )
    demo, paper = rows
    print(
        f"\nreference: the whole demo pipeline has a 10 min budget; synthesis takes "
        f"{demo['seconds'] / 600:.0%} of it."
    )
    full = preset("paper").n_patients / paper["patients_per_s"] / 3600
    disk_gb = paper["disk_mb"] / paper["patients"] * preset("paper").n_patients / 1024
    print(
        f"projection: the full paper preset ({preset('paper').n_patients} patients) "
        f"takes {full:.1f} h on this machine, {disk_gb:.1f} GB."
    )


if __name__ == "__main__":
    main()
