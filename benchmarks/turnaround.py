"""Turnaround of a study sent to CASS: from the last C-STORE to the SR stored in the PACS.

A `paper`-preset patient (50 views a branch at 512 px, at most 8 branches) is sent by dcmtk's
storescu to `cass dicom-node`; the node hands the study on after its quiet period; the
registered model (ShuffleNet V2 x1.0, random weights: speed does not depend on them) scores
it as the inbox asset does, and its SR and key image go by C-STORE to a real Orthanc.
Printed: seconds of transfer, quiet period, prediction and sending, the total from the last
C-STORE, and the node's receive rate beside dcmtk's storescu to storescp in the same run.
Goal: under 60 s on 2 cores with a 10 s quiet period. The inbox sensor's look (every 30 s in
`dagster dev`) and a run's start come on top and are not measured here.
Usage: python benchmarks/turnaround.py [--views 50] [--branches 8] [--quiet 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The latency benchmark's patient and registry, and the tests' Orthanc.
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

from predict_latency import CORES, register  # noqa: E402

STORESCU, STORESCP = "/usr/bin/storescu", "/usr/bin/storescp"
#: dcmtk leaves Nagle's algorithm on unless TCP_NODELAY is set, which costs a delayed
#: acknowledgement (about 40 ms) per instance on loopback: measured 22 instances/s without it.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def eight_branch_study(tmp: Path, views: int, branches: int) -> Path:
    """A study of `branches` series of `views` 512-px views: the branches of the richest of
    a few `paper` patients, then others' branches it lacks, re-stamped into its study."""
    import pydicom

    from cass_pipeline.domain.synthetic.cohort import generate_cohort
    from cass_pipeline.domain.synthetic.config import preset
    from cass_pipeline.layout import RawLayout

    generate_cohort(preset("paper", n_patients=4, n_views=views), tmp / "cohort", workers=CORES)
    patients = sorted(
        RawLayout(tmp / "cohort").mpr.iterdir(), key=lambda p: -len(list(p.iterdir()))
    )
    first, study = patients[0], tmp / "sent"
    header = pydicom.dcmread(next(first.rglob("*.dcm")), stop_before_pixels=True)
    taken: set[str] = set()
    for patient in patients:
        for series in sorted(p for p in patient.iterdir() if p.is_dir()):
            if len(taken) == branches or series.name in taken:
                continue
            taken.add(series.name)
            series_uid = pydicom.uid.generate_uid()
            for path in sorted(series.glob("*.dcm")):
                dataset = pydicom.dcmread(path)
                for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate"):
                    setattr(dataset, keyword, getattr(header, keyword, ""))
                if patient != first:
                    dataset.SeriesInstanceUID = series_uid
                    dataset.SOPInstanceUID = pydicom.uid.generate_uid()
                    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
                (study / series.name).mkdir(parents=True, exist_ok=True)
                dataset.save_as(study / series.name / path.name)
    return study


def storescu(files: list[Path], ae_title: str, port: int) -> float:
    """Seconds dcmtk's storescu takes to send `files` in one association."""
    start = time.perf_counter()
    subprocess.run(
        [STORESCU, "-aet", "WORKSTATION", "-aec", ae_title, "127.0.0.1", str(port)]
        + [str(f) for f in files],
        check=True,
        capture_output=True,
        env=DCMTK_ENV,
    )
    return time.perf_counter() - start


def dcmtk_receive_seconds(files: list[Path], tmp: Path, port: int) -> float:
    """storescu to dcmtk's storescp on this machine: the reference receive rate."""
    out = tmp / "storescp"
    out.mkdir()
    server = subprocess.Popen(
        [STORESCP, "-aet", "STORESCP", "-od", str(out), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        return storescu(files, "STORESCP", port)
    finally:
        server.terminate()
        server.wait(30)


def wait_for(predicate, seconds: float, what: str) -> float:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return time.perf_counter()
        time.sleep(0.05)
    raise SystemExit(f"{what} did not happen in {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--views", type=int, default=50, help="views per branch")
    parser.add_argument("--branches", type=int, default=8, help="at most this many branches")
    parser.add_argument("--quiet", type=float, default=10.0, help="the node's quiet period, s")
    args = parser.parse_args()
    for tool in (STORESCU, STORESCP):
        if not Path(tool).is_file():
            raise SystemExit(f"{tool} missing: make env installs Debian's dcmtk")

    from cass_pipeline.domain.dicom.config import NodeSettings, SendSettings
    from cass_pipeline.domain.dicom.node import DicomNode
    from cass_pipeline.domain.dicom.outbox import send_results, write_results
    from cass_pipeline.domain.evaluation.config import CHAMPION
    from cass_pipeline.domain.prediction.folder import predict_folder
    from cass_pipeline.domain.prediction.outputs import output_writers, write_outputs
    from cass_pipeline_tests.servers import free_port, orthanc_server

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = sorted(eight_branch_study(tmp, args.views, args.branches).rglob("*.dcm"))
        branches = len({f.parent for f in files})
        loaded = register(tmp).load(CHAMPION)
        (tmp / "pacs").mkdir()
        node = DicomNode(
            NodeSettings(port=free_port(), quiet_seconds=args.quiet), tmp / "inbox", tmp / "dicom"
        )
        node.start()
        try:
            with orthanc_server(tmp / "pacs") as pacs:
                transfer = storescu(files, node.settings.ae_title, node.settings.port)
                sent_at = time.perf_counter()
                handed = wait_for(
                    lambda: any((tmp / "inbox").glob("study-*")), 120 + args.quiet, "the hand-off"
                )
                folder = next((tmp / "inbox").glob("study-*"))
                predicted = predict_folder(
                    loaded.predictor, folder, "P-bench", loaded.description()
                )
                written = write_outputs(
                    predicted, tmp / "predictions" / "P-bench", output_writers(["json", "png"])
                )
                scored = time.perf_counter()
                outbox = tmp / "dicom" / "outbox" / "P-bench"
                write_results(predicted.document, written["png"].data, folder, outbox, "CASS")
                (delivery,) = send_results(outbox, SendSettings(pacs.destination))
                assert delivery.complete, delivery.problem
                stored = wait_for(
                    lambda: any(
                        pacs.get(f"/series/{s}")["MainDicomTags"]["Modality"] == "SR"
                        for s in pacs.get("/series")
                    ),
                    60,
                    "the SR in Orthanc",
                )
        finally:
            node.stop()
        reference = dcmtk_receive_seconds(files, tmp, free_port())

    total = stored - sent_at
    print(
        f"turnaround, {len(files)} instances ({branches} branches x {args.views} views, "
        f"512 px), quiet period {args.quiet:.0f} s, {loaded.predictor.engine.name}"
    )
    print(f"  transfer (storescu to cass dicom-node)  {transfer:6.1f} s")
    print(f"  quiet period to the hand-off           {handed - sent_at:6.1f} s")
    print(f"  prediction (prediction.json, report.png) {scored - handed:4.1f} s")
    print(f"  SR and key image to Orthanc, stored     {stored - scored:6.1f} s")
    print(f"  total from the last C-STORE            {total:6.1f} s (goal < 60 s)")
    print(
        f"  receive rate: cass dicom-node {len(files) / transfer:.0f} instances/s, dcmtk "
        f"storescp {len(files) / reference:.0f} instances/s (ratio "
        f"{reference / transfer:.2f})"
    )


if __name__ == "__main__":
    main()
