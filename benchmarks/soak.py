"""Soak: ingestion rewrites, REST requests and `cass synth` at once, on 127.0.0.1 only.

For `--seconds` (at most 300) three things run against one data folder: a loop of image
ingestions (Dagster's `mpr_images` with its store check, the image size alternating 32 / 48
px so that every store is rewritten), a loop of `cass synth` runs each adding a patient to
the same `raw/`, and two REST clients of `cass serve` (a valid patient, and every fifth
request a malformed body with a planted name). A reader pins the published generation over
and over and checks that each patient's store holds its manifest rows. Printed: requests by
status with p50 / p95 latency, generations published, reader samples and disagreements,
synth and ingestion runs, processes left behind. Goal: no disagreement, no 5xx, no leak.

`--until-events` goes on past `--seconds` until every kind of event has happened enough to
judge (EVENTS: generations published and seen by the reader, malformed requests refused,
synth runs...) or `--deadline` seconds have passed: on a busy or slow machine the soak takes
longer instead of judging too little (the test suite runs it so).
Usage: python benchmarks/soak.py [--seconds 300] [--until-events] [--deadline 480] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from predict_latency import register  # the same untrained champion, at another size

PLANTED = "SOAKPLANTED^NAME"
#: The least of each event that `--until-events` waits for.
EVENTS = {
    "requests": 10,
    "malformed_refused": 1,
    "generations_published": 2,
    "generations_seen_by_the_reader": 2,
    "reader_samples": 11,
    "synth_runs": 1,
}
# Each loop runs until the stop file exists and writes one line per finished run.
INGEST_LOOP = """
import json, sys
from pathlib import Path
import dagster as dg
from cass_pipeline.defs.assets import imaging
from cass_pipeline.defs.resources import CassPaths, PseudonymKey, RawFormat
raw, processed, stop, done = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
runs = []
while not stop.exists():
    size = 32 if len(runs) % 2 else 48
    result = dg.materialize(
        [imaging.mpr_images, imaging.mpr_store_matches_manifest],
        resources={"paths": CassPaths(raw_dir=raw, processed_dir=processed),
                   "pseudonyms": PseudonymKey(key_file=processed + "/key"),
                   "raw_format": RawFormat()},
        run_config=dg.RunConfig({"mpr_images": {"config": {"image_size": size, "workers": 2}}}),
        raise_on_error=False)
    checks = [c.passed for c in result.get_asset_check_evaluations()]
    runs.append({"success": result.success and all(checks), "size": size})
    with done.open("a") as progress:
        progress.write(json.dumps(runs[-1]) + "\\n")
print(json.dumps(runs))
"""
SYNTH_LOOP = """
import json, sys, time
from pathlib import Path
from cass_pipeline.domain.synthetic.cohort import generate_cohort
from cass_pipeline.domain.synthetic.config import preset
raw, stop, done, patients = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), 4
runs = 0
while not stop.exists():
    patients += 1
    generate_cohort(preset("tiny", n_patients=patients), raw, workers=1)
    runs += 1
    with done.open("a") as progress:
        progress.write("{}\\n")
    time.sleep(2)
print(json.dumps({"runs": runs, "patients": patients}))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def patient_request(folder: Path) -> dict:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    rows = [
        [base64.b64encode(p.read_bytes()).decode(), p.parent.name, f"{i:03d}.dcm"]
        for i, p in enumerate(files)
    ]
    return {"dataframe_split": {"columns": ["image", "series_name", "source"], "data": rows}}


def malformed_request(folder: Path) -> bytes:
    encoded = base64.b64encode(next(folder.rglob("*.dcm")).read_bytes()).decode()
    return (
        f'{{"dataframe_split": {{"columns": ["image"], "data": [["{encoded}", "{PLANTED}"'.encode()
    )


def serve(tmp: Path, tracking) -> tuple[subprocess.Popen, str, Path]:
    """`cass serve` of the champion on a free port, once it answers."""
    import requests

    port, log = free_port(), tmp / "serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri, "CASS_DATA_DIR": str(tmp)}
    cass = Path(sys.executable).with_name("cass")
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(cass), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if requests.get(f"{url}/ping", timeout=1).ok:
                return server, url, log
        except requests.ConnectionError:
            time.sleep(0.5)
    raise RuntimeError(f"cass serve did not answer: {log.read_text()[-2000:]}")


def client(url: str, valid: dict, malformed: bytes, stop: threading.Event, answers: list) -> None:
    import requests

    headers = {"Content-Type": "application/json"}
    body = json.dumps(valid).encode()
    count = 0
    while not stop.is_set():
        count += 1
        bad = count % 5 == 0
        start = time.perf_counter()
        response = requests.post(
            f"{url}/invocations", data=malformed if bad else body, headers=headers, timeout=120
        )
        answers.append(
            {
                "status": response.status_code,
                "seconds": time.perf_counter() - start,
                "valid": not bad,
                "echoed": PLANTED.split("^")[0] in response.text,
            }
        )


def reader(processed: Path, stop: threading.Event, samples: list) -> None:
    """Pin the published generation, check every store against the manifest, again."""
    import pandas as pd

    from cass_pipeline.domain.generations import GenerationMissingError, held_layout
    from cass_pipeline.layout import DataLayout

    layout = DataLayout(processed.parent / "raw", processed)
    while not stop.is_set():
        try:
            with held_layout(layout) as held:
                manifest = pd.read_parquet(held.manifest)
                bad = 0
                for _, rows in manifest.groupby("patient_id"):
                    store = np.load(held.images / rows.store_path.iloc[0], mmap_mode="r")
                    size = int(rows["size"].iloc[0])
                    bad += store.shape != (len(rows), size, size)
                samples.append({"generation": held.generation, "disagreements": bad})
        except GenerationMissingError:
            time.sleep(0.2)


def leftovers(root: Path) -> list[int]:
    """Processes still alive that were started for this soak (by its folder in their
    command line), or are children of this process; multiprocessing's resource tracker,
    which lives as long as this process by design, is not counted."""
    import psutil

    mine = {
        p.pid
        for p in psutil.Process().children(recursive=True)
        if "multiprocessing.resource_tracker" not in " ".join(p.cmdline())
    }
    for process in psutil.process_iter(["pid", "cmdline"]):
        if any(str(root) in part for part in process.info["cmdline"] or []):
            mine.add(process.info["pid"])
    return sorted(mine - {os.getpid()})


def counts(answers: list, samples: list, ingest_done: Path, synth_done: Path) -> dict:
    """How many of each event in EVENTS so far."""
    published = [json.loads(line) for line in lines(ingest_done)]
    return {
        "requests": len(answers),
        "malformed_refused": sum(not a["valid"] and a["status"] == 400 for a in answers),
        "generations_published": sum(run["success"] for run in published),
        "generations_seen_by_the_reader": len({s["generation"] for s in samples}),
        "reader_samples": len(samples),
        "synth_runs": len(lines(synth_done)),
    }


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def events_met(events: dict) -> bool:
    return all(events[kind] >= least for kind, least in EVENTS.items())


def soak(seconds: float, tmp: Path, until_events: bool = False, deadline: float = 480.0) -> dict:
    """Run for `seconds`; with `until_events`, on until EVENTS are met or `deadline` passes."""
    from cass_pipeline.domain.synthetic.cohort import generate_cohort
    from cass_pipeline.domain.synthetic.config import preset
    from cass_pipeline.layout import RawLayout

    raw, processed = tmp / "raw", tmp / "processed"
    generate_cohort(preset("tiny", n_patients=4), raw, workers=2)
    patient = sorted(RawLayout(raw).mpr.iterdir())[0]
    valid, malformed = patient_request(patient), malformed_request(patient)
    tracking = register(tmp, "shufflenet_v2_x0_5", 64, "soak")
    server, url, log = serve(tmp, tracking)
    stop_file, ingest_done, synth_done = tmp / "stop", tmp / "ingestions", tmp / "synth_runs"
    started = time.time()
    with (tmp / "loops.log").open("wb") as log_file:
        loops = [
            subprocess.Popen(
                [sys.executable, "-c", code, *arguments, str(stop_file), str(done)],
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
            )
            for code, arguments, done in (
                (INGEST_LOOP, [str(raw), str(processed)], ingest_done),
                (SYNTH_LOOP, [str(raw)], synth_done),
            )
        ]
    answers, samples, stop = [], [], threading.Event()
    threads = [
        *(
            threading.Thread(target=client, args=(url, valid, malformed, stop, answers))
            for _ in range(2)
        ),
        threading.Thread(target=reader, args=(processed, stop, samples)),
    ]
    for thread in threads:
        thread.start()
    while True:
        elapsed = time.time() - started
        met = events_met(counts(answers, samples, ingest_done, synth_done))
        if elapsed >= deadline or (elapsed >= seconds and (met or not until_events)):
            break
        time.sleep(0.5)
    stop.set()
    stop_file.touch()
    for thread in threads:
        thread.join()
    ingestions, synth = (json.loads(loop.communicate(timeout=600)[0]) for loop in loops)
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
    time.sleep(3)
    valid_seconds = sorted(a["seconds"] for a in answers if a["valid"])
    statuses: dict[str, int] = {}
    for answer in answers:
        statuses[str(answer["status"])] = statuses.get(str(answer["status"]), 0) + 1
    events = counts(answers, samples, ingest_done, synth_done)
    return {
        "seconds": round(time.time() - started, 1),
        "events_met": events_met(events),
        **events,
        "statuses": statuses,
        "server_errors": sum(a["status"] >= 500 for a in answers),
        "malformed_answers_echoing_the_name": sum(a["echoed"] for a in answers),
        "name_in_server_log": PLANTED.split("^")[0] in log.read_text(),
        "p50_seconds": round(float(np.percentile(valid_seconds, 50)), 3) if valid_seconds else None,
        "p95_seconds": round(float(np.percentile(valid_seconds, 95)), 3) if valid_seconds else None,
        "ingestions": len(ingestions),
        "ingestions_failed": sum(not run["success"] for run in ingestions),
        "reader_disagreements": sum(s["disagreements"] for s in samples),
        "patients_at_the_end": synth["patients"],
        "processes_left": leftovers(tmp),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument(
        "--until-events", action="store_true", help="go on until EVENTS are met (or --deadline)"
    )
    parser.add_argument("--deadline", type=float, default=480.0, help="seconds at most")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    seconds = min(args.seconds, 300.0)
    with tempfile.TemporaryDirectory(prefix="cass-soak-") as tmp:
        figures = soak(seconds, Path(tmp), args.until_events, max(args.deadline, seconds))
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:36s} {value}")
        print("goal: 0 reader disagreements, 0 server errors, no name echoed, 0 processes left")
    failed = (
        figures["reader_disagreements"]
        or figures["server_errors"]
        or figures["malformed_answers_echoing_the_name"]
        or figures["name_in_server_log"]
        or figures["processes_left"]
        or figures["ingestions_failed"]
        or (args.until_events and not figures["events_met"])
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
