"""The pipeline on a shared server: readers never see half an image store, ingestion and the
generator take turns with `raw/`, and a killed step leaves no worker behind."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import psutil
import pytest

from cass_pipeline.defs.assets import imaging
from cass_pipeline.defs.resources import CassPaths, PseudonymKey, RawFormat
from cass_pipeline.domain.generations import GenerationMissingError, Generations, held_layout
from cass_pipeline.domain.storage import exclusive_writer, shared_reader
from cass_pipeline.domain.synthetic.cohort import generate_cohort
from cass_pipeline.domain.synthetic.config import preset


def ingest(paths: CassPaths, key_file, size: int):
    return dg.materialize(
        [imaging.mpr_images, imaging.mpr_store_matches_manifest],
        resources={
            "paths": paths,
            "pseudonyms": PseudonymKey(key_file=str(key_file)),
            "raw_format": RawFormat(),
        },
        run_config=dg.RunConfig({"mpr_images": {"config": {"image_size": size, "workers": 1}}}),
        raise_on_error=False,
    )


def store_disagrees(layout) -> bool:
    """Whether any patient's store holds other than its manifest rows (what a reader sees)."""
    manifest = pd.read_parquet(layout.manifest)
    for _, rows in manifest.groupby("patient_id"):
        store = np.load(layout.images / rows.store_path.iloc[0], mmap_mode="r")
        if store.shape != (len(rows), rows["size"].iloc[0], rows["size"].iloc[0]):
            return True
    return False


def test_readers_see_one_whole_generation_while_ingestion_rewrites_the_store(tiny_cohort, tmp_path):
    paths = CassPaths(raw_dir=str(tiny_cohort), processed_dir=str(tmp_path / "out"))
    flat = paths.layout.image_generations  # the store of a CASS before generations
    (flat / "store").mkdir(parents=True)
    (flat / "manifest.parquet").write_bytes(b"old")
    assert ingest(paths, tmp_path / "key", 32).success
    assert not (flat / "store").exists() and not (flat / "manifest.parquet").exists()
    first = paths.generations.current()
    samples, disagreements, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            with held_layout(paths.layout) as layout:
                samples.append(layout.generation)
                disagreements.extend([layout.generation] if store_disagrees(layout) else [])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        result = ingest(paths, tmp_path / "key", 48)  # a cleanup change: every store rewritten
    finally:
        stop.set()
        thread.join()
    assert result.success
    second = paths.generations.current()
    assert second != first and {first, second} >= set(samples) and len(samples) > 5
    assert disagreements == []
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["patients"].value == 4
    assert paths.generations.remove_unused() in ([], [first])  # removed once nobody held it
    assert paths.generations.names() == [second]


def test_a_killed_ingestion_leaves_the_published_generation_whole(tiny_cohort, tmp_path):
    paths = CassPaths(raw_dir=str(tiny_cohort), processed_dir=str(tmp_path / "out"))
    assert ingest(paths, tmp_path / "key", 32).success
    published = paths.generations.current()
    script = (
        "import os, signal\n"
        "from cass_pipeline.defs.assets import imaging\n"
        "def die(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "imaging.write_examples = die\n"  # killed after the stores, before the publication
        "from cass_pipeline_tests.integration.test_shared_server import ingest\n"
        "from cass_pipeline.defs.resources import CassPaths\n"
        f"ingest(CassPaths(raw_dir={str(tiny_cohort)!r}, processed_dir={str(tmp_path / 'out')!r}),"
        f" {str(tmp_path / 'key')!r}, 48)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script], timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert paths.generations.current() == published
    with held_layout(paths.layout) as layout:
        assert not store_disagrees(layout)
        assert pd.read_parquet(layout.manifest)["size"].unique().tolist() == [32]
    result = ingest(paths, tmp_path / "key", 48)  # the rerun resumes the unpublished build
    assert result.success
    assert paths.generations.current() == f"{int(published) + 1:06d}"
    assert paths.generations.names() == [paths.generations.current()]


def test_ingestion_waits_for_the_generator_of_raw_and_names_it(tiny_cohort, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_cohort, raw)
    paths = CassPaths(raw_dir=str(raw), processed_dir=str(tmp_path / "out"), writer_wait_seconds=1)
    with exclusive_writer(raw):  # `cass synth` writing into raw/
        result = ingest(paths, tmp_path / "key", 32)
    assert not result.success
    error = result.failure_data_for_node("mpr_images").error
    message = error.cause.message if error.cause else error.message
    assert f"held by process {os.getpid()}" in message and "writing" in message
    nothing = Generations(paths.layout.image_generations)
    with pytest.raises(GenerationMissingError), nothing.reading():  # nothing half-made published
        pass


def test_the_generator_waits_for_an_ingestion_reading_raw(tiny_cohort, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_cohort, raw)
    heard, released, holding, waiting = [], [], threading.Event(), threading.Event()

    def ingestion():
        with shared_reader(raw):
            holding.set()
            waiting.wait(120)  # held until the generator has said that it waits
            released.append(time.monotonic())

    def notify(message: str) -> None:
        heard.append(message)
        waiting.set()

    thread = threading.Thread(target=ingestion)
    thread.start()
    assert holding.wait(120)
    generate_cohort(preset("tiny", n_patients=5), raw, workers=1, notify=notify)
    finished = time.monotonic()
    thread.join()
    assert len(heard) == 1 and "reading" in heard[0] and f"process {os.getpid()}" in heard[0]
    assert released and finished > released[0]


KILLED_STEP = """
import sys, time
from pathlib import Path
from cass_pipeline.domain.imaging.config import IngestConfig
from cass_pipeline.domain.imaging.config import CleanupConfig
from cass_pipeline.domain.imaging.ingest import ingest_cohort
from cass_pipeline.domain.privacy import Pseudonyms

def hold(done, total):
    print("working", flush=True)
    time.sleep(120)  # the step is busy while its workers wait: kill it now

if __name__ == "__main__":
    config = IngestConfig(cleanup=CleanupConfig(size=32), min_views=3)
    raw, store = Path(sys.argv[1]), Path(sys.argv[2])
    for _ in ingest_cohort(raw, store, Pseudonyms(b"k"), config, workers=2, progress=hold):
        pass
"""


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_the_workers_of_a_killed_ingestion_end_with_it(tiny_cohort, tmp_path, how):
    script = tmp_path / "step.py"
    script.write_text(KILLED_STEP)
    step = subprocess.Popen(
        [sys.executable, str(script), str(tiny_cohort), str(tmp_path / "store")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert step.stdout.readline().strip() == "working"
        workers = psutil.Process(step.pid).children(recursive=True)
        assert len(workers) >= 2
        step.send_signal(how)
        step.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert alive == [], f"orphans after {how.name}: {[p.pid for p in alive]}"
    finally:
        step.kill()


@pytest.mark.slow
def test_a_short_soak_finds_no_reader_disagreement_no_5xx_and_no_leak():
    """Judged on events, not on time: the soak goes on until two generations are published
    and seen, malformed requests refused and a synth run done, however busy the machine."""
    soak = Path(__file__).parents[2] / "benchmarks" / "soak.py"
    until = ["--seconds", "0", "--until-events", "--deadline", "480"]
    done = subprocess.run(
        [sys.executable, str(soak), *until, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["events_met"], figures
    assert done.returncode == 0, figures
    assert figures["server_errors"] == 0 and figures["statuses"].get("400", 0) >= 1
    assert figures["generations_seen_by_the_reader"] >= 2 and figures["reader_disagreements"] == 0
    assert figures["ingestions_failed"] == 0 and figures["processes_left"] == []
    assert not figures["name_in_server_log"] and not figures["malformed_answers_echoing_the_name"]
