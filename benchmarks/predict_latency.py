"""Prediction latency for one new patient: raw DICOM to prediction.json, stage by stage.

A 50-view, 512-px patient (one branch of a `paper` preset patient) is scored by a registered
ShuffleNet V2 x1.0 (random weights: speed does not depend on them) as `cass predict`, the
REST service and the Dagster asset score it once the model is loaded. Printed: seconds per
stage (read + decode, cleanup, inference, roll-up + document), the end-to-end time, the
inference stage beside raw ONNX Runtime throughput of the same network in the same run, and
the one-off start-up (imports, model load from the registry) apart. Goal: end to end under
2 s on 2 cores, inference within 10% of raw ONNX Runtime.
Also the end-to-end time with test-time augmentation (flip: 2 scorings a view; flip_shift: 4)
and as a fold ensemble of 3 or 5 members (with flip: 10 scorings a view; flip_shift: 20).
Usage: python benchmarks/predict_latency.py [--views 50] [--repeats 3] [--whole-patient]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

CORES = os.cpu_count() or 1


def median_seconds(work, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def import_seconds() -> float:
    """A fresh interpreter importing what serving imports (torch, onnxruntime, mlflow)."""
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import cass_pipeline.runs.tracking, cass_pipeline.runs.serving, onnxruntime",
        ],
        check=True,
    )
    return time.perf_counter() - start


def patient_folder(tmp: Path, views: int, whole: bool) -> Path:
    from cass_pipeline.domain.synthetic.cohort import generate_cohort
    from cass_pipeline.domain.synthetic.config import preset
    from cass_pipeline.layout import RawLayout

    generate_cohort(preset("paper", n_patients=1, n_views=views), tmp / "cohort", workers=CORES)
    patient = next(RawLayout(tmp / "cohort").mpr.iterdir())
    if whole:
        return patient
    folder = tmp / "patient"
    series = sorted(p for p in patient.iterdir() if p.is_dir())[0]
    shutil.copytree(series, folder / series.name)
    return folder


def register(tmp: Path, arch: str = "shufflenet_v2_x1_0", size: int = 512, name: str = "latency"):
    """A registry under `tmp` holding an untrained `arch` for `size`-px views as champion
    (speed does not depend on the weights)."""
    from cass_pipeline.domain.evaluation.config import CHAMPION
    from cass_pipeline.domain.imaging.config import CleanupConfig, IngestConfig
    from cass_pipeline.domain.model.network import build_model
    from cass_pipeline.domain.prediction.bundle import ModelBundle
    from cass_pipeline.runs.tracking import Tracking

    tracking = Tracking(f"sqlite:///{tmp}/mlflow.db", name, (tmp / "artifacts").as_uri())
    bundle = ModelBundle(arch, IngestConfig(CleanupConfig(size=size)))
    check = np.random.default_rng(0).integers(0, 255, (4, size, size), dtype=np.uint8)
    with tracking.start_run(name):
        version = tracking.register(build_model(arch, "none").model, bundle, check)
    tracking.set_alias(CHAMPION, version)
    return tracking


def bare_network_images_per_s(images: np.ndarray, tmp: Path, repeats: int) -> float:
    """Raw ONNX Runtime on the network alone, fed pre-normalised floats, at its best batch."""
    import torch

    from cass_pipeline.domain.model.inference import OnnxEngine
    from cass_pipeline.domain.model.network import build_model, to_model_input

    size = images.shape[-1]
    program = torch.onnx.export(
        build_model("shufflenet_v2_x1_0", "none").model.eval(),
        (torch.zeros(2, 3, size, size),),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
        verbose=False,
    )
    program.save(str(tmp / "bare.onnx"))
    session = OnnxEngine(tmp / "bare.onnx").session
    floats = to_model_input(images).numpy()
    best = 0.0
    for batch in (4, 8, 16, 32):
        seconds = median_seconds(
            lambda b=batch: [
                session.run(None, {"images": floats[i : i + b]}) for i in range(0, len(floats), b)
            ],
            repeats,
        )
        best = max(best, len(floats) / seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--views", type=int, default=50, help="views per branch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--whole-patient", action="store_true", help="every branch, not one")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from cass_pipeline.domain.evaluation.config import CHAMPION
    from cass_pipeline.domain.imaging.cleanup import clean_image
    from cass_pipeline.domain.imaging.readers import read_image
    from cass_pipeline.domain.imaging.views import PatientSource
    from cass_pipeline.domain.model.ensemble import EnsembleEngine
    from cass_pipeline.domain.model.inference import BATCH_PIXELS, augmented
    from cass_pipeline.domain.prediction.document import prediction_document
    from cass_pipeline.domain.prediction.folder import predict_folder
    from cass_pipeline.domain.prediction.outputs import report_png
    from cass_pipeline.domain.prediction.picture import render_report
    from cass_pipeline.domain.prediction.predictor import Predictor
    from cass_pipeline.domain.prediction.rollup import roll_up

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = patient_folder(tmp, args.views, args.whole_patient)
        tracking = register(tmp)
        start = time.perf_counter()
        loaded = tracking.load(CHAMPION)
        load_s = time.perf_counter() - start
        predictor, cleanup = loaded.predictor, loaded.predictor.bundle.ingest.cleanup
        source = PatientSource("bench", mpr_dir=folder)
        paths = source.files()
        predict_folder(predictor, folder, "bench", loaded.description())  # warm-up

        with ThreadPoolExecutor(2) as pool:
            decode = lambda: list(pool.map(lambda p: read_image(p.read_bytes(), p.suffix), paths))  # noqa: E731
            frames = [image.frames[0] for image in decode()]
            read_s = median_seconds(decode, args.repeats)
            clean = lambda: list(pool.map(lambda f: clean_image(f, cleanup)[0], frames))  # noqa: E731
            cleaned = np.stack(clean())
            cleanup_s = median_seconds(clean, args.repeats)
        inference_s = median_seconds(lambda: predictor.probabilities(cleaned), args.repeats)
        prediction = predictor.predict_files(source.source_files(), "bench")
        views = prediction.rows("view")
        roll_up_s = median_seconds(
            lambda: prediction_document(roll_up("bench", views, [], predictor.bundle), {}),
            args.repeats,
        )
        end_to_end_s = median_seconds(
            lambda: report_png(predict_folder(predictor, folder, "bench", loaded.description())),
            args.repeats,
        )
        step = max(1, BATCH_PIXELS // cleaned[0].size)
        served_ips = len(cleaned) / median_seconds(
            lambda: [
                predictor.engine.logits(cleaned[i : i + step]) for i in range(0, len(cleaned), step)
            ],
            args.repeats,
        )
        document = prediction_document(prediction.table, loaded.description())
        report_s = median_seconds(lambda: render_report(prediction, document), args.repeats)
        bare_ips = bare_network_images_per_s(cleaned, tmp, args.repeats)
        imports_s = import_seconds()
        # a K-member ensemble costs K scorings of its members' one graph: the same session K
        # times measures it (weights do not change the speed)
        variants = {
            f"TTA {tta}": augmented(predictor.engine, tta) for tta in ("flip", "flip_shift")
        } | {
            f"{k}-fold ensemble{'' if tta == 'none' else ' + ' + tta}": augmented(
                EnsembleEngine([predictor.engine] * k), tta
            )
            for k, tta in ((3, "none"), (5, "none"), (5, "flip"), (5, "flip_shift"))
        }
        augmented_s = {
            name: median_seconds(
                lambda engine=engine: report_png(
                    predict_folder(
                        Predictor(predictor.bundle, engine, None),
                        folder,
                        "bench",
                        loaded.description(),
                    )
                ),
                args.repeats,
            )
            for name, engine in variants.items()
        }

    n = len(cleaned)
    print(f"patient: {n} views at 512 px from {len(paths)} DICOM files; {CORES} cores")
    print(f"{'stage':<24}{'seconds':>9}")
    for name, seconds in (
        ("read + decode (2 thr)", read_s),
        ("cleanup (2 threads)", cleanup_s),
        ("inference (ONNX RT)", inference_s),
        ("roll-up + document", roll_up_s),
        ("report.png", report_s),
    ):
        print(f"{name:<24}{seconds:>9.3f}")
    print(f"{'end to end (warm)':<24}{end_to_end_s:>9.3f}   goal < 2 s for 50 views")
    for name, seconds in augmented_s.items():
        print(f"  {name:<30}{seconds:>9.3f}   {seconds / end_to_end_s:.2f}x the single model")
    print(
        f"inference stage {n / inference_s:.1f} images/s; raw ONNX Runtime: the served graph "
        f"(uint8 views in, batch {step}) {served_ips:.1f} images/s, the bare network "
        f"(normalised floats in, best batch) {bare_ips:.1f} images/s: the stage takes "
        f"{inference_s / (n / bare_ips) - 1:+.1%} against the bare network (goal within 10%)"
    )
    print(
        f"start-up, apart: imports {imports_s:.2f} s, model load from the registry {load_s:.2f} s"
    )


if __name__ == "__main__":
    main()
