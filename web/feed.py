"""Recent events of the jobs watched in this process, shared by all their streams.

A commit wakes every stream of its job at once. Without sharing, each would read the
new events itself: one query per stream per commit. Here the first stream to ask reads
them once; the others are served from memory. So an event costs one query per web
process, however many browsers watch the job.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

#: A job's event as plain data: ``{"seq", "type", "payload"}``.
EventData = dict[str, Any]
#: Reads a job's events after a seq from the database: ``(job_id, after_seq) -> events``.
Reader = Callable[[int, int], list[EventData]]


class EventFeed:
    """The newest events of recently watched jobs, filled by whichever stream reads first."""

    def __init__(self, reader: Reader, *, keep: int = 500, jobs: int = 256) -> None:
        """Parameters:
        reader: reads the events after a seq (at most one page) from the database.
        keep: events kept per job.
        jobs: jobs kept (least recently read are dropped first).
        """
        self._reader = reader
        self._keep = keep
        self._jobs = jobs
        self._lock = threading.Lock()
        self._job_locks: dict[int, threading.Lock] = collections.defaultdict(threading.Lock)
        self._recent: collections.OrderedDict[int, list[EventData]] = collections.OrderedDict()
        #: Database reads made (for tests and measurements).
        self.reads = 0

    def after(self, job_id: int, after_seq: int, newest: int, *, limit: int) -> list[EventData]:
        """Return the job's events after ``after_seq`` (at most ``limit``), in order.

        ``newest`` is the seq a wake-up announced (``-1``: unknown); memory answers when it
        holds every event from ``after_seq + 1`` to ``newest``, else the database does.
        """
        with self._lock:
            job_lock = self._job_locks[job_id]
        with job_lock:  # streams of one job queue here, and then find the events in memory
            cached = self._recent.get(job_id)
            if cached and _covers(cached, after_seq, newest):
                return [e for e in cached if e["seq"] > after_seq][:limit]
            new = self._reader(job_id, after_seq)
            self.reads += 1
            self._remember(job_id, new)
            return new

    def _remember(self, job_id: int, new: list[EventData]) -> None:
        if not new:
            return
        cached = self._recent.get(job_id) or []
        first = new[0]["seq"]
        if cached and cached[0]["seq"] <= first <= cached[-1]["seq"] + 1:
            merged = [e for e in cached if e["seq"] < first] + new  # still contiguous
        else:
            merged = new
        with self._lock:
            self._recent[job_id] = merged[-self._keep :]
            self._recent.move_to_end(job_id)
            while len(self._recent) > self._jobs:
                dropped, _ = self._recent.popitem(last=False)
                self._job_locks.pop(dropped, None)


def _covers(cached: list[EventData], after_seq: int, newest: int) -> bool:
    """True when ``cached`` (contiguous) holds every event from ``after_seq + 1`` to ``newest``."""
    return newest >= 0 and cached[0]["seq"] <= after_seq + 1 and cached[-1]["seq"] >= newest
