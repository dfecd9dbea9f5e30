"""Serving a registered model: its bundle, the predictor, the roll-up, one patient's outputs."""
