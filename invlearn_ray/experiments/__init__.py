"""Experiment management: datasets by name, search spaces, MLflow tracking, batches of runs,
tuning studies and the benchmark."""
