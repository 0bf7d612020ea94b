"""``make run``: the sample, tasks slow enough to watch (400 ms unless overridden)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def environment_of_make_run(**env: str) -> dict[str, str]:
    """Run `make run`'s command line with `env` printing the environment handson would get."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(
        ["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    line = next(line for line in dry.splitlines() if line.endswith("handson serve"))
    inherited = {k: v for k, v in os.environ.items() if k != "GENERATOR_LATENCY_MS"}
    shown = subprocess.run(
        ["sh", "-c", line.replace(".venv/bin/handson serve", "env")],
        env={**inherited, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(entry.split("=", 1) for entry in shown.splitlines() if "=" in entry)


def test_make_run_gives_tasks_a_visible_latency_by_default():
    served = environment_of_make_run()
    assert served["GENERATOR_LATENCY_MS"] == "400"
    assert served["LOAD_SAMPLE"] == "1"


def test_make_run_latency_can_be_overridden():
    assert environment_of_make_run(GENERATOR_LATENCY_MS="0")["GENERATOR_LATENCY_MS"] == "0"
