"""The built-in sample project: a valid import file that plans into groups and pipelines."""

from __future__ import annotations

import json

import pytest

import pipelines
import samples
from db import projects
from pipelines import PIPELINE, TaskNode

#: Tasks in the sample, and the plan it must give at the default batch size.
SAMPLE_TASKS, DEFAULT_BATCH_SIZE, DEFAULT_BATCHES, MIN_PIPELINES = 62, 5, 13, 3


@pytest.fixture
def sample() -> dict:
    return samples.load_sample()


def _nodes(sample: dict) -> list[TaskNode[str]]:
    return [TaskNode(task["key"], tuple(task["depends_on"])) for task in sample["tasks"]]


def test_sample_file_is_the_json_beside_the_package():
    # Given the sample path
    # When its text is decoded
    data = json.loads(samples.SAMPLE_PROJECT_PATH.read_text(encoding="utf-8"))

    # Then it is what load_sample returns
    assert samples.SAMPLE_PROJECT_PATH.parent.name == "samples"
    assert data == samples.load_sample()


def test_sample_has_a_name_and_the_expected_tasks(sample):
    # Given the sample project
    tasks = sample["tasks"]

    # Then it is named and has its 62 tasks, each with a title and a description
    assert sample["name"].strip()
    assert sample["description"].strip()
    assert len(tasks) == SAMPLE_TASKS
    for task in tasks:
        assert task["title"].strip(), task["key"]
        assert task["description"].strip(), task["key"]


def test_sample_keys_are_unique_and_dependencies_known(sample):
    # Given the sample's keys
    keys = [task["key"] for task in sample["tasks"]]

    # Then no key repeats and every dependency names a task of the sample
    assert len(set(keys)) == len(keys)
    for task in sample["tasks"]:
        unknown = set(task["depends_on"]) - set(keys)
        assert not unknown, (task["key"], unknown)


def test_sample_passes_the_import_validation(sample):
    # Given the sample project
    # When it is parsed like an uploaded import file
    spec = projects.parse_project(sample, max_tasks=1000)

    # Then it is accepted whole, in file order
    assert [task.key for task in spec.tasks] == [task["key"] for task in sample["tasks"]]


def test_sample_plans_into_groups_and_pipelines_at_the_default_batch_size(sample):
    # Given the sample's dependency graph
    nodes = _nodes(sample)
    pipelines.validate_graph(nodes, max_tasks=1000)

    # When it is planned at the default batch size
    plan = pipelines.plan_batches(nodes, DEFAULT_BATCH_SIZE)

    # Then it gives 13 batches of at most 5 tasks, at least 3 of them pipelines
    assert len(plan) == DEFAULT_BATCHES
    assert all(1 <= len(batch.keys) <= DEFAULT_BATCH_SIZE for batch in plan)
    assert sum(batch.mode == PIPELINE for batch in plan) >= MIN_PIPELINES
    assert sorted(key for batch in plan for key in batch.keys) == sorted(node.key for node in nodes)


@pytest.mark.parametrize("batch_size", [1, 3, 10])
def test_sample_plans_every_task_once_at_other_batch_sizes(sample, batch_size):
    # Given the sample's dependency graph
    nodes = _nodes(sample)

    # When it is planned at another batch size
    plan = pipelines.plan_batches(nodes, batch_size)

    # Then every task is planned once, in batches no larger than asked
    assert sorted(key for batch in plan for key in batch.keys) == sorted(node.key for node in nodes)
    assert all(1 <= len(batch.keys) <= batch_size for batch in plan)
    # And at least as many batches are needed as the batch size forces
    assert len(plan) >= -(-SAMPLE_TASKS // batch_size)
