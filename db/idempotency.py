"""Starting a project's job once: not while one runs, and once per ``Idempotency-Key``.

Two clicks on "Generate", or a client retrying a request whose answer it lost, must not
start two jobs that rewrite the same guides. A start is guarded twice, with rows of the
``leases`` table (a named row that one holder has until it expires):

- the project's start lease, held while the job is written: a second start of the
  project finds it held, or finds the job it wrote running, and is refused with that
  job's id (unless it forces a new job);
- with an ``Idempotency-Key``, the key's lease: the first request holds it while it
  starts the job, then it names that job for :data:`KEY_TTL_S`; a request with the same
  key gets the same job back, and a request arriving meanwhile is told to retry.

Usage (the job is started inside the block; a block left without one, or by an
exception, releases both leases)::

    with idempotency.starting(project_id, key=key, force=False) as start:
        if start.job_id is None:
            start.started(submit(...))
    return start.job_id
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import secrets
from collections.abc import Iterator

import sqlalchemy as sa

import errors
from db import inputs, lease
from db.engine import session_scope
from db.models import Job, JobStatus, Lease, utcnow

#: How long an Idempotency-Key names the job it started, in seconds (a day).
KEY_TTL_S = 24 * 3600.0
#: How long a start may hold its leases if its process dies meanwhile, in seconds.
START_TTL_S = 60.0
#: Longest Idempotency-Key accepted, in characters.
MAX_KEY_LENGTH = 255


class JobRunningError(errors.ConflictError):
    """Raised when a job of the project is running (or being started); wait, or force."""

    code = "job_running"

    def __init__(self, project_id: int, job_id: int | None) -> None:
        which = f"job {job_id}" if job_id is not None else "a job that is being started"
        super().__init__(
            f"project {project_id} already has {which} running; follow it, cancel it, or"
            " force another job"
        )
        #: The running job (None while the other start has not written it yet).
        self.job_id = job_id


class KeyInUseError(errors.ConflictError):
    """Raised when a request with the same Idempotency-Key is being handled; retry shortly."""

    code = "idempotency_key_in_use"


@dataclasses.dataclass
class Start:
    """A start of a job of ``project_id``, claimed by :func:`starting`."""

    project_id: int
    token: str
    key_name: str | None
    #: The job: an earlier request's (``replayed``), or the one :meth:`started` records.
    job_id: int | None = None
    replayed: bool = False
    guarded: bool = False

    def started(self, job_id: int) -> None:
        """Record the job this start wrote."""
        self.job_id = job_id


@contextlib.contextmanager
def starting(project_id: int, *, key: str | None, force: bool) -> Iterator[Start]:
    """Claim the start of a job of ``project_id`` for the duration of the block.

    Raises:
      inputs.InputError: when ``key`` is empty, too long or not text.
      KeyInUseError: when another request with ``key`` is starting its job now.
      JobRunningError: when the project has a running job and ``force`` is False.
      inputs.InputError: also when ``key`` started a job of another project.
    """
    start = _claim(project_id, key=key, force=force)
    try:
        yield start
    except BaseException:
        _release(start)
        raise
    if start.job_id is None or start.replayed:
        _release(start)
    else:
        _finish(start)


def running_job(project_id: int) -> int | None:
    """Return the newest running job of the project, if any."""
    with session_scope() as session:
        return session.scalar(
            sa.select(sa.func.max(Job.id)).where(
                Job.project_id == project_id, Job.status == JobStatus.RUNNING
            )
        )


def _claim(project_id: int, *, key: str | None, force: bool) -> Start:
    start = Start(project_id, secrets.token_hex(8), _key_name(key) if key is not None else None)
    if start.key_name is not None:
        _forget_expired_keys()
        if not lease.acquire(start.key_name, f"pending:{start.token}", ttl_s=START_TTL_S):
            return _replay(start)
    try:
        if not force:
            _guard(start)
    except BaseException:
        _release(start)
        raise
    return start


def _replay(start: Start) -> Start:
    """Return the start whose key named a job already; raise when it is not there yet."""
    assert start.key_name is not None
    holder = lease.holder_of(start.key_name) or ""
    if not holder.startswith("project:"):
        raise KeyInUseError()
    _, project_id, _, job_id = holder.split(":")
    if int(project_id) != start.project_id:
        raise inputs.InputError(
            f"this Idempotency-Key started a job of project {project_id}; use a new key",
            field="Idempotency-Key",
        )
    start.key_name = None  # not ours to release
    start.job_id, start.replayed = int(job_id), True
    return start


def _guard(start: Start) -> None:
    """Hold the project's start lease, and refuse when a job of the project runs."""
    name = f"start:project:{start.project_id}"
    if not lease.acquire(name, start.token, ttl_s=START_TTL_S):
        raise JobRunningError(start.project_id, running_job(start.project_id))
    start.guarded = True
    running = running_job(start.project_id)
    if running is not None:
        raise JobRunningError(start.project_id, running)


def _finish(start: Start) -> None:
    """Let the key name the job for a day, and release the project's start lease."""
    if start.key_name is not None:
        with session_scope() as session:
            session.execute(
                sa.update(Lease)
                .where(Lease.name == start.key_name, Lease.holder == f"pending:{start.token}")
                .values(
                    holder=f"project:{start.project_id}:job:{start.job_id}",
                    expires_at=utcnow() + dt.timedelta(seconds=KEY_TTL_S),
                )
            )
        start.key_name = None
    _release(start)


def _release(start: Start) -> None:
    if start.key_name is not None:
        lease.release(start.key_name, f"pending:{start.token}")
    if start.guarded:
        lease.release(f"start:project:{start.project_id}", start.token)
        start.guarded = False


def _forget_expired_keys() -> None:
    """Delete the keys that no longer name a job (so the table holds about a day of keys)."""
    with session_scope() as session:
        session.execute(
            sa.delete(Lease).where(Lease.name.like("idempotency:%"), Lease.expires_at < utcnow())
        )


def _key_name(key: str) -> str:
    """Return the lease name of an Idempotency-Key (a hash: any key fits the column)."""
    if not 1 <= len(key.strip()) <= MAX_KEY_LENGTH:
        raise inputs.InputError(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters long",
            field="Idempotency-Key",
        )
    inputs.check_text(key, field="Idempotency-Key")
    return "idempotency:" + hashlib.sha256(key.strip().encode()).hexdigest()
