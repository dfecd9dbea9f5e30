"""MPR ingestion + cleanup at 512 px: images/s and peak memory beside the per-image floor,
the cleanup beside the overlay found by level alone, and the OCR pixel check's cost.

The floor is decode + cleanup of one image on one core (mean over whole series, read as
ingestion reads them, the series' persistent overlay included), times the number of cores:
what perfect parallel ingestion would reach. Goals: at least 70% of it, peak RSS under 2 GB,
the paper's 160,000 images projected under 20 minutes on this machine, the cleanup within
1.5x of the level rule (cleanup version 4), and the OCR check under 10% of the ingestion
time of the demo preset (`--demo-patients` of it, at 128 px).
Usage: python benchmarks/ingest_throughput.py [--copies 12] [--demo-patients 30]
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

from cass_pipeline.domain.imaging.cleanup import clean_masked
from cass_pipeline.domain.imaging.config import CleanupConfig, IngestConfig
from cass_pipeline.domain.imaging.ingest import ingest_cohort
from cass_pipeline.domain.imaging.readers import read_image
from cass_pipeline.domain.imaging.views import SourceFile, read_views
from cass_pipeline.domain.privacy import Pseudonyms
from cass_pipeline.domain.synthetic.cohort import generate_cohort
from cass_pipeline.domain.synthetic.config import preset
from cass_pipeline.layout import RawLayout

PAPER_IMAGES = 160_000


def per_image_seconds(series: list[list[Path]], config: IngestConfig) -> float:
    """Decode and cleanup as ingestion does it, series by series, on one thread: mean per
    image."""
    start, images = time.perf_counter(), 0
    for files in series:
        sources = [SourceFile(p.name, "series", p.read_bytes()) for p in files]
        views, _ = read_views(sources, "P", config)
        images += len(views)
    return (time.perf_counter() - start) / images


def level_rule_seconds(series: list[list[Path]], config: CleanupConfig) -> float:
    """The reference: decode, then the cleanup with the overlay found by level alone (every
    pixel at or above `text_level`, as cleanup version 4 did), mean per image."""
    timings = []
    for path in (p for files in series for p in files):
        start = time.perf_counter()
        frame = read_image(path.read_bytes(), path.suffix).frames[0]
        clean_masked(frame, frame >= config.text_level, config)
        timings.append(time.perf_counter() - start)
    return statistics.fmean(timings)


def ocr_share(patients: int, cores: int, root: Path) -> tuple[float, float, int]:
    """Ingest the first `patients` of the demo preset at 128 px on all cores: (seconds of the
    ingestion, OCR seconds per patient on one core, views read per patient)."""
    raw = root / "demo"
    generate_cohort(preset("demo", n_patients=patients), raw, workers=cores)
    config = IngestConfig(cleanup=CleanupConfig(size=128))
    start = time.perf_counter()
    results = list(ingest_cohort(raw, root / "demo-store", Pseudonyms(b"b"), config, cores))
    seconds = time.perf_counter() - start
    read = [r.pixel_text for r in results if r.pixel_text]
    ocr = statistics.fmean(r["seconds"] for r in read)
    return seconds, ocr, round(statistics.fmean(r["views_read"] for r in read))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=12, help="copies of the 2 paper patients")
    parser.add_argument("--demo-patients", type=int, default=30, help="demo patients for OCR")
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
        series = [sorted(f.glob("*.dcm")) for f in sorted({p.parent for p in files})][:12]
        floor_one = per_image_seconds(series, config)
        reference_one = level_rule_seconds(series, config.cleanup)
        start = time.perf_counter()
        results = ingest_cohort(raw, tmp / "store", Pseudonyms(b"bench"), config, workers=cores)
        images = sum(len(r.rows) for r in results)
        seconds = time.perf_counter() - start
        demo_seconds, ocr_one, ocr_views = ocr_share(args.demo_patients, cores, tmp)
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
    ocr_wall = ocr_one * args.demo_patients / cores
    share = ocr_wall / demo_seconds
    print(
        f"OCR pixel check, demo preset: {ocr_one * 1000:.0f} ms per patient on one core "
        f"({ocr_views} views read); {ocr_wall:.1f} s of the {demo_seconds:.1f} s ingestion of "
        f"{args.demo_patients} patients on {cores} cores ({share:.0%}; goal < 10%)"
    )


if __name__ == "__main__":
    main()
