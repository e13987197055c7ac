"""Peak memory of a process tree, read from /proc: what `pipeline_rows.py` reports.

RSS is what a user's `top` shows and what the issue measured; PSS splits shared pages
(torch's libraries in every Ray worker, the object store) among the processes mapping
them, so the two side by side bracket the memory really in use.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

SAMPLE_S = 0.2


class TreeSampler:
    """Peak memory of this process and its descendants, read from /proc every SAMPLE_S s.

    RSS (what the issue measured) every sample; PSS, which splits each shared page
    among the processes mapping it (torch's libraries in every Ray worker, the
    object store), every PSS_EVERY-th sample. The driver's RSS is kept as a time
    series, so the peak within each task's window can be read off afterwards.
    """

    PSS_EVERY = 5

    def __init__(self):
        self.me = os.getpid()
        self.kinds: dict[int, str] = {}
        self.peak_total, self.peak_by_kind, self.peak_processes, self.peak_pss = 0, {}, 0, 0
        self.timeline: list[tuple[float, int]] = []  # (unix time, driver RSS)
        self.baseline = self._rss_total()[0]
        self.baseline_pss = self._pss_total()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        tree, todo = [], [self.me]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        return tree

    def _kind(self, pid: int) -> str:
        if pid not in self.kinds:
            try:
                text = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                text = ""
            if pid == self.me:
                kind = "driver"
            elif "prefect" in text and "server" in text:
                kind = "prefect_server"
            elif "ray" in text:
                kind = "ray"
            else:
                kind = "other"
            self.kinds[pid] = kind
        return self.kinds[pid]

    def _rss_total(self) -> tuple[int, dict[str, int], int, int]:
        by_kind: dict[str, int] = {}
        total, driver, tree = 0, 0, self._tree()
        for pid in tree:
            try:
                rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
            except OSError:
                continue
            total += rss
            driver = rss if pid == self.me else driver
            kind = self._kind(pid)
            by_kind[kind] = by_kind.get(kind, 0) + rss
        return total, by_kind, len(tree), driver

    def _pss_total(self) -> int:
        total = 0
        for pid in self._tree():
            try:
                text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            total += int(text.split("Pss:")[1].split()[0]) * 1024
        return total

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(SAMPLE_S):
            total, by_kind, n, driver = self._rss_total()
            self.timeline.append((time.time(), driver))
            if total > self.peak_total:
                self.peak_total, self.peak_by_kind = total, by_kind
            self.peak_processes = max(self.peak_processes, n)
            i += 1
            if i % self.PSS_EVERY == 0:
                self.peak_pss = max(self.peak_pss, self._pss_total())

    def driver_peak_between(self, start: float, end: float) -> int:
        inside = [rss for t, rss in self.timeline if start <= t <= end + SAMPLE_S]
        return max(inside, default=0)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


PAGE = os.sysconf("SC_PAGE_SIZE")


def vm_hwm() -> int:
    """This process's peak RSS in bytes."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) * 1024
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
