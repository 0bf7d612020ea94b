"""Plan a job (task graph -> ordered batches) and compose a batch's Dramatiq messages.

Pure: nothing here imports the project's other modules. :func:`validate_graph` and
:func:`plan_batches` take plain task nodes and return plain data, so they are easy to
test on random graphs. :func:`compose` turns what to send (a :class:`DispatchSpec`)
into a real ``dramatiq.group`` or ``dramatiq.pipeline``, finding the actor by name
through the broker, as Dramatiq's own ``Pipelines`` middleware does; sending it is the
dispatch service's part (``workers.dispatch``).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

import dramatiq

from errors import InvalidInputError

K = TypeVar("K", bound=Hashable)

GROUP = "group"
PIPELINE = "pipeline"
#: Strategies: tasks go the moment their dependencies succeeded (``flow``, the default),
#: or the origin's barriers, each planned batch waiting for the one before (``batches``).
FLOW = "flow"
BATCHES = "batches"
STRATEGIES = (FLOW, BATCHES)
#: The actor that writes one task run's guide; its first argument is the run id.
GENERATE_ACTOR = "generate_hands_on"
#: The option of each task message that carries its run's rank (:func:`remaining_paths`).
RANK_OPTION = "rank"


class PlanError(InvalidInputError):
    """Raised when a project cannot be planned; the message says what to fix."""


class EmptyProjectError(PlanError):
    """Raised when a project has no task; add at least one task."""


class TooManyTasksError(PlanError):
    """Raised when a project has more tasks than allowed; split the project."""


class DuplicateTaskError(PlanError):
    """Raised when two tasks share a key; give each task its own key."""


class UnknownDependencyError(PlanError):
    """Raised when a task depends on a key that is not a task of the project."""


class SelfDependencyError(PlanError):
    """Raised when a task depends on itself; remove that dependency."""


class CycleError(PlanError):
    """Raised when dependencies form a cycle; break the cycle it names."""

    def __init__(self, cycle: Sequence[Hashable]) -> None:
        self.cycle = list(cycle)
        path = " -> ".join(str(key) for key in [*self.cycle, self.cycle[0]])
        super().__init__(f"dependencies form a cycle: {path}; remove one of these dependencies")


class BatchSizeError(PlanError):
    """Raised when a batch size is out of range."""


@dataclasses.dataclass(frozen=True)
class TaskNode(Generic[K]):
    """A task as the planner sees it: a key and the keys it depends on."""

    key: K
    depends_on: tuple[K, ...] = ()


@dataclasses.dataclass(frozen=True)
class PlannedBatch(Generic[K]):
    """One planned batch: its mode and its task keys in run order."""

    mode: str
    keys: tuple[K, ...]


@dataclasses.dataclass(frozen=True)
class Plan(Generic[K]):
    """A job's plan for the engine: units in release order, and what each waits for.

    A unit is released whole when every link into its first task is done: a ``group``
    unit's tasks go out together (each taking a slot of ``max_in_flight``), a
    ``pipeline`` unit's steps as one Dramatiq pipeline (one slot).
    """

    units: tuple[PlannedBatch[K], ...]
    #: ``(done, gated)``: the unit whose first task is ``gated`` waits for ``done`` to end.
    links: tuple[tuple[K, K], ...]

    def placements(self, first_unit: int = 0) -> dict[K, Placement]:
        """Return where each task sits in the plan, units numbered from ``first_unit``."""
        waiting_on = collections.Counter(gated for _, gated in self.links)
        ranks = remaining_paths(self)
        return {
            key: Placement(
                unit=first_unit + number,
                step=step,
                mode=unit.mode,
                # A group's every task frees its slot; a pipeline's last step frees its one.
                frees_slot=unit.mode == GROUP or step == len(unit.keys) - 1,
                waiting_on=waiting_on[key],
                rank=ranks[key],
            )
            for number, unit in enumerate(self.units)
            for step, key in enumerate(unit.keys)
        }


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a task sits in a :class:`Plan` (the columns a task run keeps of it)."""

    unit: int
    step: int
    mode: str
    frees_slot: bool
    waiting_on: int
    #: Its longest chain of tasks to the end of its job, itself included.
    rank: int


def remaining_paths(plan: Plan[K]) -> dict[K, int]:
    """Return each task's rank: its longest chain of tasks to the end of its job.

    The chain counts the task itself; a pipeline step is followed by the next step of
    its unit, a task by the first task of each unit linked to it (``plan.links``). A
    task nothing follows has rank 1. Iterative (a topological pass, last tasks first), so
    a long chain needs no deep recursion.
    """
    after = _followers(plan)
    waiting = collections.Counter(later for laters in after.values() for later in laters)
    order = [key for key in after if not waiting[key]]
    for key in order:  # grows as it goes: a task joins once all before it are in
        for later in after[key]:
            waiting[later] -= 1
            if not waiting[later]:
                order.append(later)
    ranks: dict[K, int] = {}
    for key in reversed(order):
        ranks[key] = 1 + max((ranks[later] for later in after[key]), default=0)
    return ranks


def release_order(plan: Plan[K]) -> list[tuple[int, int]]:
    """Return each unit's place in the engine's release order, by unit number: among
    ready units, the longest chain of tasks left goes first (its first task's rank,
    :func:`remaining_paths`), equal chains in the planner's order.

    Ready units that do not all fit in the job's free slots then hold the slots for the
    work that the job's end waits on longest, not for its leaves.
    """
    ranks = remaining_paths(plan)
    return [(-ranks[unit.keys[0]], number) for number, unit in enumerate(plan.units)]


def _followers(plan: Plan[K]) -> dict[K, list[K]]:
    """Return, for each task of ``plan``, the tasks that may start only after it."""
    after: dict[K, list[K]] = {key: [] for unit in plan.units for key in unit.keys}
    for done, gated in plan.links:
        after[done].append(gated)
    for unit in plan.units:
        if unit.mode == PIPELINE:
            for step, next_step in itertools.pairwise(unit.keys):
                after[step].append(next_step)
    return after


class MaxInFlightError(PlanError):
    """Raised when the cap on tasks in flight is out of range."""


class StrategyError(PlanError):
    """Raised when a strategy is not one of the known ones."""


def check_strategy(strategy: str) -> None:
    """Check that ``strategy`` is ``flow`` or ``batches``.

    Raises:
      StrategyError: when it is not.
    """
    if strategy not in STRATEGIES:
        raise StrategyError(
            f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}", field="strategy"
        )


def check_max_in_flight(
    max_in_flight: int | None, *, strategy: str, batch_size: int, maximum: int
) -> int:
    """Return the job's cap on units in flight: ``max_in_flight``, else the batch size.

    Raises:
      MaxInFlightError: when it is out of range, or given with the ``batches`` strategy
        (which runs one batch of ``batch_size`` tasks at a time).
    """
    if max_in_flight is None:
        return batch_size
    if strategy == BATCHES and max_in_flight != batch_size:
        raise MaxInFlightError(
            "max_in_flight applies to the flow strategy; the batches strategy runs one batch"
            " of batch_size tasks at a time",
            field="max_in_flight",
        )
    if not 1 <= max_in_flight <= maximum:
        raise MaxInFlightError(
            f"max_in_flight must be between 1 and {maximum}, got {max_in_flight}",
            field="max_in_flight",
        )
    return max_in_flight


def plan(nodes: Sequence[TaskNode[K]], strategy: str, batch_size: int) -> Plan[K]:
    """Plan a validated graph for the engine, with either strategy.

    ``flow``: each maximal linear chain is a unit (a single task, or a pipeline), gated
    by the tasks its first task depends on. ``batches``: the units are
    :func:`plan_batches`' batches, each gated by every task of the batch before it,
    which is the origin's barrier. Units are in the planner's order: among ready units,
    the engine releases the longest chain of tasks left first, then the earliest
    (:func:`release_order`), so runs are reproducible.
    """
    if strategy == BATCHES:
        units = plan_batches(nodes, batch_size)
        links = [
            (key, later.keys[0])
            for earlier, later in itertools.pairwise(units)
            for key in earlier.keys
        ]
        return Plan(tuple(units), tuple(links))
    position = {node.key: index for index, node in enumerate(nodes)}
    deps = {node.key: node.depends_on for node in nodes}
    chains = sorted(_chains(nodes), key=lambda chain: position[chain[0]])
    flow_units = [PlannedBatch(PIPELINE if len(c) > 1 else GROUP, tuple(c)) for c in chains]
    links = [(dep, unit.keys[0]) for unit in flow_units for dep in deps[unit.keys[0]]]
    return Plan(tuple(flow_units), tuple(links))


def check_batch_size(batch_size: int, *, maximum: int) -> None:
    """Check that ``batch_size`` is between 1 and ``maximum``.

    Raises:
      BatchSizeError: when it is not.
    """
    if not 1 <= batch_size <= maximum:
        raise BatchSizeError(f"batch size must be between 1 and {maximum}, got {batch_size}")


def validate_graph(nodes: Sequence[TaskNode[K]], *, max_tasks: int) -> None:
    """Check that ``nodes`` form a plannable dependency graph.

    Raises:
      PlanError: one of its subclasses, naming the task(s) at fault.
    """
    if not nodes:
        raise EmptyProjectError("the project has no task; add at least one task")
    if len(nodes) > max_tasks:
        raise TooManyTasksError(
            f"the project has {len(nodes)} tasks; at most {max_tasks} are allowed"
        )
    keys: set[K] = set()
    for node in nodes:
        if node.key in keys:
            raise DuplicateTaskError(f"task {node.key!r} appears twice; task keys must be unique")
        keys.add(node.key)
    for node in nodes:
        for dep in node.depends_on:
            if dep == node.key:
                raise SelfDependencyError(f"task {node.key!r} depends on itself")
            if dep not in keys:
                raise UnknownDependencyError(
                    f"task {node.key!r} depends on {dep!r}, which is not a task of the project"
                )
    cycle = _find_cycle(nodes)
    if cycle:
        raise CycleError(cycle)


def _find_cycle(nodes: Sequence[TaskNode[K]]) -> list[K] | None:
    """Return the keys of one dependency cycle, or None (iterative depth-first search)."""
    deps = {node.key: node.depends_on for node in nodes}
    state: dict[K, int] = {}  # 1: on the current path, 2: finished
    for root in deps:
        if root in state:
            continue
        path: list[K] = [root]
        iterators = [iter(deps[root])]
        state[root] = 1
        while iterators:
            dep = next(iterators[-1], None)
            if dep is None:
                state[path.pop()] = 2
                iterators.pop()
            elif state.get(dep) == 1:
                return path[path.index(dep) :]
            elif dep not in state:
                state[dep] = 1
                path.append(dep)
                iterators.append(iter(deps[dep]))
    return None


def _chains(nodes: Sequence[TaskNode[K]]) -> list[list[K]]:
    """Split the graph into maximal linear chains (single tasks are chains of one).

    A link ``u -> v`` is part of a chain when ``v`` depends only on ``u`` and ``u`` has no
    other dependent; such tasks must run one after the other anyway, so a pipeline that
    hands each step its predecessor's output loses no parallelism.
    """
    dependents: dict[K, list[K]] = {node.key: [] for node in nodes}
    for node in nodes:
        for dep in node.depends_on:
            dependents[dep].append(node.key)
    by_key = {node.key: node for node in nodes}

    def chain_successor(key: K) -> K | None:
        (only, *rest) = dependents[key] or [None]
        if only is None or rest or len(by_key[only].depends_on) != 1:
            return None
        return only

    has_chain_predecessor = {
        succ for key in dependents if (succ := chain_successor(key)) is not None
    }
    chains = []
    for node in nodes:
        if node.key in has_chain_predecessor:
            continue
        chain = [node.key]
        while (succ := chain_successor(chain[-1])) is not None:
            chain.append(succ)
        chains.append(chain)
    return chains


def plan_batches(nodes: Sequence[TaskNode[K]], batch_size: int) -> list[PlannedBatch[K]]:
    """Plan a validated graph into ordered batches of at most ``batch_size`` tasks.

    Tasks run in dependency order: a batch holds only tasks whose dependencies are in
    earlier batches, except a pipeline's steps, which each depend on the step before.
    Independent ready tasks are packed into ``group`` batches; maximal linear chains
    into ``pipeline`` batches (a chain longer than ``batch_size`` continues in a later
    batch). Among ready work, the task listed first goes first: the plan is
    deterministic.
    """
    position = {node.key: index for index, node in enumerate(nodes)}
    deps = {node.key: set(node.depends_on) for node in nodes}
    units = sorted(_chains(nodes), key=lambda chain: position[chain[0]])
    done: set[K] = set()
    batches: list[PlannedBatch[K]] = []
    while units:
        ready = [unit for unit in units if deps[unit[0]] <= done]
        first = ready[0]
        if len(first) > 1:
            piece = tuple(first[:batch_size])
            # At batch size 1 a chain runs one step per batch: plain groups of one.
            batch = PlannedBatch(PIPELINE if len(piece) > 1 else GROUP, piece)
            rest = first[batch_size:]
            units.remove(first)
            if rest:
                units.append(rest)
                units.sort(key=lambda chain: position[chain[0]])
        else:
            singles = [unit for unit in ready if len(unit) == 1][:batch_size]
            batch = PlannedBatch(GROUP, tuple(unit[0] for unit in singles))
            for unit in singles:
                units.remove(unit)
        done.update(batch.keys)
        batches.append(batch)
    return batches


@dataclasses.dataclass(frozen=True)
class DispatchSpec:
    """What to send for a released batch: its unfinished runs, in order."""

    mode: str
    run_ids: tuple[int, ...]
    max_retries: int | None
    #: For a pipeline resumed mid-way: the guide of the step before the first one sent.
    previous_output: str | None = None
    #: Each run's rank (:func:`remaining_paths`), in the order of ``run_ids``; empty: unranked.
    ranks: tuple[int, ...] = ()


def compose(
    spec: DispatchSpec, broker: dramatiq.Broker, *, actor_name: str = GENERATE_ACTOR
) -> dramatiq.group | dramatiq.pipeline | None:
    """Return the group or pipeline of messages that runs ``spec``; None when it is empty.

    A pipeline starts at its first unfinished step; each step is handed the previous
    step's guide by Dramatiq's ``Pipelines`` middleware (a resumed pipeline's first step
    gets ``spec.previous_output``). Each message's options carry its run's ``rank``
    (when ``spec.ranks`` is given), so a priority-aware broker can run long chains
    first; a pipeline's later steps keep their own, as each step is its own message.
    """
    if not spec.run_ids:
        return None
    actor = broker.get_actor(actor_name)
    options = {} if spec.max_retries is None else {"max_retries": spec.max_retries}
    ranked = [{RANK_OPTION: r} for r in spec.ranks] if spec.ranks else [{}] * len(spec.run_ids)
    messages = [
        actor.message_with_options(args=(run_id,), **options, **rank)
        for run_id, rank in zip(spec.run_ids, ranked, strict=True)
    ]
    if spec.mode == PIPELINE:
        if spec.previous_output is not None:
            messages[0] = messages[0].copy(args=(spec.run_ids[0], spec.previous_output))
        return dramatiq.pipeline(messages, broker=broker)
    return dramatiq.group(messages, broker=broker)
