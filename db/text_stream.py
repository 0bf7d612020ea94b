"""Guide text as it is written: deltas told to watchers, never stored.

A delta is a piece of a running task run's guide with its place in the text (``offset``,
in characters) and the ``stream`` it belongs to (one per attempt: a retried run starts
a new stream at offset 0). Watchers order and deduplicate deltas with these.

On PostgreSQL :func:`send` is one ``SELECT pg_notify(...)`` on :data:`CHANNEL`, on an
autocommit pooled connection checked out for that statement only: no transaction, no
row written. On SQLite (the embedded mode, one process) it is the in-process
:data:`guide_text` signal. Nothing goes through Redis.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from blinker import Namespace
from sqlalchemy.dialects import postgresql

from db.engine import get_engine

#: PostgreSQL channel carrying ``"<job>:<run>:<stream>:<offset>:<text>"`` payloads.
CHANNEL = "handson_text"
#: Largest NOTIFY payload sent, in bytes (PostgreSQL refuses 8000 and more).
MAX_PAYLOAD_BYTES = 4000

_signals = Namespace()
#: Sent with ``deltas`` (a list of :class:`TextDelta`) in the embedded mode.
guide_text = _signals.signal("guide-text")


@dataclasses.dataclass(frozen=True)
class TextDelta:
    """A piece of a run's guide: ``text`` goes at ``offset`` (characters) of ``stream``."""

    job_id: int
    run_id: int
    stream: str
    offset: int
    text: str

    @property
    def end(self) -> int:
        """The offset just after this piece."""
        return self.offset + len(self.text)

    def payload(self) -> str:
        """Return this delta as a NOTIFY payload (parsed back by :meth:`parse`)."""
        return f"{self.job_id}:{self.run_id}:{self.stream}:{self.offset}:{self.text}"

    @classmethod
    def parse(cls, payload: str) -> TextDelta:
        """Return the delta of a payload made by :meth:`payload`.

        Raises:
          ValueError: when ``payload`` is not one.
        """
        job_id, run_id, stream, offset, text = payload.split(":", 4)
        return cls(int(job_id), int(run_id), stream, int(offset), text)

    def data(self) -> dict[str, Any]:
        """Return it as the data of a ``guide_text`` server-sent event."""
        return {
            "run_id": self.run_id,
            "stream": self.stream,
            "offset": self.offset,
            "text": self.text,
        }


def split(delta: TextDelta, max_bytes: int = MAX_PAYLOAD_BYTES) -> list[TextDelta]:
    """Cut ``delta`` into deltas whose payloads take at most ``max_bytes`` bytes each.

    Cuts fall between characters (never inside one's UTF-8 bytes).
    """
    # The header's offset is at most the last piece's: its digits are counted for all.
    header = dataclasses.replace(delta, offset=delta.end, text="").payload()
    room = max_bytes - len(header.encode())
    if room < 4:
        raise ValueError(f"max_bytes={max_bytes} leaves no room for text")
    pieces: list[TextDelta] = []
    offset, text = delta.offset, delta.text
    while True:
        take = _chars_within(text, room)
        pieces.append(dataclasses.replace(delta, offset=offset, text=text[:take]))
        offset, text = offset + take, text[take:]
        if not text:
            return pieces


def _chars_within(text: str, max_bytes: int) -> int:
    """Return how many leading characters of ``text`` fit in ``max_bytes`` UTF-8 bytes."""
    if len(text) * 4 <= max_bytes:
        return len(text)
    cut = text.encode()[:max_bytes].decode(errors="ignore")
    return len(cut)


@functools.lru_cache(maxsize=4)
def _autocommit(engine: sa.Engine) -> sa.Engine:
    """The engine's autocommit twin (same pool): a statement, and no BEGIN or COMMIT."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def send(deltas: Sequence[TextDelta]) -> None:
    """Tell watchers of these deltas (one statement on PostgreSQL, a signal otherwise).

    Each delta must fit a payload (see :func:`split`); PostgreSQL text holds no NUL
    character, so callers strip those.
    """
    if not deltas:
        return
    engine = get_engine()
    if engine.dialect.name != "postgresql":
        guide_text.send(None, deltas=list(deltas))
        return
    with _autocommit(engine).connect() as connection:
        send_on(connection, deltas)


def heard_in_order_with_commits() -> bool:
    """Whether deltas sent by :func:`send_on` in a transaction reach every watcher before
    that transaction's own events.

    On SQLite all is in-process signals, in order. On PostgreSQL watchers in other
    processes hear both by NOTIFY, in order; but watchers in this process hear its
    events by the in-process signal at commit, ahead of its NOTIFYs: false when this
    process has any (an event hub listening for guide text).
    """
    return get_engine().dialect.name != "postgresql" or not guide_text.receivers


def send_on(
    connection: sa.Connection,
    deltas: Sequence[TextDelta],
    along: sa.Insert | None = None,
    with_: dict[str, Any] | None = None,
) -> None:
    """Tell watchers of these deltas from the caller's transaction on ``connection``.

    On PostgreSQL the one statement of :func:`send`: heard when that transaction
    commits, before what it notifies later (its events), never on rollback. Elsewhere
    the in-process signal, at once. ``along`` is a write to run with it (its parameters
    in ``with_``): on PostgreSQL both go in one statement, the write as a CTE.
    """
    if connection.dialect.name != "postgresql" or not deltas:
        if deltas:
            guide_text.send(None, deltas=list(deltas))
        if along is not None:
            connection.execute(along, with_ or {})
        return
    payloads = {"payloads": [delta.payload() for delta in deltas]}
    connection.execute(_notify(along), {**(with_ or {}), **payloads})


@functools.lru_cache(maxsize=4)
def _notify(along: sa.Insert | None) -> sa.Select[Any]:
    """Return the statement sending the ``payloads`` parameter: one ``pg_notify`` per
    payload, in order, whatever their number; with ``along`` as a data-modifying CTE.
    Built once per write."""
    payloads = sa.cast(sa.bindparam("payloads"), postgresql.ARRAY(sa.Text))
    each = sa.func.unnest(payloads).table_valued("p").render_derived(name="each")
    notify = sa.func.pg_notify(sa.literal_column(f"'{CHANNEL}'"), each.c.p)
    statement = sa.select(notify).select_from(each)
    return statement if along is None else statement.add_cte(along.cte("written"))


@dataclasses.dataclass
class _Kept:
    """The text so far of one run's current stream."""

    job_id: int
    stream: str
    start: int
    text: str
    touched: float
    full: bool = False

    @property
    def end(self) -> int:
        return self.start + len(self.text)


class TextSoFar:
    """The text so far of the runs streaming now, bounded, for watchers who join late.

    A run's text is kept from the first delta heard (its offset may be past 0 when this
    process started listening mid-guide), dropped by :meth:`forget` (its outcome), by a
    newer stream of the run (a retry), or once no delta came for ``keep_s``.

    Parameters:
      max_runs: most runs kept (the least recently streamed go first).
      max_chars: most text kept per run, in characters.
      keep_s: how long a run's text is kept after its last delta, in seconds.
    """

    def __init__(
        self, *, max_runs: int = 256, max_chars: int = 20_000, keep_s: float = 120.0
    ) -> None:
        self.max_runs, self.max_chars, self.keep_s = max_runs, max_chars, keep_s
        self._runs: collections.OrderedDict[int, _Kept] = collections.OrderedDict()

    def add(self, delta: TextDelta, now: float) -> None:
        """Add ``delta`` to its run's text (overlaps are ignored; a gap starts afresh)."""
        kept = self._runs.get(delta.run_id)
        if kept is None or kept.stream != delta.stream or delta.offset > kept.end:
            if kept is not None and kept.stream == delta.stream and kept.full:
                return
            kept = _Kept(delta.job_id, delta.stream, delta.offset, "", now)
        if delta.end > kept.end and not kept.full:
            kept.text += delta.text[kept.end - delta.offset :]
            kept.full = len(kept.text) >= self.max_chars
            kept.text = kept.text[: self.max_chars]
        kept.touched = now
        self._runs[delta.run_id] = kept
        self._runs.move_to_end(delta.run_id)
        self._expire(now)

    def of_job(self, job_id: int, now: float) -> list[TextDelta]:
        """Return the text so far of each of the job's streaming runs, as one delta each."""
        self._expire(now)
        return [
            TextDelta(kept.job_id, run_id, kept.stream, kept.start, kept.text)
            for run_id, kept in self._runs.items()
            if kept.job_id == job_id and kept.text
        ]

    def forget(self, run_id: int) -> None:
        """Drop a run's text (its outcome is known)."""
        self._runs.pop(run_id, None)

    def forget_job(self, job_id: int) -> None:
        """Drop the text of every run of a job (it ended)."""
        for run_id in [r for r, kept in self._runs.items() if kept.job_id == job_id]:
            del self._runs[run_id]

    def __len__(self) -> int:
        return len(self._runs)

    def _expire(self, now: float) -> None:
        """Drop runs past ``max_runs`` and those silent for ``keep_s`` (oldest first)."""
        while self._runs:
            oldest = next(iter(self._runs.values()))
            if len(self._runs) <= self.max_runs and now - oldest.touched < self.keep_s:
                return
            self._runs.popitem(last=False)
