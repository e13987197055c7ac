"""The scheduled jobs' steps as plain functions: retrain (train, evaluate, report) and score.

Orchestrators (the Prefect flows in `flows/`) compose these and add retries, logging
and UI artifacts; nothing here knows which orchestrator runs it, so every step can be
called and tested on its own. This package imports nothing eagerly: the scoring steps
must stay free of Ray and torch.
"""
