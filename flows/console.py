"""A failed flow run ends in one line on the console; its tracebacks go to the debug log.

Prefect prints the traceback of a failing task or flow on the console (two to four of
them for one bad file, over a hundred lines), where the operator of a scheduled run
needs the task and the cause. So the console handlers Prefect configured keep their
format but drop exception text, every record (tracebacks included) also goes to a
debug log file, and `failure_line` (each flow's `on_failure` hook) logs the summary:
the flow, the task that failed and the cause's first line. Prefect's API handler is
left alone: the UI still shows the tracebacks of each run.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

from prefect.logging.handlers import PrefectConsoleHandler

from ede.storage import first_line

DEBUG_LOG_ENV = "EDE_DEBUG_LOG"  # a file path; default: <PREFECT_HOME>/ede-debug.log


class WithoutTraceback(logging.Formatter):
    """`inner`'s format of a copy of the record without its exception or stack."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        plain = copy.copy(record)
        plain.exc_info, plain.exc_text, plain.stack_info = None, None, None
        return self.inner.format(plain)


def debug_log_path() -> Path:
    if path := os.environ.get(DEBUG_LOG_ENV):
        return Path(path)
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()) / "ede-debug.log"


def quiet_tracebacks() -> Path:
    """Reformat Prefect's console handlers and add the debug log; idempotent. Returns the
    debug log's path."""
    path = debug_log_path()
    loggers = [logging.getLogger()] + [
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
    ]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(
                handler.formatter, WithoutTraceback
            ):
                handler.setFormatter(WithoutTraceback(handler.formatter))
    root = logging.getLogger()
    if not any(getattr(h, "ede_debug_log", False) for h in root.handlers):
        path.parent.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(path, encoding="utf-8", delay=True)
        file.setFormatter(
            logging.Formatter("%(asctime)s | %(levelname)-7s | %(name)s - %(message)s")
        )
        file.ede_debug_log = True  # type: ignore[attr-defined]
        root.addHandler(file)  # the run loggers propagate to the root: it sees their records
    return path


def failure_line(flow, flow_run, state) -> None:
    """`on_failure` hook: one ERROR line naming the flow, the failed task and the cause."""
    from prefect.logging.loggers import flow_run_logger

    exc = state.result(raise_on_failure=False)
    if isinstance(exc, BaseException):
        cause = f"{type(exc).__name__}: {first_line(exc)}"
    else:
        cause = (state.message or state.name).strip().splitlines()[0]
    task = _failed_task(flow_run.id)
    where = f" in task {task!r}" if task else ""
    flow_run_logger(flow_run, flow).error(
        "%s failed%s: %s (tracebacks: %s)", flow.name, where, cause, debug_log_path()
    )


def _failed_task(flow_run_id) -> str | None:
    """The name of the flow run's (last) failed task run, if the API knows one."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    try:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                task_run_filter=TaskRunFilter(
                    state=TaskRunFilterState(
                        type=TaskRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED])
                    )
                ),
            )
    except Exception:  # noqa: BLE001 - the summary still names the cause
        return None
    ended = sorted((r for r in runs if r.end_time), key=lambda r: r.end_time)
    last = (ended or runs or [None])[-1]
    return None if last is None else last.name.rsplit("-", 1)[0]  # "ingest-dc2": "ingest"
