"""A synthetic CCTA cohort with known ground truth: anatomy, volumes, CPR exports, reports."""
