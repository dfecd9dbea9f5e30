"""Threads that share the CPU with other work, and a command line that starts light."""

import json
import os
import subprocess
import sys

import pytest

from cass_pipeline.domain.device import share_cpu, thread_wait, training_threads, usable_cpus

HEAVY = ("numpy", "pandas", "pyarrow", "cv2", "torch", "spacy", "dagster", "mlflow")


def test_waiting_threads_sleep_unless_told_to_spin():
    environ = {}
    assert share_cpu(environ) == "sleep" and environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    spin = {"CASS_THREAD_WAIT": "spin"}
    assert share_cpu(spin) == "spin" and "OMP_WAIT_POLICY" not in spin
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    share_cpu(mine)
    assert mine["OMP_WAIT_POLICY"] == "ACTIVE"  # the user's own setting wins
    with pytest.raises(ValueError, match="sleep or spin"):
        thread_wait({"CASS_THREAD_WAIT": "fast"})


def test_training_threads_leave_a_core_to_each_loader_worker():
    cpus = usable_cpus()
    assert training_threads(0, {}) == cpus
    assert training_threads(1, {}) == max(1, cpus - 1)
    assert training_threads(cpus + 3, {}) == 1
    assert training_threads(0, {"LOCAL_WORLD_SIZE": str(cpus)}) == 1  # torchrun's ranks share
    assert training_threads(1, {"OMP_NUM_THREADS": "3"}) is None  # the user's (or torchrun's)


def imported_by(code: str) -> list[str]:
    """The heavy packages a fresh interpreter has imported after `code`."""
    report = f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    probe = f"{code}\nimport sys, json\n{report}"
    env = {k: v for k, v in os.environ.items() if k not in ("CASS_THREAD_WAIT", "OMP_WAIT_POLICY")}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_thread_setup_is_in_force_before_torch_starts():
    code = "import cass_pipeline, os; assert os.environ['OMP_WAIT_POLICY'] == 'PASSIVE'"
    assert imported_by(code) == []


def test_cass_help_imports_no_heavy_package():
    code = (
        "import sys; sys.argv = ['cass', '--help']\n"
        "from cass_pipeline.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    assert imported_by(code) == []


def test_parsing_one_report_imports_neither_torch_nor_pandas(tmp_path):
    report = tmp_path / "report.txt"
    report.write_text("LAD: 70% stenosis in the proximal segment.\n")
    code = (
        f"import sys; sys.argv = ['cass', 'parse-report', {str(report)!r}, '--json']\n"
        "from cass_pipeline.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    assert imported_by(code) == ["numpy", "spacy"]  # spaCy's own


def test_torch_and_spacys_command_line_import_as_usual_after_the_parser():
    code = (
        "import cass_pipeline.domain.reports.parser\n"
        "import spacy, spacy.cli, torch\n"
        "assert spacy.cli.info.__module__ == 'spacy.cli.info' and torch.ones(2).sum() == 2\n"
        "import thinc.compat; assert not thinc.compat.has_torch  # thinc went without"
    )
    assert "torch" in imported_by(code)


def test_the_augmented_training_views_reach_a_spawned_loader_worker(tmp_path):
    """Dask's workers and torchrun's may spawn: the dataset must pickle, augmentation and all."""
    import pickle

    import numpy as np
    import pandas as pd

    from cass_pipeline.domain.model.data import ViewDataset

    np.save(tmp_path / "P.npy", np.zeros((2, 32, 32), np.uint8))
    views = pd.DataFrame({"store_path": ["P.npy"] * 2, "store_index": [0, 1], "label": [0, 2]})
    dataset = pickle.loads(pickle.dumps(ViewDataset(views.assign(size=32), tmp_path, True)))
    image, label = dataset[1]
    assert tuple(image.shape) == (3, 32, 32) and int(label) == 2
