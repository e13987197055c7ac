"""One function call as one Ray task, its result (or its error) back as if called here.

Why a task rather than a call: the caller (the retraining flow's process) only
orchestrates; a step that reads a whole table or holds a network runs where Ray
places it, so the caller's memory does not grow with the data and it never imports
what the step imports. Errors come back as the step's own exception, not wrapped in
Ray's (whose message carries the remote traceback), so the caller's retry rules and
one-line messages see what a local call would have raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import ray

T = TypeVar("T")
log = logging.getLogger(__name__)


def call(
    fn: Callable[..., T],
    /,
    *args: Any,
    num_cpus: float = 1,
    num_gpus: float = 0,
    **kwargs: Any,
) -> T:
    """`fn(*args, **kwargs)` in a Ray task holding `num_cpus` and `num_gpus`.

    A step that starts Ray work of its own (a search's trials, a training's workers)
    asks for no CPU, so that work gets the cluster's. Ray does not retry the task
    (`max_retries=0`): the caller's own retry policy (Prefect's) decides."""
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(fn)
    try:
        return ray.get(remote.remote(*args, **kwargs))
    except ray.exceptions.RayTaskError as err:
        log.debug("a Ray task failed:\n%s", err)  # Ray's message: the remote traceback
        if isinstance(err.cause, Exception):
            raise err.cause from None
        raise
