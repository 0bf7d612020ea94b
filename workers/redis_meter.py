"""Count the Redis commands this process sends, per command and per job, in memory.

A redis-py connection class hook: every command sent (plain calls and pipelines alike)
is counted under its name and under the task run the sending thread is working for, if
any (set by :class:`workers.middleware.metering.Metering`; runs map to jobs when stored).
Counting is a dictionary increment; nothing is sent to Redis for metering. Commands run
inside Lua scripts are billed by hosts but invisible to a client: the broker adds those
of its fetch script (which it can tell from the reply) with :meth:`Meter.count`; other
script calls (hourly maintenance, Dramatiq's nack) count once.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import redis

#: Connection housekeeping that per-command hosts do not bill.
FREE_COMMANDS = frozenset(
    {"AUTH", "HELLO", "SELECT", "COMMAND", "CONFIG", "INFO", "PING", "RESET", "QUIT"}
)


class Meter:
    """Thread-safe counts of commands, keyed by (command, task run id or None)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[tuple[str, int | None]] = collections.Counter()
        self._local = threading.local()

    def attribute_to(self, run_id: int | None) -> None:
        """Count this thread's next commands for task run ``run_id`` (None: the process)."""
        self._local.run_id = run_id

    def current_run(self) -> int | None:
        """Return the task run this thread's commands are counted for (None: the process)."""
        return getattr(self._local, "run_id", None)

    def count(self, command: str) -> None:
        """Count one command sent by the current thread."""
        key = (command, getattr(self._local, "run_id", None))
        with self._lock:
            self._counts[key] += 1

    def take(self) -> dict[tuple[str, int | None], int]:
        """Return the counts so far and start again from zero."""
        with self._lock:
            counts, self._counts = self._counts, collections.Counter()
        return dict(counts)

    def give_back(self, counts: dict[tuple[str, int | None], int]) -> None:
        """Add counts back (a flush that failed keeps them for the next one)."""
        with self._lock:
            self._counts.update(counts)


#: The process's meter.
METER = Meter()


def _command_name(args: tuple[Any, ...]) -> str:
    name = args[0]
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    # redis-py packs some two-word commands as one argument ("CLIENT SETINFO").
    return str(name).split(" ", 1)[0].upper()


def _count(args: tuple[Any, ...]) -> None:
    name = _command_name(args)
    if name not in FREE_COMMANDS:
        METER.count(name)


class _CountingMixin:
    """Counts every command this connection sends, alone or in a pipeline."""

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        _count(args)
        super().send_command(*args, **kwargs)  # type: ignore[misc]

    def pack_commands(self, commands: Any) -> Any:
        commands = list(commands)
        for args in commands:
            _count(tuple(args))
        return super().pack_commands(commands)  # type: ignore[misc]


_counting_classes: dict[type, type] = {}


def counting(connection_class: type[redis.Connection]) -> type[redis.Connection]:
    """Return a subclass of ``connection_class`` whose commands are metered."""
    if issubclass(connection_class, _CountingMixin):
        return connection_class
    if connection_class not in _counting_classes:
        name = f"Counting{connection_class.__name__}"
        _counting_classes[connection_class] = type(name, (_CountingMixin, connection_class), {})
    return _counting_classes[connection_class]


def meter_pool(pool: redis.ConnectionPool) -> redis.ConnectionPool:
    """Make ``pool``'s future connections metered; return it."""
    pool.connection_class = counting(pool.connection_class)
    return pool
