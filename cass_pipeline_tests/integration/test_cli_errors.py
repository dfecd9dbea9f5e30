"""Every CLI failure is one clear line and a failure exit, never a traceback or a silent 0."""

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cass_pipeline.cli import main


@pytest.fixture
def view(tmp_path):
    image = np.random.default_rng(0).integers(0, 200, (64, 64), dtype=np.uint8)
    path = tmp_path / "view.png"
    cv2.imwrite(str(path), image)
    return path


def run(tmp_path, *args):
    env = {"CASS_DATA_DIR": str(tmp_path / "data"), "MLFLOW_TRACKING_URI": None}
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def error_line(result) -> str:
    """The last stderr line of a failed command, which must not have raised a traceback."""
    assert "Traceback" not in result.stderr and result.stdout == ""
    return [line for line in result.stderr.splitlines() if line.strip()][-1]


def test_explain_into_a_missing_folder_fails_before_any_work(tmp_path, view):
    result = run(tmp_path, "explain", view, "--out", tmp_path / "missing" / "x.png")
    assert result.exit_code == 1
    assert error_line(result) == f"Error: {tmp_path / 'missing' / 'x.png'}: no folder " + str(
        tmp_path / "missing"
    )


def test_a_constant_image_is_refused_as_ingestion_refuses_it(tmp_path):
    black = tmp_path / "black.png"
    cv2.imwrite(str(black), np.zeros((64, 64), np.uint8))
    for args in (("explain", black), ("clean-mpr", black, tmp_path / "out.png")):
        result = run(tmp_path, *args)
        assert result.exit_code == 1
        assert error_line(result).endswith("constant image (value 0)")
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(
    ("options", "target", "expected"),
    [
        (["--frame", "5"], "out.png", "no frame 5: the file has 1 frame(s)"),
        (["--size", "0"], "out.png", "Invalid value for '--size'"),
        ([], "out.txt", "write a .png or .jpg file"),
    ],
)
def test_clean_mpr_refuses_bad_options(tmp_path, view, options, target, expected):
    result = run(tmp_path, "clean-mpr", view, tmp_path / target, *options)
    assert result.exit_code in (1, 2)
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / target).exists()


def test_evaluate_on_an_empty_table(tmp_path):
    columns = ["patient_id", "branch", "view_index", "label", "pred"]
    pd.DataFrame(columns=columns).to_parquet(tmp_path / "empty.parquet")
    result = run(tmp_path, "evaluate", tmp_path / "empty.parquet")
    assert result.exit_code == 1
    assert error_line(result) == "Error: no predictions to evaluate (the table is empty)"


@pytest.mark.parametrize("command", ["train", "lr-find"])
def test_training_without_processed_data(tmp_path, command):
    result = run(tmp_path, command)
    assert result.exit_code == 1
    assert error_line(result).startswith("Error: no processed data: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("  \n\n", "empty report"), ("Exam aborted: contrast leak.\n", "no vessel findings")],
)
def test_parse_report_fails_where_the_pipeline_rejects(tmp_path, text, expected):
    report = tmp_path / "report.txt"
    report.write_text(text)
    result = run(tmp_path, "parse-report", report, "--json")
    assert result.exit_code == 1
    assert error_line(result) == f"Error: {report}: {expected}"
    assert result.stdout == ""
