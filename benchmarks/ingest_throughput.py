"""MPR ingestion + cleanup at 512 px: images/s and peak memory beside the per-image floor.

The floor is decode + cleanup of one image on one core (mean over a sample, since the total
work is what the cores share), times the number of cores: what perfect parallel ingestion
would reach. Goal: at least 70% of it, peak RSS under 2 GB, and the paper's 160,000 images
projected under 20 minutes on this machine.
Usage: python benchmarks/ingest_throughput.py [--copies 12]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pydicom

from cass_pipeline.domain.imaging.cleanup import CleanupConfig, clean_image, clean_masked
from cass_pipeline.domain.imaging.config import IngestConfig
from cass_pipeline.domain.imaging.ingest import ingest_cohort
from cass_pipeline.domain.imaging.readers import read_image
from cass_pipeline.domain.privacy import Pseudonyms
from cass_pipeline.domain.synthetic.cohort import generate_cohort
from cass_pipeline.domain.synthetic.config import preset
from cass_pipeline.layout import RawLayout

PAPER_IMAGES = 160_000


def per_image_seconds(files: list[Path], config: CleanupConfig) -> float:
    timings = []
    for path in files:
        start = time.perf_counter()
        data = path.read_bytes()
        frame = read_image(data, path.suffix).frames[0]
        clean_image(frame, config)
        timings.append(time.perf_counter() - start)
    return statistics.fmean(timings)


def level_rule_seconds(files: list[Path], config: CleanupConfig) -> float:
    """The reference: decode, then today's cleanup with the overlay found by level alone
    (every pixel at or above `text_level`, as cleanup version 4 did), mean per image."""
    timings = []
    for path in files:
        start = time.perf_counter()
        frame = read_image(path.read_bytes(), path.suffix).frames[0]
        clean_masked(frame, frame >= config.text_level, config)
        timings.append(time.perf_counter() - start)
    return statistics.fmean(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=12, help="copies of the 2 paper patients")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    config = IngestConfig(cleanup=CleanupConfig(size=512))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / "source"
        generate_cohort(preset("paper", n_patients=2), source, workers=2)
        raw = tmp / "raw"
        copies = RawLayout(raw)
        for copy in range(args.copies):
            for case in RawLayout(source).mpr.iterdir():
                folder = copies.mpr_folder(f"{case.name}-{copy}")
                shutil.copytree(case, folder)
                for path in folder.rglob("*.dcm"):
                    ds = pydicom.dcmread(path)  # patients are keyed on their PatientID
                    ds.PatientID = f"{ds.PatientID}-{copy}"
                    ds.save_as(path)
        files = sorted(copies.mpr.rglob("*.dcm"))
        sample = files[:: max(1, len(files) // 150)]
        floor_one = per_image_seconds(sample, config.cleanup)
        reference_one = level_rule_seconds(sample, config.cleanup)
        start = time.perf_counter()
        results = ingest_cohort(raw, tmp / "store", Pseudonyms(b"bench"), config, workers=cores)
        images = sum(len(r.rows) for r in results)
        seconds = time.perf_counter() - start
    rate = images / seconds
    floor = cores / floor_one
    peak = (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1024
    )
    projected = PAPER_IMAGES / rate / 60
    print(f"{images} views from {len(files)} DICOM files at 512 px, {cores} cores")
    print(f"{'':<34}{'images/s':>10}")
    print(
        f"{'floor (1 image on 1 core x cores)':<34}{floor:>10.1f}   "
        f"({floor_one * 1000:.1f} ms per image)"
    )
    print(
        f"{'reference: overlay by level alone':<34}{cores / reference_one:>10.1f}   "
        f"({reference_one * 1000:.1f} ms per image; the cleanup takes "
        f"{floor_one / reference_one:.2f}x its time; goal <= 1.5x)"
    )
    print(
        f"{'ingestion, all cores':<34}{rate:>10.1f}   ({rate / floor:.0%} of the floor; goal 70%)"
    )
    print(f"peak RSS: {peak:.0f} MB (goal < 2048 MB)")
    print(f"paper preset, {PAPER_IMAGES} images: {projected:.1f} min projected (goal < 20 min)")


if __name__ == "__main__":
    main()
