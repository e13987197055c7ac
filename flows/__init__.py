"""Prefect flows around the ede library: retraining (`retrain`) and batch scoring (`score`)."""
