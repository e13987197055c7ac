"""Retry policy for tasks that touch object storage or run on Ray workers.

Storage hiccups (timeouts, throttling, a dropped connection: `ede.storage.transient`)
and a Ray worker lost under a task (its node died, the process was killed) deserve a
retry with backoff; everything else (bad input, a missing file, access denied, a
bug) fails the same way every time, so it fails at once.
"""

from __future__ import annotations

from prefect.tasks import exponential_backoff

from ede.storage import transient as storage_transient

# ray.exceptions by name: the scoring flow's process never imports Ray
LOST_WORKER = {"WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError"}


def transient(task, task_run, state) -> bool:
    try:
        state.result()
    except Exception as exc:
        lost = type(exc).__module__.startswith("ray.") and type(exc).__name__ in LOST_WORKER
        return lost or storage_transient(exc)
    return False


STORAGE_RETRIES = dict(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=transient,
)
