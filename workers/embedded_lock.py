"""One embedded process per database: a lock file next to the SQLite file, under ``instance/``.

In the embedded mode the messages of a job live in one process's in-memory broker, and
its progress is announced by an in-process signal. Two such processes on one database
would each miss the other's work and events, and each would take the other's running
jobs for abandoned ones. So the process that runs embedded workers holds an exclusive
``flock`` on ``<database file>.lock`` for as long as it lives (the kernel releases it
when the process ends, however it ends), and writes who it is into the file, so that
a second one can say which process to use or stop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import errors
from settings import INSTANCE_DIR

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, the mode still works alone
    fcntl = None  # type: ignore[assignment]


class EmbeddedBusyError(errors.ConflictError):
    """Raised when another process runs the embedded worker of this database; use or stop it."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        self.path = path
        self.holder = holder
        use = (
            f"Use that one (start jobs from its page or API: {holder['url']})"
            if holder.get("url")
            else "Use that one"
        )
        super().__init__(
            f"{describe(holder)} runs the embedded worker of this database (lock: {path});"
            " only one process may, since its jobs' messages live in that process's memory."
            f" {use}, or stop it (Ctrl+C in its terminal) and try again; to run several"
            " processes, set REDIS_URL."
        )


def describe(holder: dict[str, Any]) -> str:
    """Return ``handson serve (pid 12, http://127.0.0.1:5000/)`` for a holder's record."""
    what = holder.get("role") or "another process"
    details = [f"pid {holder['pid']}"] if holder.get("pid") else []
    if holder.get("url"):
        details.append(str(holder["url"]))
    return f"{what} ({', '.join(details)})" if details else what


def state_path(database_url: str, suffix: str) -> Path | None:
    """Return the path of a file of local state that belongs with the database.

    Next to a SQLite file (``instance/handson.db`` -> ``instance/handson.db<suffix>``);
    under ``instance/`` for a server database; None for an in-memory SQLite database.
    """
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return None
        return Path(url.database).resolve().with_name(Path(url.database).name + suffix)
    digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()
    return INSTANCE_DIR / f"embedded-{digest[:12]}{suffix}"


@dataclasses.dataclass
class _Held:
    fd: int
    claims: int = 1
    resumed: bool = False


_held: dict[Path, _Held] = {}
_held_lock = threading.Lock()


@dataclasses.dataclass
class Claim:
    """This process's hold on a database's embedded lock; :meth:`release` once done."""

    path: Path | None

    def first_to_resume(self) -> bool:
        """Return True once per process and lock: the caller resumes abandoned work."""
        if self.path is None:
            return True
        with _held_lock:
            held = _held.get(self.path)
            if held is None or held.resumed:
                return False
            held.resumed = True
            return True

    def release(self) -> None:
        """Give up this claim; the lock goes with the last claim of the process."""
        if self.path is None:
            return
        with _held_lock:
            held = _held.get(self.path)
            if held is None:
                return
            held.claims -= 1
            if held.claims == 0:
                del _held[self.path]
                os.ftruncate(held.fd, 0)  # no record: nobody holds it (see other_holder)
                os.close(held.fd)  # closing the descriptor releases the flock
        self.path = None


def claim(database_url: str, *, role: str, url: str | None = None) -> Claim:
    """Take the database's embedded lock for this process (again, if it already holds it).

    Parameters:
      database_url: the database whose embedded worker this process runs.
      role: what this process is, shown to a second one (``handson serve``).
      url: where this process serves, if it does.

    Raises:
      EmbeddedBusyError: when another process holds it.
    """
    path = state_path(database_url, ".lock")
    if path is None or fcntl is None:
        return Claim(None)
    with _held_lock:
        if path in _held:
            _held[path].claims += 1
            return Claim(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise EmbeddedBusyError(path, holder) from None
        record = {"pid": os.getpid(), "role": role, "url": url}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        _held[path] = _Held(fd)
    return Claim(path)


def holds(database_url: str) -> bool:
    """Return whether this process holds the database's embedded lock."""
    path = state_path(database_url, ".lock")
    with _held_lock:
        return path is not None and path in _held


def other_holder(database_url: str) -> dict[str, Any] | None:
    """Return the record of another process holding the database's lock, if one does.

    Reads the holder's record first and probes the lock only when its process is alive:
    a probe holds the lock for a moment, and must not make a starting process fail.
    """
    path = state_path(database_url, ".lock")
    if path is None or fcntl is None:
        return None
    with _held_lock:
        if path in _held:
            return None  # this process holds it
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        record = _read(fd)
        if not _alive(record.get("pid")):
            return None  # released (no record), or its holder died (the kernel freed it)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return record
    finally:
        os.close(fd)  # also releases a shared lock taken just now
    return None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _read(fd: int) -> dict[str, Any]:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
