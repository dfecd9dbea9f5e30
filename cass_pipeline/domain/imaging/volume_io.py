"""Readers and writers for real-world inputs to the CPR library: NIfTI volumes, centrelines.

Centreline files are JSON: `{"space": "RAS" | "LPS", "unit": "mm", "branches": {"LAD":
[[x, y, z], ...], ...}}`, points in world millimetres from ostium to distal end. NIfTI affines
are RAS, so LPS points (DICOM, 3D Slicer's default markups export) are flipped on reading.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from cass_pipeline.domain.imaging.cpr import Volume
from cass_pipeline.domain.storage import atomic_path, write_text_atomic

LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def read_nifti(path: str | Path) -> Volume:
    """A NIfTI volume in HU (scale slope and intercept applied) with its RAS affine."""
    image = nib.load(str(path))
    return Volume(data=np.asarray(image.get_fdata(dtype=np.float32)), affine=image.affine)


def write_nifti(volume: Volume, path: str | Path) -> None:
    """Write as int16 HU NIfTI, atomically."""
    path = Path(path)
    image = nib.Nifti1Image(np.round(volume.data).astype(np.int16), volume.affine)
    with atomic_path(path, suffix=".nii.gz") as tmp:
        nib.save(image, str(tmp))


def read_centrelines(path: str | Path) -> dict[str, np.ndarray]:
    """Branch name -> (n, 3) points in RAS millimetres."""
    payload = json.loads(Path(path).read_text())
    space = payload.get("space", "RAS").upper()
    if space not in {"RAS", "LPS"}:
        raise ValueError(f"unknown centreline space {space!r} (expected RAS or LPS)")
    if payload.get("unit", "mm") != "mm":
        raise ValueError("centreline points must be in millimetres")
    branches = {}
    for name, points in payload["branches"].items():
        array = np.asarray(points, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != 3 or len(array) < 2:
            raise ValueError(f"branch {name!r}: expected at least two [x, y, z] points")
        branches[name] = array * LPS_TO_RAS if space == "LPS" else array
    return branches


def write_centrelines(branches: dict[str, np.ndarray], path: str | Path) -> None:
    """Write RAS centrelines as JSON, atomically."""
    payload = {
        "space": "RAS",
        "unit": "mm",
        "branches": {name: np.round(p, 3).tolist() for name, p in branches.items()},
    }
    write_text_atomic(Path(path), json.dumps(payload))
