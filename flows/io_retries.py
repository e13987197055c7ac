"""Retry policy for tasks that touch object storage.

Storage hiccups (timeouts, throttling, a dropped connection) deserve a retry with
backoff; bad input (a missing file, a schema error: ValueError, FileNotFoundError,
PermissionError) fails the same way every time, so it fails at once.
"""

from __future__ import annotations

from prefect.tasks import exponential_backoff

PERMANENT = (ValueError, FileNotFoundError, PermissionError, TypeError, KeyError)


def transient(task, task_run, state) -> bool:
    try:
        state.result()
    except PERMANENT:
        return False
    except Exception:
        return True
    return False


STORAGE_RETRIES = dict(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=transient,
)
