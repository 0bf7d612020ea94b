"""The engine on random projects, with outcomes recorded concurrently from several threads.

No broker here: worker threads take what each release hands out (a group's tasks one by
one, a pipeline's steps in order), start each run, and record its outcome, as the
``Progress`` middleware does. On PostgreSQL, so that concurrent outcomes really race.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_planner import dags
from workerkit import make_project

import db
import pipelines
from db import jobs, progress, starts
from db.models import Event, RunStatus, TaskRun
from pipelines import DispatchSpec, TaskNode

ENGINE_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
THREADS = 4


@pytest.fixture
def database(postgres_url: str) -> Iterator[None]:
    db.configure(postgres_url)
    yield


@dataclasses.dataclass
class Run:
    """What the simulated workers saw of one job."""

    job_id: int
    task_of_run: dict[int, str]
    failing: set[str]
    deps: dict[str, tuple[str, ...]]
    #: The job's cap on units queued or running.
    cap: int
    #: Each task's rank in the job's plan (``pipelines.remaining_paths``).
    ranks: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Order in which the generator ran, by task key (one entry per call).
    generated: list[str] = dataclasses.field(default_factory=list)
    released: list[DispatchSpec] = dataclasses.field(default_factory=list)
    #: Units queued or running now, and the most at once.
    in_flight: int = 0
    peak: int = 0
    violations: list[str] = dataclasses.field(default_factory=list)
    finished: threading.Event = dataclasses.field(default_factory=threading.Event)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class Workers:
    """Threads that run what the engine releases, until the job finishes."""

    def __init__(self, run: Run, *, redeliver: bool) -> None:
        self.run, self.redeliver = run, redeliver
        self.work: queue.Queue[tuple[str, tuple[int, ...]] | None] = queue.Queue()

    def hand_out(self, specs: tuple[DispatchSpec, ...]) -> None:
        with self.run.lock:
            for spec in specs:
                self.run.released.append(spec)
                slots = 1 if spec.mode == pipelines.PIPELINE else len(spec.run_ids)
                self.run.in_flight += slots
                self.run.peak = max(self.run.peak, self.run.in_flight)
        for spec in specs:
            units = (
                [spec.run_ids] if spec.mode == pipelines.PIPELINE else [(r,) for r in spec.run_ids]
            )
            for steps in units:
                self.work.put((spec.mode, steps))
                if self.redeliver:  # at-least-once: every message may come twice, at once
                    self.work.put((spec.mode, steps))

    def loop(self) -> None:
        while (item := self.work.get()) is not None:
            _, steps = item
            for run_id in steps:
                if not self._process(run_id, last=run_id == steps[-1]):
                    break

    def _process(self, run_id: int, *, last: bool) -> bool:
        """Start and finish one run; return whether a pipeline goes on to its next step."""
        started = starts.start_run(run_id)
        self._settle(started.outcome, run_id, ended=started.decision is starts.Start.SKIPPED)
        if started.decision is not starts.Start.RUN:
            return False
        key = self.run.task_of_run[run_id]
        self._check_dependencies_succeeded(key)
        with self.run.lock:
            self.run.generated.append(key)
        fails = key in self.run.failing
        status = RunStatus.FAILED if fails else RunStatus.SUCCEEDED
        outcome = progress.record_outcome(run_id, status, "scripted" if fails else None)
        self._settle(outcome, run_id, ended=True)
        return not fails

    def _settle(self, outcome: progress.Outcome, run_id: int, *, ended: bool) -> None:
        # A duplicate's end frees nothing: count slots only when each message comes once.
        if ended and not self.redeliver:
            with self.run.lock:
                self.run.in_flight -= self._slots_freed(run_id)
        self.hand_out(outcome.dispatches)
        if outcome.job_status is not None:
            self.run.finished.set()

    def _slots_freed(self, run_id: int) -> int:
        """Slots the end of ``run_id`` frees (its own, or its pipeline's when it ended it)."""
        with db.session_scope() as session:
            row = session.execute(
                sa.select(TaskRun.frees_slot, TaskRun.batch_id, TaskRun.position).where(
                    TaskRun.id == run_id
                )
            ).one()
            if row.frees_slot:
                return 1
            # A pipeline step that failed or was skipped ends its pipeline early.
            later = session.scalar(
                sa.select(sa.func.count()).where(
                    TaskRun.batch_id == row.batch_id,
                    TaskRun.position > row.position,
                    TaskRun.status == RunStatus.SKIPPED,
                    TaskRun.frees_slot,
                )
            )
            return int(bool(later))

    def _check_dependencies_succeeded(self, key: str) -> None:
        status = {self.run.task_of_run[r]: s for r, s in _run_statuses(self.run.job_id).items()}
        for dep in self.run.deps[key]:
            if status[dep] != RunStatus.SUCCEEDED:
                self.run.violations.append(f"{key} ran before {dep} succeeded")

    def run_job(self, created: jobs.CreatedJob, timeout: float = 60) -> None:
        threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        self.hand_out(created.dispatches)
        finished = self.run.finished.wait(timeout)
        for _ in threads:
            self.work.put(None)
        for thread in threads:
            thread.join(timeout)
        assert finished, "the job did not finish"


def _run_statuses(job_id: int) -> dict[int, str]:
    with db.session_scope() as session:
        return dict(
            session.execute(
                sa.select(TaskRun.id, TaskRun.status).where(TaskRun.job_id == job_id)
            ).all()
        )


def _task_of_run(job_id: int) -> dict[int, str]:
    with db.session_scope() as session:
        return dict(
            session.execute(
                sa.text(
                    "SELECT r.id, t.key FROM task_runs r JOIN tasks t ON t.id = r.task_id"
                    " WHERE r.job_id = :job"
                ),
                {"job": job_id},
            ).all()
        )


def _descendants_of(failing: set[str], deps: dict[str, tuple[str, ...]]) -> set[str]:
    """Return the tasks that depend, directly or not, on a failing task."""
    skipped: set[str] = set()
    changed = True
    while changed:
        changed = False
        for key, keys in deps.items():
            if key not in skipped and any(d in failing or d in skipped for d in keys):
                skipped.add(key)
                changed = True
    return skipped


def _run(nodes: list[TaskNode[str]], data: st.DataObject, *, redeliver: bool) -> Run:
    strategy = data.draw(st.sampled_from(pipelines.STRATEGIES))
    batch_size = data.draw(st.integers(1, 4))
    cap = data.draw(st.integers(1, 4)) if strategy == pipelines.FLOW else None
    failing = set(data.draw(st.lists(st.sampled_from([n.key for n in nodes]), max_size=2)))
    tasks = [{"key": n.key, "title": n.key, "depends_on": list(n.depends_on)} for n in nodes]
    project_id = make_project(*tasks)
    created = jobs.create_job(
        project_id,
        batch_size=batch_size,
        max_batch_size=50,
        max_tasks=1000,
        strategy=strategy,
        max_in_flight=cap,
    )
    run = Run(
        job_id=created.job_id,
        task_of_run=_task_of_run(created.job_id),
        failing=failing,
        deps={n.key: n.depends_on for n in nodes},
        cap=batch_size if cap is None else cap,
        ranks=pipelines.remaining_paths(pipelines.plan(nodes, strategy, batch_size)),
    )
    Workers(run, redeliver=redeliver).run_job(created)
    return run


def _assert_engine_held(run: Run, nodes: list[TaskNode[str]], *, redelivered: bool) -> None:
    skipped = _descendants_of(run.failing, run.deps)
    ran = collections.Counter(run.generated)
    # Every task whose dependencies succeeded ran (once, unless its message came twice at
    # once: then it may run twice, and is still counted once), never before them.
    assert set(ran) == {n.key for n in nodes} - skipped
    assert redelivered or set(ran.values()) == {1}
    assert run.violations == []
    # Never more than the cap queued or running at once (counted where each message
    # comes once: a duplicate's end frees nothing).
    assert redelivered or 1 <= run.peak <= run.cap
    # Each run was released once.
    released = collections.Counter(r for spec in run.released for r in spec.run_ids)
    assert set(released) <= set(run.task_of_run) and max(released.values()) == 1
    # Each was released with its rank in the plan, in the order of its batch's runs.
    for spec in run.released:
        assert spec.ranks == tuple(run.ranks[run.task_of_run[r]] for r in spec.run_ids)
    job = jobs.snapshot(run.job_id)
    statuses = {r["key"]: r["status"] for b in job["batches"] for r in b["runs"]}
    statuses |= {r["key"]: r["status"] for r in job["unreleased"]}
    assert {k for k, s in statuses.items() if s == "skipped"} == skipped
    assert {k for k, s in statuses.items() if s == "failed"} == run.failing - skipped
    assert job["done_tasks"] == job["total_tasks"] == len(nodes) and job["in_flight"] == 0
    with db.session_scope() as session:
        finished = session.scalar(
            sa.select(sa.func.count()).where(
                Event.job_id == run.job_id, Event.type == "job_finished"
            )
        )
    assert finished == 1


@ENGINE_SETTINGS
@given(nodes=dags(max_tasks=12), data=st.data())
def test_every_task_runs_once_after_its_dependencies_within_the_cap(
    database: None, nodes: list[TaskNode[str]], data: st.DataObject
) -> None:
    run = _run(nodes, data, redeliver=False)
    _assert_engine_held(run, nodes, redelivered=False)


@ENGINE_SETTINGS
@given(nodes=dags(max_tasks=10), data=st.data())
def test_messages_delivered_twice_at_once_release_nothing_twice(
    database: None, nodes: list[TaskNode[str]], data: st.DataObject
) -> None:
    run = _run(nodes, data, redeliver=True)
    _assert_engine_held(run, nodes, redelivered=True)


def test_the_peak_reaches_the_cap_on_a_wide_project(database: None) -> None:
    # Given ten independent tasks and a cap of 3
    project_id = make_project(*[f"t{i}" for i in range(10)])
    created = jobs.create_job(
        project_id, batch_size=5, max_batch_size=50, max_tasks=100, max_in_flight=3
    )
    deps: dict[str, tuple[str, ...]] = {f"t{i}": () for i in range(10)}
    run = Run(created.job_id, _task_of_run(created.job_id), set(), deps, cap=3)
    Workers(run, redeliver=False).run_job(created)
    # Then three went out first, and never more than three at once
    assert [len(spec.run_ids) for spec in created.dispatches] == [3]
    assert run.peak == 3


def test_ready_units_take_the_free_slots_longest_chain_first(database: None) -> None:
    # Given leaves a and b listed first, then c, which d and e wait for, and one slot
    after_c = [{"key": key, "title": key.upper(), "depends_on": ["c"]} for key in "de"]
    project_id = make_project("a", "b", "c", *after_c)
    created = jobs.create_job(
        project_id, batch_size=1, max_batch_size=50, max_tasks=100, max_in_flight=1
    )
    task_of = _task_of_run(created.job_id)
    run_of = {key: run_id for run_id, key in task_of.items()}

    # Then the slot goes to c, whose chain (c, then d or e) is the longest left
    assert [task_of[i] for spec in created.dispatches for i in spec.run_ids] == ["c"]
    # And once c is done, every ready unit is a leaf: the first in plan order goes
    starts.start_run(run_of["c"])
    released = progress.record_outcome(run_of["c"], RunStatus.SUCCEEDED).dispatches
    assert [task_of[i] for spec in released for i in spec.run_ids] == ["a"]


def test_a_slot_freed_by_an_outcome_that_makes_nothing_ready_goes_to_a_unit_left_waiting(
    database: None,
) -> None:
    # Given a and b in flight (a cap of 2), and c, d, e waiting on a
    after_a = [{"key": key, "title": key.upper(), "depends_on": ["a"]} for key in "cde"]
    project_id = make_project("a", "b", *after_a)
    created = jobs.create_job(
        project_id, batch_size=2, max_batch_size=50, max_tasks=100, max_in_flight=2
    )
    run_of = {key: run_id for run_id, key in _task_of_run(created.job_id).items()}

    def outcome(key: str) -> list[str]:
        starts.start_run(run_of[key])
        released = progress.record_outcome(run_of[key], RunStatus.SUCCEEDED).dispatches
        task_of = {run_id: task for task, run_id in run_of.items()}
        return [task_of[run_id] for spec in released for run_id in spec.run_ids]

    # When a ends (c, d and e become ready: one slot, so c goes and d and e wait), then b
    # ends (it makes nothing ready), then c
    # Then each outcome's freed slot goes to the next unit left waiting, in plan order
    assert outcome("a") == ["c"]
    assert outcome("b") == ["d"]
    assert outcome("c") == ["e"]
    # And once nothing waits, an outcome releases nothing, and the job ends
    assert outcome("d") == [] and outcome("e") == []
    assert jobs.snapshot(created.job_id)["status"] == "succeeded"
