"""Cross-validation folds: by patient, stratified by class, the test split untouched."""

import pandas as pd
import pytest

from cass_pipeline.domain.evaluation.crossval import crossval_markdown, fold_spread
from cass_pipeline.domain.model.splits import cross_validation_folds, fold_splits


def splits_of(n: int = 23) -> pd.DataFrame:
    classes = ["no_stenosis", "non_significant", "significant"]
    return pd.DataFrame(
        {
            "patient_id": [f"P{i:02d}" for i in range(n)],
            "patient_class": [classes[i % 3] for i in range(n)],
            "split": ["test" if i >= n - 5 else "unused" if i == 0 else "train" for i in range(n)],
        }
    )


def test_every_training_patient_in_one_fold_classes_spread_and_test_untouched():
    splits = splits_of()
    folds = cross_validation_folds(splits, 3, seed=7)
    pool = set(splits.patient_id[splits.split.isin(["train", "validation"])])
    assert set(folds.patient_id) == pool and folds.patient_id.is_unique
    sizes = folds.fold.value_counts()
    assert sizes.max() - sizes.min() <= 1
    per_class = folds.merge(splits).groupby(["patient_class", "fold"]).size().unstack(fill_value=0)
    assert (per_class.max(axis=1) - per_class.min(axis=1)).max() <= 1
    assert folds.equals(cross_validation_folds(splits, 3, seed=7))  # same seed, same folds
    for fold in range(3):
        one = fold_splits(splits, folds, fold)
        assert one.loc[one.split == "test"].equals(splits.loc[splits.split == "test"])
        assert set(one.patient_id[one.split == "validation"]) == set(
            folds.patient_id[folds.fold == fold]
        )
        assert one.split[splits.split == "unused"].eq("unused").all()


def test_too_few_folds_or_patients_are_refused():
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_validation_folds(splits_of(), 1, seed=7)
    with pytest.raises(ValueError, match="patients for 40 folds"):
        cross_validation_folds(splits_of(), 40, seed=7)


def test_figures_per_fold_with_mean_spread_and_pooled():
    def figures(f1):
        return {
            level: {"n": 4, "accuracy": f1, "f1_weighted": f1}
            for level in ("segment", "artery", "patient")
        }

    per_fold, pooled = [figures(0.6), figures(0.8)], figures(0.7)
    spread = fold_spread(per_fold)["patient"]["f1_weighted"]
    assert spread["mean"] == pytest.approx(0.7) and spread["std"] == pytest.approx(0.1414, abs=1e-4)
    table = crossval_markdown(per_fold, pooled)
    assert "| patient | f1_weighted | 0.600 | 0.800 | 0.700 +- 0.141 | 0.700 (4) |" in table
