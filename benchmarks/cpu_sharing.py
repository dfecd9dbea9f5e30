"""Training, `cass predict` and ingestion alone and beside one busy process, per thread setup.

A shared research server always has other work on it. Each workload runs in a fresh process
(so that the thread setup applies before torch and ONNX Runtime start), for `--seconds`,
once alone and once beside `python -c "while True: pass"` (one core taken):
- train: ShuffleNet V2 x1.0 on 32 augmented views of 128 px a batch, from the data loader
  through forward, backward and Adam, its threads sized as training sizes them (images/s);
- predict: one 50-view, 512-px branch from DICOM to prediction, as `cass predict` scores it
  once the model is loaded (views/s);
- ingest: the tiny cohort's DICOM files decoded, cleaned and stored at 128 px with one worker
  process per core (images/s).
Setups: `CASS_THREAD_WAIT` (`spin`, how torch's OpenMP and ONNX Runtime wait by default, and
`sleep`, CASS's default) and, for training, the data-loader workers (0, as CASS before, and
1, CASS's default). Goals: beside one busy process on 2 cores at least 45% of the rate alone
(a fair share is 50%), and no loss alone against the first setup.
Usage: python benchmarks/cpu_sharing.py [--seconds 20] [--workloads train predict ingest]
       [--waits spin sleep] [--loader-workers 0 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKLOADS = ("train", "predict", "ingest")
WAITS = ("spin", "sleep")
BUSY = "while True: pass"


def rate_for(seconds: float, setup, step) -> float:
    """Units of work per second of `step()` (which returns its units) over `seconds`."""
    state = setup()
    step(state)  # warm-up
    start, units = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        units += step(state)
    return units / (time.perf_counter() - start)


def train_setup(tmp: Path, loader_workers: int):
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, RandomSampler
    from training_throughput import fake_store

    from cass_pipeline.domain.device import training_threads
    from cass_pipeline.domain.model.data import ViewDataset
    from cass_pipeline.domain.model.network import build_model

    threads = training_threads(loader_workers)
    if threads:
        torch.set_num_threads(threads)  # as `train` sizes them (`pick_device`)
    dataset = ViewDataset(fake_store(tmp, 128), tmp, augment=True)
    sampler = RandomSampler(dataset, replacement=True, num_samples=10**6)
    batches = iter(DataLoader(dataset, 32, sampler=sampler, num_workers=loader_workers))
    model = build_model("shufflenet_v2_x1_0", "none").model.train()
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    return model, batches, optimizer, nn.CrossEntropyLoss()


def train_step(state) -> int:
    """One batch from the loader (read, augment) through forward, backward and Adam."""
    import torch

    model, batches, optimizer, loss_fn = state
    images, targets = next(batches)
    optimizer.zero_grad()
    loss_fn(model(images.contiguous(memory_format=torch.channels_last)), targets).backward()
    optimizer.step()
    return len(images)


def predict_setup(tmp: Path):
    from predict_latency import patient_folder, register

    from cass_pipeline.domain.evaluation.config import CHAMPION

    folder = patient_folder(tmp, 50, whole=False)
    loaded = register(tmp).load(CHAMPION)
    return loaded, folder


def predict_step(state) -> int:
    from cass_pipeline.domain.prediction.folder import predict_folder

    loaded, folder = state
    prediction = predict_folder(loaded.predictor, folder, "bench", loaded.description())
    return len(prediction.prediction.rows("view"))


def ingest_setup(tmp: Path):
    from cass_pipeline.domain.synthetic.cohort import generate_cohort
    from cass_pipeline.domain.synthetic.config import preset

    generate_cohort(preset("tiny", n_patients=4), tmp / "raw", workers=os.cpu_count())
    return tmp, itertools.count()


def ingest_step(state) -> int:
    from cass_pipeline.domain.imaging.config import CleanupConfig, IngestConfig
    from cass_pipeline.domain.imaging.ingest import ingest_cohort
    from cass_pipeline.domain.privacy import Pseudonyms

    tmp, runs = state
    config = IngestConfig(cleanup=CleanupConfig(size=128), min_views=3)
    store = tmp / f"store-{next(runs)}"  # a new store: every image decoded and cleaned again
    results = ingest_cohort(tmp / "raw", store, Pseudonyms(b"b"), config, os.cpu_count() or 1)
    return sum(len(result.rows) for result in results)


def child(workload: str, seconds: float, loader_workers: int) -> float:
    """One workload's rate in this process (run with the thread setup already in its
    environment)."""
    import cass_pipeline  # noqa: F401  # the thread setup, before torch starts

    with tempfile.TemporaryDirectory() as tmp:
        if workload == "train":
            return rate_for(seconds, lambda: train_setup(Path(tmp), loader_workers), train_step)
        if workload == "predict":
            return rate_for(seconds, lambda: predict_setup(Path(tmp)), predict_step)
        return rate_for(seconds, lambda: ingest_setup(Path(tmp)), ingest_step)


def measure(workload: str, wait: str, loader_workers: int, seconds: float, busy: bool) -> float:
    env = {**os.environ, "CASS_THREAD_WAIT": wait, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "0"}
    env.pop("OMP_WAIT_POLICY", None)
    command = [sys.executable, __file__, "--child", workload, "--seconds", str(seconds)]
    hog = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        done = subprocess.run(
            [*command, "--loader-workers", str(loader_workers)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return json.loads(done.stdout.strip().splitlines()[-1])["rate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--waits", nargs="+", choices=WAITS, default=list(WAITS))
    parser.add_argument(
        "--loader-workers", type=int, nargs="+", default=[0, 1], help="training's, each tried"
    )
    parser.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rate = child(args.child, args.seconds, args.loader_workers[0])
        print(json.dumps({"rate": rate}))
        return
    print(f"{os.cpu_count()} cores; {args.seconds:.0f} s a measurement; busy: {BUSY!r}")
    heads = ("alone", "beside busy", "share", "alone/first")
    print(f"{'workload':<9}{'setup':<20}" + "".join(f"{h:>13}" for h in heads))
    for workload in args.workloads:
        workers = args.loader_workers if workload == "train" else [0]
        first = None
        for wait, loader_workers in ((w, n) for n in workers for w in args.waits):
            alone = measure(workload, wait, loader_workers, args.seconds, busy=False)
            beside = measure(workload, wait, loader_workers, args.seconds, busy=True)
            first = first or alone
            setup = f"{wait}, {loader_workers} loader w." if workload == "train" else wait
            print(
                f"{workload:<9}{setup:<20}{alone:>13.1f}{beside:>13.1f}{beside / alone:>13.0%}"
                f"{alone / first:>13.2f}",
                flush=True,
            )
    print("goal: beside one busy process >= 45% of alone; alone no loss against the first setup")


if __name__ == "__main__":
    main()
