"""One layout: every table's path comes from `DataLayout`, and it survives the hand-off to
torchrun workers."""

import ast
import json
from pathlib import Path

import cass_pipeline
from cass_pipeline.layout import PARQUET, DataLayout

PACKAGE = Path(cass_pipeline.__file__).parent
BENCHMARKS = PACKAGE.parent / "benchmarks"


def parquet_literals(source: str) -> list[int]:
    """Lines of string literals in `source` that name a Parquet file or suffix (docstrings
    may mention them)."""
    tree = ast.parse(source)
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and PARQUET in node.value
        and id(node) not in docstrings
    ]


def test_the_rule_finds_a_planted_literal():
    planted = (
        '"""Writes a.parquet."""\nx = root / "images" / "manifest.parquet"\n'
        'y = f"{name}.parquet"\nz = "parquet"\n'
    )
    assert sorted(parquet_literals(planted)) == [2, 3]


def test_no_parquet_literal_outside_the_layout():
    files = [*PACKAGE.rglob("*.py"), *BENCHMARKS.glob("*.py")]
    offenders = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in files
        if path.name != "layout.py" and (lines := parquet_literals(path.read_text()))
    }
    assert offenders == {}


def test_every_table_lives_under_its_root(tmp_path):
    layout = DataLayout(tmp_path / "raw", tmp_path / "processed")
    processed = [
        layout.manifest,
        layout.image_rejects,
        layout.branch_labels,
        layout.patient_labels,
        layout.report_rejects,
        layout.splits,
        layout.test_predictions,
        layout.patient_ranking,
    ]
    assert all(p.is_relative_to(layout.processed) and p.suffix == PARQUET for p in processed)
    assert len(set(processed)) == len(processed)
    assert layout.ground_truth("views").is_relative_to(layout.raw)
    assert layout.report_table("branch_labels") == layout.branch_labels


def test_the_layout_round_trips_through_json(tmp_path):
    layout = DataLayout(tmp_path / "raw", tmp_path / "processed")
    assert DataLayout.from_json(json.loads(json.dumps(layout.as_json()))) == layout
    assert DataLayout(str(tmp_path), str(tmp_path)).raw == tmp_path  # strings become paths


def test_a_training_spec_round_trips_for_torchrun_workers(tmp_path):
    from cass_pipeline.runs.tracking import Tracking
    from cass_pipeline.runs.training import TrainingSpec
    from cass_pipeline_tests.helpers import tiny_config

    spec = TrainingSpec(
        DataLayout(tmp_path / "raw", tmp_path / "processed"),
        tiny_config(lr_schedule="cosine", time_budget_s=60.0),
        Tracking("sqlite:////tmp/mlflow.db", "cass-test", None, None),
        {"dagster_run_id": "abc"},
        "train-ddp",
    )
    assert TrainingSpec.from_json(spec.to_json()) == spec
