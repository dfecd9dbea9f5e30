"""Model quality on a cohort as hard as the paper's: the `benchmark` preset (standard
difficulty, 210 patients), split 60 / 10 / 30% so that at least 60 patients are tested.

Runs the shipped pipeline (`dagster asset materialize`, up to the evaluation report) in its
own data folder, then prints segment / artery / patient accuracy and weighted F1 with 95%
bootstrap intervals beside the paper's Table 2 and a majority-class baseline, and the
calibration and operating point of the model. 10.2 minutes on 2 CPU cores with the cohort
already generated (generating 200 of its patients took 78 s).
With `--aggregation attention` (the default) the same trained network is also scored with the
paper's majority vote, so one run compares the two. A grade model (`--target soft_grade`, the
default, or `grade`) also prints its CAD-RADS figures (kappa, rule-out and hold-out AUC).
`--curve 100,200,400` is a learning curve: one cohort (`--patients`, its test split fixed),
trained on a nested draw of that many training patients per point, each point's figures and
wall time printed and written to `curve.json`.
`--weights PATH` starts from pretrained weights (`cass pretrain`, self-supervised);
`--aggregation attention_end_to_end` trains the attention head with the network.
`--ensemble 5 --tta flip` then trains a 5-fold ensemble (train + validation patients, the
same test split) with that test-time augmentation and prints its figures beside the single
model's and against the goals of issue 38; `--external` also validates each model on the
`benchmark-external` site (generated once into the work folder).
Usage: python benchmarks/model_quality.py [--seed 7] [--epochs 16] [--aggregation vote]
       [--target grade|soft_grade|class] [--curve 100,200,400 --patients 700]
       [--weights PATH] [--validation 0.2] [--print-only]
       [--ensemble 5 --tta flip] [--external]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from cass_pipeline.defs.assets.model import NOT_ON_REQUEST
from cass_pipeline.domain.anatomy import GRADES, grade_of_percent
from cass_pipeline.domain.cohort.index import folder_patient_key
from cass_pipeline.domain.evaluation.grades import against_truth, grade_metrics
from cass_pipeline.domain.model.config import EvaluateSettings
from cass_pipeline.domain.model.metrics import (
    LEVELS,
    PAPER_TABLE2,
    evaluate,
    majority_vote,
    patient_level,
)
from cass_pipeline.domain.model.metrics import artery_level as arteries_of
from cass_pipeline.domain.privacy import SYNTHETIC_COHORT_KEY, pseudonymise
from cass_pipeline.layout import MPR, DataLayout
from cass_pipeline.settings import CassSettings, project_root

ROOT = project_root()
SPLIT = {"train": 0.6, "validation": 0.1, "test": 0.3}
#: Everything up to the evaluation: the benchmark measures, it does not promote.
MEASURED_ASSETS = f"{NOT_ON_REQUEST} and not key:promotion_decision and not key:champion_model"
#: A further learning-curve point on the same cohort and images: splits, model, evaluation.
RETRAINED_ASSETS = "key:patient_splits or key:stenosis_model or key:test_predictions or " + (
    "key:evaluation_report"
)


#: Issue 38's goals for the ensemble with test-time augmentation, by `headline` key.
GOALS = {
    "patient_f1": 0.80,
    "kappa_linear": 0.75,
    "hold_out_auc": 0.95,
    "referral_sensitivity": 0.95,
}
#: The external site's folder in the work folder, and the assets that validate a model there.
EXTERNAL_RAW = Path("external") / "raw"
EXTERNAL_ASSETS = "key:external_validation"


def run_config(
    args: argparse.Namespace, train_patients: int = 0, ensemble: int = 0, tta: str = "none"
) -> dict:
    """The benchmark's run config: the demo's training recipe on the benchmark cohort (with
    `ensemble` folds, a fold ensemble with test-time augmentation `tta`)."""
    cohort = {
        "preset": "benchmark",
        "seed": args.cohort_seed,
        "n_patients": args.patients,
        "n_views": args.views,
        "image_size": args.raw_size,
    }
    split = {**SPLIT, "validation": args.validation, "test": args.test}
    split["train"] = round(1 - split["validation"] - split["test"], 6)
    return {
        "execution": {"config": {"in_process": {}}},
        "ops": {
            "raw_cohort": {"config": cohort},
            "mpr_images": {"config": {"image_size": args.image_size}},
            "patient_splits": {
                "config": {**split, "seed": args.cohort_seed, "train_patients": train_patients}
            },
            "stenosis_model": {
                "config": {
                    "arch": "shufflenet_v2_x1_0",
                    "weights": args.weights,
                    "lr": args.lr,
                    "lr_schedule": args.lr_schedule,
                    "aggregation": args.aggregation,
                    "target": args.target,
                    "view_channels": args.view_channels,
                    "epochs": args.epochs,
                    "patience": args.epochs,
                    "seed": args.seed,
                    "resume": False,
                    "ensemble_folds": ensemble,
                    "tta": tta,
                }
            },
        },
    }


def materialise(work: Path, config: dict, select: str = MEASURED_ASSETS) -> float:
    """Run the `select`ed assets into `work`; returns the wall time in seconds."""
    home = work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "config" / "dagster_instance.yaml", home / "dagster.yaml")
    (work / "run_config.yaml").write_text(yaml.safe_dump(config))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CASS_", "MLFLOW_"))},
        "CASS_DATA_DIR": str(work),
        "DAGSTER_HOME": str(home),
        "CASS_CPU_KERNELS": "avx2",
    }
    dagster = Path(sys.executable).with_name("dagster")
    started = time.monotonic()
    subprocess.run(
        [
            str(dagster),
            "asset",
            "materialize",
            "-m",
            "cass_pipeline.definitions",
            "--select",
            select,
            "-c",
            str(work / "run_config.yaml"),
        ],
        env=env,
        check=True,
        cwd=ROOT,
    )
    return time.monotonic() - started


def training_majority(layout: DataLayout) -> dict[str, int]:
    """The most frequent class of the training patients at each level."""
    labels = pd.read_parquet(layout.branch_labels).dropna(subset=["label"])
    splits = pd.read_parquet(layout.splits)
    train = labels[labels.patient_id.isin(splits.patient_id[splits.split == "train"])]
    branches = train.assign(label=train.label.astype(int), pred=0)
    arteries = arteries_of(branches)
    frames = dict(zip(LEVELS, (branches, arteries, patient_level(arteries)), strict=True))
    return {level: int(frame.label.mode().iloc[0]) for level, frame in frames.items()}


def interval(metrics: dict, key: str) -> str:
    low, high = metrics["ci95"][key]
    return f"{metrics[key]:.3f} ({low:.2f}-{high:.2f})"


def table(title: str, metrics: dict, baseline: dict) -> list[str]:
    lines = [
        title,
        f"  {'level':8} {'n':>4}  {'accuracy (95% CI)':20} {'weighted F1 (95% CI)':20} "
        f"{'paper acc / F1':15} {'majority acc / F1':17}",
    ]
    for level in LEVELS:
        m, b = metrics[level], baseline[level]
        paper = PAPER_TABLE2[level]
        lines.append(
            f"  {level:8} {m['n']:>4}  {interval(m, 'accuracy'):20} "
            f"{interval(m, 'f1_weighted'):20} {paper[0]:.2f} / {paper[1]:.2f}    "
            f"{b['accuracy']:.3f} / {b['f1_weighted']:.3f}"
        )
    return lines


def tables(report: dict, predictions: pd.DataFrame, layout: DataLayout) -> list[str]:
    """The vote's table, and the learned aggregation's on the same network when there is one;
    intervals from the same bootstrap as the evaluation report."""
    by_vote = predictions.drop(columns="branch_pred")
    majority = training_majority(layout)
    baseline = {
        level: evaluate(by_vote.assign(pred=majority[level]), bootstrap=0)[level]
        for level in LEVELS
    }
    lines = table("majority vote of the views (the paper's)", evaluate(by_vote), baseline)
    if report["aggregation"] != "vote":
        lines += table(f"{report['aggregation']} (same network)", report["metrics"], baseline)
    return lines


def triage_lines(report: dict) -> list[str]:
    fitted, test = report["calibration"], report["calibration_test"]
    validation = fitted["validation"] or {}

    def show(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    threshold = fitted["referral_threshold"]
    return [
        f"temperature {fitted['temperature']:.3f}; test ECE {show(test['ece_before'])} before, "
        f"{show(test['ece_after'])} after (validation {show(validation.get('ece_before'))} -> "
        f"{show(validation.get('ece_after'))})",
        f"referral threshold {show(threshold)} (validation sensitivity "
        f"{show(validation.get('sensitivity'))}, {validation.get('significant_patients')} "
        f"significant patients); test sensitivity {show(test['sensitivity'])}, specificity "
        f"{show(test['specificity'])} ({test['significant_patients']} of {test['patients']} "
        f"significant); patient ranking ROC AUC {show(test['roc_auc'])}",
    ]


def voted_grades(predictions: pd.DataFrame) -> pd.DataFrame:
    """Test predictions whose branch grade is the vote of their views' grades (the paper's
    rule on the same network, when the model decides otherwise)."""
    keys = ["patient_id", "branch"]
    votes = predictions.groupby(keys).grade_pred.agg(lambda g: majority_vote(g.to_numpy(int)))
    return predictions.drop(columns="branch_grade").merge(
        votes.rename("branch_grade").reset_index(), on=keys
    )


def grade_lines(report: dict, predictions: pd.DataFrame) -> list[str]:
    """The CAD-RADS figures of a grade model, with intervals; under a learned aggregation
    also those of the vote of the same network's view grades."""
    grades = report.get("cad_rads")
    if grades is None:
        return ["three-class model: no CAD-RADS grades"]
    lines = [f"{report['aggregation']}: {grade_line(grades)}"]
    if report["aggregation"] != "vote":
        voted = grade_metrics(voted_grades(predictions), EvaluateSettings.bootstrap)
        lines.append(f"vote: {grade_line(voted)}")
    return lines


def grade_line(grades: dict) -> str:
    """One line of CAD-RADS figures (`grade_metrics`)."""
    patient, branch, ci = grades["patient"], grades["branch"], grades["patient"]["ci95"]

    def shown(key: str) -> str:
        if patient[key] is None:
            return "-"
        low, high = ci.get(key, (float("nan"), float("nan")))
        return f"{patient[key]:.3f} ({low:.2f}-{high:.2f})"

    return (
        f"CAD-RADS, {patient['n']} patients: category accuracy {shown('accuracy')}, weighted "
        f"kappa {shown('kappa_linear')} (van Herten 0.75 / 0.71), rule-out AUC "
        f"{shown('rule_out_auc')} (Denzinger 0.94), hold-out AUC {shown('hold_out_auc')} "
        f"(Denzinger 0.95); branch grade accuracy {branch['grade_accuracy']:.3f}, mean "
        f"absolute grade error {branch['mean_absolute_grade_error']:.3f}"
    )


def true_grades(layout: DataLayout) -> pd.DataFrame:
    """The generator's percent stenosis of every branch as a grade, by pseudonym (the
    synthetic cohort is keyed with the public key on its DICOM PatientID)."""
    branches = pd.read_parquet(layout.ground_truth("branches"))
    pseudonym = {
        case: pseudonymise(folder_patient_key(layout.raw / MPR / case), SYNTHETIC_COHORT_KEY)
        for case in branches.case_id.unique()
    }
    return pd.DataFrame(
        {
            "patient_id": branches.case_id.map(pseudonym),
            "branch": branches.branch,
            "true_grade": [GRADES.index(grade_of_percent(p)) for p in branches.stenosis_pct],
        }
    )


def truth_lines(predictions: pd.DataFrame, layout: DataLayout) -> tuple[list[str], dict]:
    """Grades against the generator's truth (label noise apart from model error)."""
    if predictions.branch_grade.isna().all():
        return [], {}
    truth = against_truth(predictions, true_grades(layout))
    line = (
        f"against the generator's percent stenosis ({truth['branches']} test branches): "
        f"model grade exact {truth['model_grade_exact']:.3f}, mean absolute error "
        f"{truth['model_mean_absolute_grade_error']:.3f} grades; the report's interval holds "
        f"the true grade for {truth['report_interval_holds_truth']:.3f}; patient kappa vs "
        f"true category {truth['patient_kappa_linear_vs_truth']:.3f}"
    )
    return [line], truth


def point_figures(report: dict, wall: float, train_patients: int) -> dict:
    """One learning-curve point: patient F1 (three classes) and CAD-RADS figures, with CIs."""
    patient = report["metrics"]["patient"]
    grades = (report.get("cad_rads") or {}).get("patient", {})
    return {
        "train_patients": train_patients,
        "wall_s": round(wall, 1),
        "patient_f1": patient["f1_weighted"],
        "patient_f1_ci95": patient["ci95"].get("f1_weighted"),
        "test_referral_sensitivity": report["calibration_test"]["sensitivity"],
        **{k: grades.get(k) for k in ("kappa_linear", "rule_out_auc", "hold_out_auc")},
        "grade_ci95": grades.get("ci95"),
    }


def curve(args: argparse.Namespace, work: Path, points: list[int]) -> None:
    """Train and evaluate at each point on one cohort; print and write `curve.json`."""
    results = []
    for k, train_patients in enumerate(points):
        select = MEASURED_ASSETS if k == 0 else RETRAINED_ASSETS
        wall = materialise(work, run_config(args, train_patients), select)
        layout = CassSettings.from_env({"CASS_DATA_DIR": str(work)}).layout
        report = json.loads(layout.evaluation_report.read_text())
        splits = pd.read_parquet(layout.splits).split.value_counts().to_dict()
        predictions = pd.read_parquet(layout.test_predictions)
        results.append(
            point_figures(report, wall, splits.get("train", 0))
            | {"splits": splits, "against_truth": truth_lines(predictions, layout)[1]}
        )
        print(json.dumps(results[-1]), flush=True)
        (work / "curve.json").write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "points": results})
        )


def headline(report: dict) -> dict:
    """The figures the goals are set on."""
    grades = (report.get("cad_rads") or {}).get("patient", {})
    return {
        "patient_f1": report["metrics"]["patient"]["f1_weighted"],
        "kappa_linear": grades.get("kappa_linear"),
        "hold_out_auc": grades.get("hold_out_auc"),
        "referral_sensitivity": report["calibration_test"]["sensitivity"],
    }


def comparison_lines(rows: dict[str, dict]) -> list[str]:
    """Models side by side on the same test patients, and the goals."""
    keys = list(GOALS)

    def shown(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [f"  {'model':34}" + "".join(f"{k:>22}" for k in keys)]
    for name, figures in rows.items():
        lines.append(f"  {name:34}" + "".join(f"{shown(figures.get(k)):>22}" for k in keys))
    goals = "".join(f"{'>= ' + str(GOALS[k]):>22}" for k in keys)
    lines.append(f"  {'goal (issue 38)':34}" + goals)
    return lines


def external_site(work: Path, args: argparse.Namespace) -> Path:
    """The `benchmark-external` site's export in the work folder (generated once), with as
    many views as the internal cohort and its own resolution (120 px to our 128)."""
    from cass_pipeline.domain.synthetic.cohort import generate_cohort
    from cass_pipeline.domain.synthetic.config import preset

    raw = work / EXTERNAL_RAW
    site = preset("benchmark-external")
    size = round(args.raw_size * site.image_size / preset("benchmark").image_size)
    generate_cohort(preset("benchmark-external", n_views=args.views, image_size=size), raw)
    return raw


def validate_externally(work: Path, raw: Path, version: int) -> dict:
    """`external_validation` of one registered version; its document."""
    config = {
        "execution": {"config": {"in_process": {}}},
        "ops": {"external_validation": {"config": {"raw_dir": str(raw), "model": str(version)}}},
    }
    materialise(work, config, EXTERNAL_ASSETS)
    layout = CassSettings.from_env({"CASS_DATA_DIR": str(work)}).layout
    return json.loads(layout.external_report.read_text())


def external_lines(name: str, document: dict) -> list[str]:
    from cass_pipeline.domain.evaluation.external import side_by_side

    drop = document["kappa_drop"]
    return [
        f"{name} on the external site ({document['patients']} patients); kappa drop "
        f"{'-' if drop is None else f'{drop:.3f}'} (goal <= {document['kappa_drop_allowed']})",
        side_by_side(document["internal"], document["external"]),
    ]


def ensemble_round(args: argparse.Namespace, work: Path, single: dict) -> None:
    """Train the fold ensemble on the same cohort and splits; print it beside the single
    model, with both on the external site under `--external`."""
    config = run_config(args, ensemble=args.ensemble, tta=args.tta)
    wall = materialise(work, config, RETRAINED_ASSETS)
    layout = CassSettings.from_env({"CASS_DATA_DIR": str(work)}).layout
    report = json.loads(layout.evaluation_report.read_text())
    predictions = pd.read_parquet(layout.test_predictions)
    name = f"{args.ensemble}-fold ensemble, tta {args.tta}"
    lines = [
        f"{name}: model version {report['model_version']}, {wall / 60:.1f} min",
        *tables(report, predictions, layout),
        *triage_lines(report),
        *grade_lines(report, predictions),
        "same test patients:",
        *comparison_lines(
            {f"single model (v{single['model_version']})": headline(single), name: headline(report)}
        ),
    ]
    print("\n".join(lines), flush=True)
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "wall_s": wall, **report}
    if args.external:
        raw = external_site(work, args)
        outside = {
            "single": validate_externally(work, raw, single["model_version"]),
            "ensemble": validate_externally(work, raw, report["model_version"]),
        }
        for label, document in outside.items():
            print("\n".join(external_lines(label, document)), flush=True)
        result["external"] = outside
    (work / f"quality-ensemble{args.ensemble}-{args.tta}-seed{args.seed}.json").write_text(
        json.dumps(result, indent=2)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7, help="training seed")
    parser.add_argument("--cohort-seed", type=int, default=7, help="cohort and split seed")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--lr-schedule", choices=["constant", "cosine"], default="cosine")
    parser.add_argument(
        "--aggregation",
        choices=["vote", "attention", "attention_end_to_end"],
        default="attention",
    )
    parser.add_argument("--target", choices=["grade", "soft_grade", "class"], default="soft_grade")
    parser.add_argument(
        "--view-channels",
        choices=["grey", "neighbours"],
        default="grey",
        help="the network's input channels: the view, or it and its neighbouring views",
    )
    parser.add_argument("--patients", type=int, default=210, help="cohort size")
    parser.add_argument(
        "--weights", default="none", help="none, or a state dict (from `cass pretrain`)"
    )
    parser.add_argument("--validation", type=float, default=SPLIT["validation"])
    parser.add_argument("--test", type=float, default=SPLIT["test"])
    parser.add_argument("--curve", help="training patients per point, e.g. 100,200,400")
    parser.add_argument(
        "--print-only", action="store_true", help="print the figures of the last run in --work"
    )
    parser.add_argument("--image-size", type=int, default=128, help="px the views are cleaned to")
    parser.add_argument("--views", type=int, default=8, help="views per branch in the cohort")
    parser.add_argument("--raw-size", type=int, default=128, help="px of the cohort's views")
    parser.add_argument(
        "--ensemble", type=int, default=0, help="K >= 2: then a K-fold ensemble, compared"
    )
    parser.add_argument("--tta", choices=["none", "flip", "flip_shift"], default="none")
    parser.add_argument("--external", action="store_true", help="validate on benchmark-external")
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "benchmarks" / "quality")
    args = parser.parse_args()
    work = args.work.resolve()
    if args.curve:
        curve(args, work, [int(n) for n in args.curve.split(",")])
        return
    wall = 0.0 if args.print_only else materialise(work, run_config(args))
    layout = CassSettings.from_env({"CASS_DATA_DIR": str(work)}).layout
    report = json.loads(layout.evaluation_report.read_text())
    predictions = pd.read_parquet(layout.test_predictions)
    lines = [
        f"model quality, benchmark cohort (standard), seed {args.seed}, {args.epochs} epochs "
        f"({args.lr_schedule} lr {args.lr}), {args.image_size} px, {args.aggregation}, "
        f"target {args.target}, {args.view_channels} channels, {args.patients} patients, "
        f"weights {args.weights}; "
        f"model version {report['model_version']}; "
        f"pipeline {wall / 60:.1f} min",
        *tables(report, predictions, layout),
        *triage_lines(report),
        *grade_lines(report, predictions),
        *truth_lines(predictions, layout)[0],
    ]
    print("\n".join(lines))
    if args.print_only:
        return
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "wall_s": wall, **report}
    result["against_truth"] = truth_lines(predictions, layout)[1]
    (work / f"quality-{args.target}-{args.view_channels}-seed{args.seed}.json").write_text(
        json.dumps(result, indent=2)
    )
    if args.ensemble:
        ensemble_round(args, work, report)
    elif args.external:
        document = validate_externally(work, external_site(work, args), report["model_version"])
        print("\n".join(external_lines("single model", document)))


if __name__ == "__main__":
    main()
