"""Turnaround of a study sent to CASS: from the last C-STORE to the SR stored in the PACS.

A `paper`-preset patient (50 views a branch at 512 px, at most 8 branches) is sent by dcmtk's
storescu to `cass dicom-node`; the registered model (ShuffleNet V2 x1.0, random weights:
speed does not depend on them) scores it, and its result objects go by C-STORE to a real
Orthanc. Measured twice in one run:
1. the split: the node's hand-off after its quiet period, then the prediction and the
   sending called in this process (no Dagster);
2. end to end as a hospital runs it: the Dagster daemon with `inbox_sensor` on, which looks,
   queues a `predict_patient` run, and the run (a new process) scores and sends. Printed:
   the hand-off, the sensor's look to the run's creation, the run's start, the run, and
   the total from the last C-STORE to the SR in Orthanc.
Also the node's receive rate beside dcmtk's storescu to storescp in the same run.
Goal: under 60 s end to end on 2 cores.
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


def sr_in(pacs) -> bool:
    return any(
        pacs.get(f"/series/{s}")["MainDicomTags"]["Modality"] == "SR" for s in pacs.get("/series")
    )


def end_to_end(files: list[Path], tmp: Path, quiet: float) -> dict[str, float]:
    """The seconds of each stage through the Dagster daemon and a queued run."""
    import shutil

    from dagster import DagsterInstance, RunsFilter

    from cass_pipeline.domain.dicom.config import NodeSettings
    from cass_pipeline.domain.dicom.node import DicomNode
    from cass_pipeline_tests.servers import free_port, orthanc_server

    home, inbox = tmp / "dagster", tmp / "inbox"
    home.mkdir()
    shutil.copy(ROOT / "config" / "dagster_instance.yaml", home / "dagster.yaml")
    register(tmp, name="cass-stenosis")
    (tmp / "pacs").mkdir()
    node = DicomNode(
        NodeSettings(port=free_port(), quiet_seconds=quiet, allowed_aes="WORKSTATION"),
        inbox,
        tmp / "dicom",
    )
    bin_dir = Path(sys.executable).parent
    with orthanc_server(tmp / "pacs") as pacs:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "CASS_DATA_DIR": str(tmp / "data"),
            "CASS_INBOX_DIR": str(inbox),
            "CASS_DICOM_DIR": str(tmp / "dicom"),
            "CASS_DICOM_DESTINATIONS": pacs.destination,
            "CASS_PSEUDONYM_KEY": "turnaround benchmark",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
        }
        code = ["-m", "cass_pipeline.definitions"]
        log = (tmp / "daemon.log").open("w")
        daemon = subprocess.Popen(  # in tmp: the repository's .env names its own home
            [str(bin_dir / "dagster-daemon"), "run", *code],
            env=env,
            cwd=tmp,
            stdout=log,
            stderr=log,
        )
        node.start()
        try:
            started = subprocess.run(
                [str(bin_dir / "dagster"), "sensor", "start", "inbox_sensor", *code],
                env=env, cwd=tmp, capture_output=True, text=True,
            )  # fmt: skip
            if started.returncode:
                raise SystemExit(f"the sensor did not start: {started.stderr[-2000:]}")
            time.sleep(20)  # the daemon up and the sensor's first (empty) look done
            storescu(files, node.settings.ae_title, node.settings.port)
            sent_at = time.time()
            handed = wait_for(lambda: any(inbox.glob("study-*")), 120 + quiet, "the hand-off")
            handed_at = time.time() - (time.perf_counter() - handed)
            wait_for(lambda: sr_in(pacs), 600, "the SR in Orthanc (daemon log: daemon.log)")
            stored_at = time.time()
        finally:
            node.stop()
            daemon.terminate()
            daemon.wait(60)
    os.environ["DAGSTER_HOME"] = str(home)
    with DagsterInstance.get() as instance:
        (record,) = instance.get_run_records(RunsFilter(job_name="predict_patient"))
    return {
        "hand-off (the node's quiet period)": handed_at - sent_at,
        "the sensor's look, to the run queued": record.create_timestamp.timestamp() - handed_at,
        "the run's start (a new process)": record.start_time - record.create_timestamp.timestamp(),
        "the run (score, write, send)": record.end_time - record.start_time,
        "total, last C-STORE to the SR in Orthanc": stored_at - sent_at,
    }


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
            NodeSettings(port=free_port(), quiet_seconds=args.quiet, allowed_aes="WORKSTATION"),
            tmp / "inbox",
            tmp / "dicom",
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
                stored = wait_for(lambda: sr_in(pacs), 60, "the SR in Orthanc")
        finally:
            node.stop()
        reference = dcmtk_receive_seconds(files, tmp, free_port())
        (tmp / "e2e").mkdir()
        stages = end_to_end(files, tmp / "e2e", args.quiet)

    total = stored - sent_at
    print(
        f"turnaround, {len(files)} instances ({branches} branches x {args.views} views, "
        f"512 px), quiet period {args.quiet:.0f} s, {loaded.predictor.engine.name}"
    )
    print(f"  transfer (storescu to cass dicom-node)  {transfer:6.1f} s")
    print(f"  quiet period to the hand-off           {handed - sent_at:6.1f} s")
    print(f"  prediction (prediction.json, report.png) {scored - handed:4.1f} s")
    print(f"  results to Orthanc, SR stored          {stored - scored:6.1f} s")
    print(f"  total from the last C-STORE            {total:6.1f} s")
    print("end to end through the Dagster daemon (inbox_sensor, a queued predict_patient run)")
    for stage, seconds in stages.items():
        print(f"  {stage:<42} {seconds:6.1f} s")
    print("  (goal: total < 60 s)")
    print(
        f"  receive rate: cass dicom-node {len(files) / transfer:.0f} instances/s, dcmtk "
        f"storescp {len(files) / reference:.0f} instances/s (ratio "
        f"{reference / transfer:.2f})"
    )


if __name__ == "__main__":
    main()
