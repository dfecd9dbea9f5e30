"""What test-time augmentation gains and costs on a registered model's own test split.

The champion of the registry `MLFLOW_TRACKING_URI` points at (default: the demo's, after
`make run`) scores the test split's stored views three ways: without augmentation, with its
mirror image (flip), and with shifts along the vessel as well (flip_shift), through its own
network(s), predictor and calibration, as evaluation and serving score them. A version that
carries an augmentation is stripped of it first, so a fold ensemble's gain from its members
and its gain from augmentation are told apart (its calibration was fitted for its own way).
Printed per way: weighted F1 at segment, artery and patient level with the patient level's
95% bootstrap interval, CAD-RADS linearly weighted kappa (grade models), and the
seconds the scoring took; all in one run.
Usage: python benchmarks/tta_gain.py [--model models:/cass-stenosis@champion] [--bootstrap 500]
"""

from __future__ import annotations

import argparse
import time

WAYS = ("none", "flip", "flip_shift")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="champion", help="alias or version")
    parser.add_argument("--bootstrap", type=int, default=500)
    args = parser.parse_args()

    from cass_pipeline.domain.evaluation.grades import grade_metrics
    from cass_pipeline.domain.generations import held_layout
    from cass_pipeline.domain.model.inference import (
        TemperatureScaled,
        TestTimeAugmented,
        augmented,
    )
    from cass_pipeline.domain.model.metrics import LEVELS, evaluate
    from cass_pipeline.domain.prediction.predictor import Predictor
    from cass_pipeline.runs.tracking import Tracking
    from cass_pipeline.runs.training import load_views
    from cass_pipeline.settings import CassSettings

    settings = CassSettings.from_env()
    loaded = Tracking.from_settings(settings).load(args.model)
    predictor = loaded.predictor
    runner = predictor.engine  # the network(s) on ONNX Runtime, augmented, calibrated
    if isinstance(runner, TemperatureScaled):
        runner = runner.engine
    if isinstance(runner, TestTimeAugmented):
        runner = runner.engine
    with held_layout(settings.layout) as layout:
        views = load_views(layout)
        test = views[views.split == "test"].reset_index(drop=True)
        print(
            f"version {loaded.version} ({predictor.bundle.arch}, {predictor.bundle.target}), "
            f"{len(predictor.bundle.members) or 1} network(s), registered tta "
            f"{predictor.bundle.tta}, {test.patient_id.nunique()} test patients, {len(test)} views"
        )
        print(f"{'tta':<11}" + "".join(f"{lv + ' F1':>13}" for lv in LEVELS) + "   patient 95% CI"
              + "  CAD-RADS kappa  seconds")  # fmt: skip
        for way in WAYS:
            engine = predictor.bundle.calibration.scaled(augmented(runner, way))
            scorer = Predictor(predictor.bundle, engine, None)
            start = time.perf_counter()
            scored = scorer.score_views(test, layout.images)
            seconds = time.perf_counter() - start
            figures = evaluate(scored, bootstrap=args.bootstrap)
            grades = grade_metrics(scored, bootstrap_rounds=0)
            kappa = "-" if grades is None else f"{grades['patient']['kappa_linear']:.3f}"
            ci = figures["patient"]["ci95"].get("f1_weighted", [float("nan")] * 2)
            print(
                f"{way:<11}"
                + "".join(f"{figures[lv]['f1_weighted']:>13.3f}" for lv in LEVELS)
                + f"   {ci[0]:.2f}-{ci[1]:.2f}   {kappa:>14}  {seconds:7.1f}"
            )


if __name__ == "__main__":
    main()
