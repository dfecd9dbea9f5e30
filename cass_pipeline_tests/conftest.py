"""Shared fixtures: one tiny synthetic cohort per test session."""

from pathlib import Path

import pytest

from cass_pipeline.domain.synthetic.cohort import generate_cohort
from cass_pipeline.domain.synthetic.config import preset


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """Four patients, four 64 px views per branch, DICOM, with volumes and centrelines."""
    out = tmp_path_factory.mktemp("tiny_cohort")
    generate_cohort(preset("tiny", write_volumes=True), out, workers=2)
    return out


def write_training_data(root: Path, patients: int = 12, views: int = 4, size: int = 32) -> Path:
    """A tiny processed folder: image store, manifest, branch labels and splits.

    Branch class c shows as a dark notch of width 4c in a bright vertical band, so the task is
    learnable; patients 0-7 train, 8-9 validation, 10-11 test.
    """
    import numpy as np
    import pandas as pd

    from cass_pipeline.domain.imaging.cleanup import CleanupConfig

    rng = np.random.default_rng(0)
    manifest, labels, splits = [], [], []
    (root / "images" / "store").mkdir(parents=True, exist_ok=True)
    for p in range(patients):
        pid = f"P{p:03d}"
        split = "train" if p < 8 else "validation" if p < 10 else "test"
        images = []
        worst = 0
        for b, branch in enumerate(("LAD", "LCX")):
            label = (p + b) % 3
            worst = max(worst, label)
            labels.append({"patient_id": pid, "branch": branch, "label": label})
            for v in range(views):
                image = rng.integers(20, 60, (size, size)).astype(np.uint8)
                image[:, 12:20] = 200
                image[10:14, 12 : 12 + 4 * label] = 30
                manifest.append(
                    {
                        "patient_id": pid,
                        "artery": branch,
                        "branch": branch,
                        "view_index": v,
                        "store_path": f"images/store/{pid}.npy",
                        "store_index": len(images),
                        "size": size,
                        "source_sha256": f"{pid}-{branch}-{v}",
                        "cleanup_fingerprint": CleanupConfig(size).fingerprint(),
                    }
                )
                images.append(image)
        np.save(root / "images" / "store" / f"{pid}.npy", np.stack(images))
        splits.append({"patient_id": pid, "patient_class": str(worst), "split": split})
    (root / "reports").mkdir(exist_ok=True)
    (root / "model").mkdir(exist_ok=True)
    pd.DataFrame(manifest).to_parquet(root / "images" / "manifest.parquet")
    pd.DataFrame(labels).to_parquet(root / "reports" / "branch_labels.parquet")
    pd.DataFrame(splits).to_parquet(root / "model" / "splits.parquet")
    return root


@pytest.fixture
def training_data(tmp_path) -> Path:
    return write_training_data(tmp_path / "processed")


def training_views(root: Path):
    """Labelled views of a processed folder written by `write_training_data`."""
    import pandas as pd

    from cass_pipeline.domain.model.data import labelled_views

    return labelled_views(
        pd.read_parquet(root / "images" / "manifest.parquet"),
        pd.read_parquet(root / "reports" / "branch_labels.parquet"),
        pd.read_parquet(root / "model" / "splits.parquet"),
    )


def register_without_bundle(tracking, size: int) -> int:
    """A version registered the old way (PyTorch flavour, no bundle): what an older CASS
    left in a registry."""
    import mlflow.pytorch
    import numpy as np

    from cass_pipeline.domain.model.network import build_model

    with tracking.start_run("registered the old way"):
        info = mlflow.pytorch.log_model(
            build_model("shufflenet_v2_x0_5", "none").model,
            name="model",
            serialization_format="pickle",
            input_example=np.zeros((2, 3, size, size), np.float32),
            registered_model_name="cass-stenosis",
        )
    return int(info.registered_model_version)
