"""Dagster wiring: assets by stage, resources, jobs, schedules and sensors."""
