"""Patient-level train / validation / test splits, stratified by patient class."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from cass_pipeline.domain.options import option
from cass_pipeline.domain.reports.labels import READER

SPLITS = ("train", "validation", "test")
#: Training-share patients a learning-curve point leaves out (`SplitSettings.train_patients`).
UNUSED = "unused"
#: Where a training patient's labels come from: its report, or a reader's verdict.
FROM_REPORT = "report"
SPLIT_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("patient_class", pa.string()),
        ("split", pa.string()),
        ("origin", pa.string()),
    ]
)
#: The paper's 708 / 15 / 105 patients.
PAPER_RATIOS = (708 / 828, 15 / 828, 105 / 828)


@dataclass(frozen=True)
class SplitSettings:
    """Shares of patients per split (default: the paper's) and the seed of the draw."""

    train: float = option(PAPER_RATIOS[0], "share of patients to train on")
    validation: float = option(PAPER_RATIOS[1], "share to select the epoch and calibrate on")
    test: float = option(PAPER_RATIOS[2], "share held out for evaluation")
    seed: int = option(7, "seed of the draw")
    floor_per_class: int = option(
        2, "minimum patients of each class in validation and test, where possible", min=0
    )
    train_patients: int = option(
        0,
        "train on at most this many of the training share (a seeded draw; the others are "
        "'unused'), validation and test unchanged: a learning curve. 0: all",
        min=0,
    )

    @property
    def ratios(self) -> tuple[float, float, float]:
        return (self.train, self.validation, self.test)


def allocate(n: int, ratios: tuple[float, float, float], floor: int) -> list[int]:
    """Patients of one class per split: the ratio, but at least `floor` in validation and test
    when the class has enough patients to leave the rest for training."""
    counts = [round(n * r) for r in ratios[1:]]
    for i in range(2):
        if n - sum(counts) - (floor - counts[i]) >= max(1, floor) and counts[i] < floor:
            counts[i] = floor
    while sum(counts) > n - 1 and n > 1:
        counts[int(np.argmax(counts))] -= 1
    return [n - sum(counts), *counts]


def splittable_patients(patient_labels: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """patient_id and patient_class of the patients with both a label and images, less those
    whose report is held for review (its labels are doubtful until a person has seen them)."""
    usable = (
        patient_labels.patient_id.isin(manifest.patient_id)
        & patient_labels.patient_class.notna()
        & ~patient_labels.held_for_review.astype(bool)
    )
    return patient_labels.loc[usable, ["patient_id", "patient_class"]]


def patient_splits(
    patients: pd.DataFrame,
    ratios=SplitSettings().ratios,
    seed: int = SplitSettings.seed,
    floor_per_class: int = SplitSettings.floor_per_class,
) -> pd.DataFrame:
    """Columns patient_id, patient_class, split; the same input and seed give the same split."""
    if len(ratios) != 3 or abs(sum(ratios) - 1) > 1e-6 or min(ratios) < 0:
        raise ValueError(f"ratios must be three non-negative shares summing to 1, got {ratios}")
    rows = []
    for patient_class, group in patients.sort_values("patient_id").groupby("patient_class"):
        digest = hashlib.sha256(f"{seed}/{patient_class}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        ids = group.patient_id.to_numpy()[rng.permutation(len(group))]
        start = 0
        for split, count in zip(SPLITS, allocate(len(ids), ratios, floor_per_class), strict=True):
            rows += [
                {"patient_id": p, "patient_class": patient_class, "split": split}
                for p in ids[start : start + count]
            ]
            start += count
    return pd.DataFrame(rows).sort_values("patient_id").reset_index(drop=True)


def reader_labelled(branch_labels: pd.DataFrame) -> set[str]:
    """The patients whose labels a reader gave (`source` 'reader'), not a report."""
    return set(branch_labels.patient_id[branch_labels.source == READER])


def from_readers(splits: pd.DataFrame) -> pd.Series:
    """Which rows of `splits` are patients readers labelled (`origin` 'reader'); none in a
    split table written before there was an origin."""
    return splits.get("origin", pd.Series("", index=splits.index)) == READER


def with_reader_patients(splits: pd.DataFrame, readers: pd.DataFrame) -> pd.DataFrame:
    """`splits` of the report-labelled patients, and the patients of `readers` (patient_id,
    patient_class) in training, kept apart by their origin: they never enter validation or
    test, and adding them moves no other patient."""
    return (
        pd.concat(
            [
                splits.assign(origin=FROM_REPORT),
                readers[["patient_id", "patient_class"]].assign(split="train", origin=READER),
            ]
        )
        .sort_values("patient_id")
        .reset_index(drop=True)
    )


def limit_training(splits: pd.DataFrame, train_patients: int, seed: int) -> pd.DataFrame:
    """`splits` with all but `train_patients` training patients (a seeded draw, so a smaller
    point's patients are among a larger one's) marked `UNUSED`; 0 keeps them all."""
    train = splits.index[splits.split == "train"]
    if train_patients <= 0 or train_patients >= len(train):
        return splits
    digest = hashlib.sha256(f"{seed}/train_patients".encode()).digest()
    order = np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(len(train))
    return splits.assign(
        split=splits.split.mask(splits.index.isin(train[order[train_patients:]]), UNUSED)
    )


def split_leaks(splits: pd.DataFrame, manifest: pd.DataFrame) -> dict[str, list[str]]:
    """Patients listed in more than one split, and source images shared across splits."""
    per_patient = splits.groupby("patient_id").split.nunique()
    patients = sorted(per_patient[per_patient > 1].index)
    images = manifest.merge(
        splits.drop_duplicates("patient_id")[["patient_id", "split"]], on="patient_id"
    )
    per_image = images.groupby("source_sha256").split.nunique()
    return {"patients": patients, "images": sorted(per_image[per_image > 1].index)}


def table_hash(frame: pd.DataFrame) -> str:
    """A short content hash of a table (logged to tell data versions apart)."""
    return hashlib.sha256(frame.to_csv(index=False).encode("utf-8")).hexdigest()[:16]


def cross_validation_folds(splits: pd.DataFrame, folds: int, seed: int) -> pd.DataFrame:
    """patient_id and fold (0 to `folds` - 1) of every training and validation patient (the
    test split untouched, 'unused' and reader-labelled patients left out: those train in
    every fold), stratified by patient class: each
    class dealt round the folds in a seeded order, carrying on where the last class stopped,
    so that the folds differ by at most one patient and small classes spread out."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    pool = splits[splits.split.isin(("train", "validation")) & ~from_readers(splits)]
    if len(pool) < folds:
        raise ValueError(f"{len(pool)} training and validation patients for {folds} folds")
    rows, dealt = [], 0
    for patient_class, group in pool.sort_values("patient_id").groupby("patient_class"):
        digest = hashlib.sha256(f"{seed}/folds/{patient_class}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        for patient in group.patient_id.to_numpy()[rng.permutation(len(group))]:
            rows.append({"patient_id": patient, "fold": dealt % folds})
            dealt += 1
    return pd.DataFrame(rows).sort_values("patient_id").reset_index(drop=True)


def fold_splits(splits: pd.DataFrame, folds: pd.DataFrame, fold: int) -> pd.DataFrame:
    """`splits` for one fold: its patients 'validation' (selection, calibration and the
    out-of-fold figures), the other folds' 'train', test and unused as they were."""
    own = set(folds.patient_id[folds.fold == fold])
    pooled = splits.patient_id.isin(folds.patient_id)
    split = splits.split.mask(pooled, "train").mask(splits.patient_id.isin(own), "validation")
    return splits.assign(split=split)
