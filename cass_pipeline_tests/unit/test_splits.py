"""Patient-level splits: stratified, deterministic, and leaks are caught."""

import pandas as pd

from cass_pipeline.domain.model.splits import SPLITS, allocate, patient_splits, split_leaks


def cohort(n=120):
    classes = (
        ["no_stenosis"] * (n // 2) + ["non_significant"] * (n // 4) + ["significant"] * (n // 4)
    )
    return pd.DataFrame({"patient_id": [f"P{i:04d}" for i in range(n)], "patient_class": classes})


def test_splits_are_deterministic_stratified_and_disjoint():
    first = patient_splits(cohort(), seed=7)
    assert first.equals(patient_splits(cohort().sample(frac=1, random_state=3), seed=7))
    assert not first.equals(patient_splits(cohort(), seed=8))
    assert first.patient_id.is_unique and len(first) == 120
    counts = first.groupby(["split", "patient_class"]).size().unstack(fill_value=0)
    assert set(first.split) == set(SPLITS)
    assert (counts.loc[["validation", "test"]] >= 2).all().all()  # the floor per class
    assert counts.loc["train"].sum() > counts.loc["test"].sum() > counts.loc["validation"].sum()


def test_allocation_keeps_training_patients_for_tiny_classes():
    assert allocate(1, (0.8, 0.1, 0.1), 2) == [1, 0, 0]
    assert allocate(3, (0.8, 0.1, 0.1), 2)[0] >= 1
    assert sum(allocate(50, (708 / 828, 15 / 828, 105 / 828), 2)) == 50


def test_planted_leaks_are_caught():
    splits = patient_splits(cohort(40), seed=1)
    manifest = pd.DataFrame({"patient_id": splits.patient_id, "source_sha256": splits.patient_id})
    assert split_leaks(splits, manifest) == {"patients": [], "images": []}

    leaked_patient = pd.concat(
        [
            splits,
            splits.iloc[[0]].assign(split="test" if splits.split.iloc[0] != "test" else "train"),
        ]
    )
    assert split_leaks(leaked_patient, manifest)["patients"] == [splits.patient_id.iloc[0]]

    train_id = splits[splits.split == "train"].patient_id.iloc[0]
    test_id = splits[splits.split == "test"].patient_id.iloc[0]
    copied = pd.concat(
        [manifest, pd.DataFrame({"patient_id": [test_id], "source_sha256": [train_id]})]
    )
    assert split_leaks(splits, copied)["images"] == [train_id]
