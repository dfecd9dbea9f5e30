"""Pure domain code: reports, imaging, model, evaluation, synthetic data.

Nothing under this package imports dagster or mlflow (a test enforces it); the Dagster
assets and the CLI are thin layers over these modules.
"""
