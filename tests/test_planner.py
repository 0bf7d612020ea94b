"""Planner tests: graph validation and batch planning, on random graphs and small cases."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipelines
from pipelines import GROUP, PIPELINE, PlannedBatch, TaskNode

#: Hypothesis settings shared by the property tests: enough examples to find edge
#: cases, few enough to keep the file fast; no example database written to disk.
PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

batch_sizes = st.integers(min_value=1, max_value=10)


@st.composite
def dags(draw: st.DrawFn, *, min_tasks: int = 1, max_tasks: int = 60) -> list[TaskNode[str]]:
    """Draw a random acyclic project: each task depends on a few earlier tasks.

    Depending on just the previous task is drawn often, so linear chains (pipelines)
    show up; the listing order is sometimes shuffled, so it is not always topological.
    """
    count = draw(st.integers(min_value=min_tasks, max_value=max_tasks))
    keys = [f"t{index}" for index in range(count)]
    nodes = []
    for index, key in enumerate(keys):
        if index == 0:
            earlier: list[int] = []
        else:
            earlier = draw(
                st.one_of(
                    st.just([index - 1]),
                    st.lists(
                        st.integers(min_value=0, max_value=index - 1),
                        max_size=min(index, 3),
                        unique=True,
                    ),
                )
            )
        nodes.append(TaskNode(key, tuple(keys[i] for i in earlier)))
    if draw(st.booleans()):
        nodes = list(draw(st.permutations(nodes)))
    return nodes


def _dependents(nodes: list[TaskNode[str]]) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {node.key: set() for node in nodes}
    for node in nodes:
        for dep in node.depends_on:
            result[dep].add(node.key)
    return result


def _batch_of(plan: list[PlannedBatch[str]]) -> dict[str, int]:
    return {key: index for index, batch in enumerate(plan) for key in batch.keys}


@PROPERTY_SETTINGS
@given(nodes=dags(), batch_size=batch_sizes)
def test_random_graphs_plan_every_task_exactly_once(nodes, batch_size):
    # Given a random acyclic project, which validates
    pipelines.validate_graph(nodes, max_tasks=60)

    # When it is planned
    plan = pipelines.plan_batches(nodes, batch_size)

    # Then every task is in exactly one batch
    planned = [key for batch in plan for key in batch.keys]
    assert sorted(planned) == sorted(node.key for node in nodes)
    assert len(planned) == len(set(planned))
    # And every batch holds 1..batch_size tasks in a known mode
    for batch in plan:
        assert 1 <= len(batch.keys) <= batch_size
        assert batch.mode in {GROUP, PIPELINE}


@PROPERTY_SETTINGS
@given(nodes=dags(), batch_size=batch_sizes)
def test_random_graphs_run_dependencies_first(nodes, batch_size):
    # Given a random acyclic project
    deps = {node.key: set(node.depends_on) for node in nodes}
    dependents = _dependents(nodes)

    # When it is planned
    plan = pipelines.plan_batches(nodes, batch_size)
    batch_of = _batch_of(plan)

    # Then a group's tasks depend only on tasks of earlier batches
    # And a pipeline's first step too, while each later step depends on exactly the
    # step before it, which has no other dependent (a link of a linear chain)
    for index, batch in enumerate(plan):
        if batch.mode == GROUP:
            for key in batch.keys:
                assert all(batch_of[dep] < index for dep in deps[key]), (key, batch)
        else:
            first, *later = batch.keys
            assert all(batch_of[dep] < index for dep in deps[first]), (first, batch)
            for previous, step in zip(batch.keys, later, strict=False):
                assert deps[step] == {previous}, (step, batch)
                assert dependents[previous] == {step}, (previous, batch)
    # And across the whole plan, every dependency is planned no later than its task
    for key, key_deps in deps.items():
        assert all(batch_of[dep] <= batch_of[key] for dep in key_deps)


@PROPERTY_SETTINGS
@given(nodes=dags(), batch_size=batch_sizes)
def test_random_graphs_have_pipelines_of_two_steps_or_more(nodes, batch_size):
    # Given a random acyclic project and any batch size
    # When it is planned
    plan = pipelines.plan_batches(nodes, batch_size)

    # Then no pipeline has a single step: a chain's one-task remainder joins a group
    assert all(len(batch.keys) >= 2 for batch in plan if batch.mode == PIPELINE)


@PROPERTY_SETTINGS
@given(nodes=dags(), batch_size=batch_sizes)
def test_random_graphs_plan_deterministically(nodes, batch_size):
    # Given a random acyclic project
    # When it is planned twice, once from a copy of its listing
    first = pipelines.plan_batches(nodes, batch_size)
    second = pipelines.plan_batches(list(nodes), batch_size)

    # Then both plans are the same
    assert first == second
    # And the first listed task without dependencies runs in the first batch
    first_root = next(node.key for node in nodes if not node.depends_on)
    assert first_root in first[0].keys


@PROPERTY_SETTINGS
@given(nodes=dags(min_tasks=2, max_tasks=30), data=st.data())
def test_random_graphs_with_a_cycle_fail_naming_a_real_cycle(nodes, data):
    # Given a random acyclic project in which some tasks are made to depend on each
    # other in a ring (each on the next, the last on the first)
    ring = data.draw(
        st.lists(st.sampled_from([node.key for node in nodes]), min_size=2, unique=True)
    )
    extra = {key: ring[(index + 1) % len(ring)] for index, key in enumerate(ring)}
    nodes = [
        TaskNode(node.key, (*node.depends_on, extra[node.key]))
        if node.key in extra and extra[node.key] not in node.depends_on
        else node
        for node in nodes
    ]
    deps = {node.key: set(node.depends_on) for node in nodes}

    # When it is validated
    with pytest.raises(pipelines.CycleError) as caught:
        pipelines.validate_graph(nodes, max_tasks=60)

    # Then the error names a real cycle of the project
    cycle = caught.value.cycle
    assert len(cycle) >= 2
    assert len(set(cycle)) == len(cycle)
    for index, key in enumerate(cycle):
        assert cycle[(index + 1) % len(cycle)] in deps[key], (key, cycle)
    # And its message names every task of that cycle
    assert all(key in str(caught.value) for key in cycle)


def test_empty_project_is_rejected():
    # Given a project without tasks
    # When it is validated
    # Then it fails asking for a task
    with pytest.raises(pipelines.EmptyProjectError, match="no task"):
        pipelines.validate_graph([], max_tasks=10)


def test_project_with_too_many_tasks_is_rejected():
    # Given a project with one task more than allowed
    nodes = [TaskNode(f"t{index}") for index in range(4)]

    # When it is validated
    # Then it fails naming the count and the limit
    with pytest.raises(pipelines.TooManyTasksError, match=r"4 tasks; at most 3"):
        pipelines.validate_graph(nodes, max_tasks=3)


def test_duplicate_task_key_is_rejected():
    # Given two tasks with the same key
    nodes = [TaskNode("repo"), TaskNode("ci", ("repo",)), TaskNode("repo")]

    # When the project is validated
    # Then it fails naming the duplicated key
    with pytest.raises(pipelines.DuplicateTaskError, match="'repo' appears twice"):
        pipelines.validate_graph(nodes, max_tasks=10)


def test_unknown_dependency_is_rejected():
    # Given a task depending on a key that no task has
    nodes = [TaskNode("repo"), TaskNode("ci", ("repo", "lint"))]

    # When the project is validated
    # Then it fails naming the task and the unknown key
    with pytest.raises(pipelines.UnknownDependencyError) as caught:
        pipelines.validate_graph(nodes, max_tasks=10)
    assert "'ci'" in str(caught.value)
    assert "'lint'" in str(caught.value)


def test_self_dependency_is_rejected():
    # Given a task depending on itself
    nodes = [TaskNode("repo"), TaskNode("ci", ("repo", "ci"))]

    # When the project is validated
    # Then it fails naming that task
    with pytest.raises(pipelines.SelfDependencyError, match="'ci' depends on itself"):
        pipelines.validate_graph(nodes, max_tasks=10)


def test_two_task_cycle_is_rejected_naming_both_tasks():
    # Given two tasks depending on each other
    nodes = [TaskNode("a", ("b",)), TaskNode("b", ("a",))]

    # When the project is validated
    with pytest.raises(pipelines.CycleError) as caught:
        pipelines.validate_graph(nodes, max_tasks=10)

    # Then the error names the cycle, closing it on its first task
    assert caught.value.cycle == ["a", "b"]
    assert "a -> b -> a" in str(caught.value)


@pytest.mark.parametrize("batch_size", [0, -1, 51])
def test_batch_size_out_of_range_is_rejected(batch_size):
    # Given a batch size below 1 or above the maximum
    # When it is checked
    # Then it fails naming the allowed range and the value given
    with pytest.raises(pipelines.BatchSizeError) as caught:
        pipelines.check_batch_size(batch_size, maximum=50)
    assert "between 1 and 50" in str(caught.value)
    assert f"got {batch_size}" in str(caught.value)


@pytest.mark.parametrize("batch_size", [1, 5, 50])
def test_batch_size_in_range_is_accepted(batch_size):
    # Given a batch size from 1 to the maximum
    # When it is checked
    # Then it passes
    pipelines.check_batch_size(batch_size, maximum=50)


def test_chain_longer_than_batch_size_is_split_into_consecutive_pipelines():
    # Given a linear chain of six tasks
    keys = ["a", "b", "c", "d", "e", "f"]
    nodes = [TaskNode(key, (keys[i - 1],) if i else ()) for i, key in enumerate(keys)]

    # When it is planned three tasks per batch
    plan = pipelines.plan_batches(nodes, 3)

    # Then it runs as two pipelines, one after the other
    assert plan == [
        PlannedBatch(PIPELINE, ("a", "b", "c")),
        PlannedBatch(PIPELINE, ("d", "e", "f")),
    ]


def test_chain_remainder_of_one_task_runs_as_a_group():
    # Given a linear chain of four tasks
    nodes = [TaskNode("a"), TaskNode("b", ("a",)), TaskNode("c", ("b",)), TaskNode("d", ("c",))]

    # When it is planned three tasks per batch
    plan = pipelines.plan_batches(nodes, 3)

    # Then the single task left over is a group of one, not a one-step pipeline
    assert plan == [PlannedBatch(PIPELINE, ("a", "b", "c")), PlannedBatch(GROUP, ("d",))]


def test_chain_at_batch_size_one_plans_groups_of_one():
    # Given a linear chain of three tasks
    nodes = [TaskNode("a"), TaskNode("b", ("a",)), TaskNode("c", ("b",))]

    # When it is planned one task per batch
    plan = pipelines.plan_batches(nodes, 1)

    # Then each step is a group of one: a pipeline always has two steps or more
    assert plan == [
        PlannedBatch(GROUP, ("a",)),
        PlannedBatch(GROUP, ("b",)),
        PlannedBatch(GROUP, ("c",)),
    ]


def test_diamond_graph_plans_as_groups():
    # Given a diamond: b and c depend on a, d on both b and c
    nodes = [
        TaskNode("a"),
        TaskNode("b", ("a",)),
        TaskNode("c", ("a",)),
        TaskNode("d", ("b", "c")),
    ]

    # When it is planned
    plan = pipelines.plan_batches(nodes, 5)

    # Then it runs as three groups, b and c side by side
    assert plan == [
        PlannedBatch(GROUP, ("a",)),
        PlannedBatch(GROUP, ("b", "c")),
        PlannedBatch(GROUP, ("d",)),
    ]


def test_ready_tasks_are_packed_in_listing_order():
    # Given seven independent tasks
    nodes = [TaskNode(f"t{index}") for index in range(7)]

    # When they are planned three per batch
    plan = pipelines.plan_batches(nodes, 3)

    # Then they fill groups in the order they are listed
    assert [batch.keys for batch in plan] == [
        ("t0", "t1", "t2"),
        ("t3", "t4", "t5"),
        ("t6",),
    ]
    assert {batch.mode for batch in plan} == {GROUP}
