"""One layout: every table's path comes from `DataLayout`, and it survives the hand-off to
torchrun workers."""

import ast
import json
from pathlib import Path

import cass_pipeline
from cass_pipeline.layout import MPR, PARQUET, RAW_FOLDERS, DataLayout, RawLayout, store_entry

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


def offenders_of(rule) -> dict[str, list[int]]:
    """File -> lines where `rule` finds a literal, in the package and the benchmarks except
    the layout itself."""
    files = [*PACKAGE.rglob("*.py"), *BENCHMARKS.glob("*.py")]
    return {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in files
        if path.name != "layout.py" and (lines := rule(path.read_text()))
    }


def test_the_rule_finds_a_planted_literal():
    planted = (
        '"""Writes a.parquet."""\nx = root / "images" / "manifest.parquet"\n'
        'y = f"{name}.parquet"\nz = "parquet"\n'
    )
    assert sorted(parquet_literals(planted)) == [2, 3]


def raw_folder_literals(source: str) -> list[int]:
    """Lines of `source` that spell a raw folder or the image store themselves: `x / "mpr"`,
    a path string starting with a raw folder, or one naming `images/store`."""
    tree = ast.parse(source)
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            right = node.right
            if isinstance(right, ast.Constant) and right.value in RAW_FOLDERS:
                found.add(node.lineno)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and (
                node.value in (MPR, "volumes", "centrelines")
                or node.value.startswith(tuple(f"{folder}/" for folder in RAW_FOLDERS))
                or "images/store" in node.value
            )
        ):
            found.add(node.lineno)
    return sorted(found)


def test_the_raw_folder_rule_finds_planted_literals():
    planted = (
        '"""Reads raw/mpr/<patient>."""\nx = raw / "mpr" / case\ny = staging / "reports"\n'
        'z = f"mpr/{case}/{k}.dcm"\nw = f"images/store/{pid}.npy"\nv = name == "mpr"\n'
        'u = {"reports": 3}\n'
    )
    assert raw_folder_literals(planted) == [2, 3, 4, 5, 6]


def test_no_raw_folder_or_store_literal_outside_the_layout():
    assert offenders_of(raw_folder_literals) == {}


def test_the_raw_side_and_the_store_of_a_patient(tmp_path):
    layout = DataLayout(tmp_path / "raw", tmp_path / "processed")
    raw = layout.raw_folders
    assert raw == RawLayout(tmp_path / "raw")
    assert [raw.mpr, raw.reports, raw.volumes, raw.centrelines] == [
        tmp_path / "raw" / name for name in ("mpr", "reports", "volumes", "centrelines")
    ]
    assert raw.centreline_file("CASE-0001") == raw.centrelines / "CASE-0001.json"
    assert (layout.images / store_entry("P1")).parent == layout.image_store
    pinned = layout.at_generation("000003")
    assert pinned.manifest == tmp_path / "processed/images/generations/000003/manifest.parquet"
    assert layout.manifest == tmp_path / "processed/images/current/manifest.parquet"


def test_no_parquet_literal_outside_the_layout():
    assert offenders_of(parquet_literals) == {}


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
