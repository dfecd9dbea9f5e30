"""Evaluation beside the paper: the report of a model's figures and the promotion rule."""
