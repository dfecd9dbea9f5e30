"""MLflow tracking and the training run: the wiring between the domain and MLflow."""
