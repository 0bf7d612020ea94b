"""Tokens and cost of the 62-task sample job: offline estimates, and the local server's usage.

Runs the sample project twice on embedded worker threads (a fresh SQLite file each):
with the offline generator (tokens estimated from characters, about 4 a token), then
with ``GENERATOR=openai`` against the local OpenAI-protocol server of the tests,
streaming, answering each task with one of the first run's guides (its ``usage`` is
the fake's: 321 prompt tokens, words + 7 completion tokens). Prices: the settings'
defaults (gpt-4o-mini) unless given::

    .venv/bin/python bench/ai_spend.py [--threads 5] [--price-in 0.15] [--price-out 0.60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import sqlalchemy as sa  # noqa: E402
from fake_openai import FakeOpenAI, completion  # noqa: E402
from jobwatch import wait_for_job  # noqa: E402
from workerkit import start_embedded  # noqa: E402

from db import migrate, projects, session_scope  # noqa: E402
from db.models import HandsOn  # noqa: E402
from samples import load_sample  # noqa: E402
from workers import dispatch  # noqa: E402


def run_sample(url: str, threads: int, **settings: object) -> tuple[dict, list[str]]:
    """Run the sample job once; return its snapshot and its guides."""
    migrate.upgrade(url)
    embedded = start_embedded(url, threads, **settings)
    try:
        project_id = projects.create_project(projects.parse_project(load_sample(), max_tasks=1000))
        job_id = dispatch.submit(project_id, batch_size=5, max_batch_size=50, max_tasks=1000)
        job, _ = wait_for_job(job_id, timeout=300)
    finally:
        embedded.worker.stop()
        embedded.broker.close()
    with session_scope() as session:
        guides = list(session.scalars(sa.select(HandsOn.markdown).order_by(HandsOn.id)))
    return job, guides


def report(title: str, job: dict) -> None:
    tokens = job["prompt_tokens"] + job["completion_tokens"]
    guides = job["succeeded_tasks"]
    print(
        f"{title}: {job['status']}, {guides} guides, {tokens:,} tokens"
        f" ({job['prompt_tokens']:,} prompt + {job['completion_tokens']:,} completion),"
        f" cost {job['cost']:.6f} ({job['cost'] / max(1, guides):.8f} a guide)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=5)
    parser.add_argument("--price-in", type=float, default=0.15)
    parser.add_argument("--price-out", type=float, default=0.60)
    args = parser.parse_args()
    prices = {"AI_PRICE_INPUT_PER_MTOK": args.price_in, "AI_PRICE_OUTPUT_PER_MTOK": args.price_out}
    print(f"prices per million tokens: {args.price_in} in, {args.price_out} out")
    with tempfile.TemporaryDirectory() as folder:
        offline, guides = run_sample(
            f"sqlite:///{folder}/offline.db", args.threads, GENERATOR="offline", **prices
        )
        report("offline (estimated)", offline)
        with FakeOpenAI() as api:
            api.script([completion(guide) for guide in guides])
            served, _ = run_sample(
                f"sqlite:///{folder}/served.db",
                args.threads,
                GENERATOR="openai",
                OPENAI_BASE_URL=api.url,
                OPENAI_API_KEY="sk-bench",
                OPENAI_STREAM=True,
                **prices,
            )
        report("local server (its usage, streamed)", served)


if __name__ == "__main__":
    main()
