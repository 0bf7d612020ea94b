"""Ranks: each task's longest chain of tasks left, and the messages that carry it."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage
from hypothesis import given
from hypothesis import strategies as st
from test_planner import PROPERTY_SETTINGS, dags

import pipelines
import samples
from pipelines import BATCHES, FLOW, GENERATE_ACTOR, PIPELINE, DispatchSpec, TaskNode


def test_a_chain_counts_down_to_one_at_its_end():
    # Given a chain a -> b -> c (one pipeline unit under flow)
    nodes = [TaskNode("a"), TaskNode("b", ("a",)), TaskNode("c", ("b",))]

    # When its plan is ranked
    plan = pipelines.plan(nodes, FLOW, 5)

    # Then each step counts itself and the steps after it
    assert [unit.mode for unit in plan.units] == [PIPELINE]
    assert pipelines.remaining_paths(plan) == {"a": 3, "b": 2, "c": 1}


def test_a_chain_split_into_batches_keeps_its_length():
    # Given the same chain planned as batches of two: pipeline (a, b), then c
    nodes = [TaskNode("a"), TaskNode("b", ("a",)), TaskNode("c", ("b",))]
    plan = pipelines.plan(nodes, BATCHES, 2)

    # Then a's chain runs through b and the batch after
    assert [unit.keys for unit in plan.units] == [("a", "b"), ("c",)]
    assert pipelines.remaining_paths(plan) == {"a": 3, "b": 2, "c": 1}


@pytest.mark.parametrize("strategy", [FLOW, BATCHES])
def test_a_diamond_ranks_both_sides_alike(strategy):
    # Given a diamond: b and c depend on a, d on both
    nodes = [
        TaskNode("a"),
        TaskNode("b", ("a",)),
        TaskNode("c", ("a",)),
        TaskNode("d", ("b", "c")),
    ]

    # When it is planned with either strategy and ranked
    ranks = pipelines.remaining_paths(pipelines.plan(nodes, strategy, 5))

    # Then a heads the longest chain, b and c are one from the end
    assert ranks == {"a": 3, "b": 2, "c": 2, "d": 1}


def test_a_task_before_a_pipeline_and_a_leaf_takes_the_longer_way():
    # Given a, then a pipeline b -> c -> d after it, and a lone task e after it
    nodes = [
        TaskNode("a"),
        TaskNode("b", ("a",)),
        TaskNode("c", ("b",)),
        TaskNode("d", ("c",)),
        TaskNode("e", ("a",)),
    ]

    # When it is planned under flow and ranked
    plan = pipelines.plan(nodes, FLOW, 5)
    ranks = pipelines.remaining_paths(plan)

    # Then a counts the pipeline's three steps, not the leaf
    assert ("b", "c", "d") in [unit.keys for unit in plan.units]
    assert ranks == {"a": 4, "b": 3, "c": 2, "d": 1, "e": 1}
    # And the plan's placements carry the same ranks
    assert {key: place.rank for key, place in plan.placements().items()} == ranks


def test_release_order_puts_the_longest_chain_first_then_the_plan_s_order():
    # Given leaves x and y listed first, then a pipeline b -> c and a lone task e
    nodes = [TaskNode("x"), TaskNode("y"), TaskNode("b"), TaskNode("c", ("b",)), TaskNode("e")]
    plan = pipelines.plan(nodes, FLOW, 5)

    # When the units are sorted by their place in the release order
    order = pipelines.release_order(plan)
    released = [plan.units[number].keys for _, number in sorted(order)]

    # Then the pipeline (a chain of two) goes before the leaves, which keep their order
    assert released == [("b", "c"), ("x",), ("y",), ("e",)]


def test_batches_chain_every_batch_after_the_one_before():
    # Given four independent tasks planned two per batch
    nodes = [TaskNode(f"t{i}") for i in range(4)]
    plan = pipelines.plan(nodes, BATCHES, 2)

    # Then each task of the first batch waits on the second: chains of two
    assert pipelines.remaining_paths(plan) == {"t0": 2, "t1": 2, "t2": 1, "t3": 1}


def test_a_chain_as_long_as_the_task_limit_needs_no_deep_recursion():
    # Given a 5,000-task chain with a branch (units: a task, then a long pipeline)
    nodes = [TaskNode(0), *(TaskNode(i, (i - 1,)) for i in range(1, 5000)), TaskNode(-1, (0,))]

    # When it is ranked
    ranks = pipelines.remaining_paths(pipelines.plan(nodes, FLOW, 5))

    # Then the first task counts the whole chain
    assert ranks[0] == 5000 and ranks[4999] == 1 and ranks[-1] == 1


def test_the_sample_project_s_first_task_heads_its_critical_path():
    # Given the sample project planned under flow
    nodes = [TaskNode(t["key"], tuple(t["depends_on"])) for t in samples.load_sample()["tasks"]]
    ranks = pipelines.remaining_paths(pipelines.plan(nodes, FLOW, 5))

    # Then the longest chain is its 17-task critical path
    assert max(ranks.values()) == 17


def _followers(plan: pipelines.Plan[str]) -> dict[str, set[str]]:
    """What may start only after each task, read off the plan directly."""
    after: dict[str, set[str]] = {key: set() for unit in plan.units for key in unit.keys}
    for done, gated in plan.links:
        after[done].add(gated)
    for unit in plan.units:
        if unit.mode == PIPELINE:
            for step in range(len(unit.keys) - 1):
                after[unit.keys[step]].add(unit.keys[step + 1])
    return after


@PROPERTY_SETTINGS
@given(nodes=dags(), strategy=st.sampled_from(pipelines.STRATEGIES), batch_size=st.integers(1, 6))
def test_random_plans_rank_each_task_one_above_what_follows_it(nodes, strategy, batch_size):
    # Given a random project's plan
    plan = pipelines.plan(nodes, strategy, batch_size)

    # When it is ranked
    ranks = pipelines.remaining_paths(plan)

    # Then every task is ranked, at least 1, one above the highest of what follows it
    assert ranks.keys() == {node.key for node in nodes}
    for key, later in _followers(plan).items():
        assert ranks[key] == 1 + max((ranks[k] for k in later), default=0) >= 1


@PROPERTY_SETTINGS
@given(nodes=dags())
def test_random_flow_plans_rank_each_task_by_its_longest_chain_of_dependents(nodes):
    # Given a random project and, computed on its graph alone, each task's longest chain
    dependents: dict[str, list[str]] = {node.key: [] for node in nodes}
    for node in nodes:
        for dep in node.depends_on:
            dependents[dep].append(node.key)

    @functools.cache
    def chain(key: str) -> int:
        return 1 + max((chain(d) for d in dependents[key]), default=0)

    # When its flow plan is ranked
    ranks = pipelines.remaining_paths(pipelines.plan(nodes, FLOW, 5))

    # Then flow loses no dependency and adds none: the ranks are those chains
    assert ranks == {key: chain(key) for key in dependents}


class Stub:
    """A stub broker and worker whose generate actor records each message's rank."""

    def __init__(self) -> None:
        self.broker = StubBroker()
        self.broker.add_middleware(CurrentMessage())
        #: (run id, rank option) of each message processed.
        self.seen: list[tuple[int, int | None]] = []
        self.lock = threading.Lock()
        dramatiq.actor(self.generate, actor_name=GENERATE_ACTOR, broker=self.broker)
        self.worker = dramatiq.Worker(self.broker, worker_timeout=100)

    def generate(self, run_id: int, previous: str | None = None) -> str:
        rank = CurrentMessage.get_current_message().options.get("rank")
        with self.lock:
            self.seen.append((run_id, rank))
        return f"guide {run_id}"

    def run(self, composed: dramatiq.group | dramatiq.pipeline) -> None:
        """Send ``composed`` and wait until the worker has processed every message."""
        composed.run()
        self.broker.join(self.broker.get_actor(GENERATE_ACTOR).queue_name)
        self.worker.join()


@pytest.fixture
def stub() -> Iterator[Stub]:
    stub = Stub()
    stub.worker.start()
    yield stub
    stub.worker.stop()
    stub.broker.close()


def test_a_ranked_group_s_messages_each_carry_their_run_s_rank(stub):
    # Given a ranked group spec
    spec = DispatchSpec(pipelines.GROUP, (11, 12, 13), 2, ranks=(5, 1, 3))

    # When it is composed
    composed = pipelines.compose(spec, stub.broker)

    # Then each message's options hold its run's rank (and the retries)
    assert [(m.args, m.options) for m in composed.children] == [
        ((11,), {"max_retries": 2, "rank": 5}),
        ((12,), {"max_retries": 2, "rank": 1}),
        ((13,), {"max_retries": 2, "rank": 3}),
    ]
    # And the worker sees those ranks
    stub.run(composed)
    assert sorted(stub.seen) == [(11, 5), (12, 1), (13, 3)]


def test_each_step_of_a_ranked_pipeline_runs_with_its_own_rank(stub):
    # Given a pipeline of three steps resumed with its previous step's guide
    spec = DispatchSpec(PIPELINE, (21, 22, 23), None, "guide 20", ranks=(3, 2, 1))

    # When it is composed and run
    composed = pipelines.compose(spec, stub.broker)
    assert composed.messages[0].args == (21, "guide 20")
    assert composed.messages[0].options["rank"] == 3
    stub.run(composed)

    # Then each step's message (the later ones enqueued by Dramatiq's Pipelines
    # middleware) carried its own rank
    assert stub.seen == [(21, 3), (22, 2), (23, 1)]


def test_an_unranked_spec_sends_no_rank_option(stub):
    # Given a spec without ranks (as one read back before ranks existed)
    spec = DispatchSpec(PIPELINE, (31, 32), None)

    # When it is composed and run
    composed = pipelines.compose(spec, stub.broker)
    stub.run(composed)

    # Then no message had a rank option
    assert all("rank" not in m.options for m in composed.messages)
    assert stub.seen == [(31, None), (32, None)]


def test_ranks_that_do_not_match_the_runs_are_refused(stub):
    # Given a spec with one rank too few
    spec = DispatchSpec(pipelines.GROUP, (1, 2), None, ranks=(1,))

    # Then composing it fails loudly rather than sending a message unranked
    with pytest.raises(ValueError):
        pipelines.compose(spec, stub.broker)
    assert stub.seen == []
