"""``guide_text`` server-sent events: a running guide as it grows, text so far on connect.

On SQLite the worker threads tell the stream through the in-process signal; on
PostgreSQL through NOTIFY on ``handson_text``, heard by the hub's LISTEN connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from sse import Frame, open_stream
from webkit import LiveServer
from workerkit import make_project

from db import listen, session_scope
from db.models import HandsOn
from workers import dispatch


def guide_texts(frames: Iterator[Frame], count: int) -> list[dict]:
    """Read frames until ``count`` ``guide_text`` events came; return their data."""
    texts: list[dict] = []
    for frame in frames:
        if frame.event == "guide_text":
            assert frame.id is None  # not a stored event: Last-Event-ID is unaffected
            texts.append(frame.json())
            if len(texts) == count:
                return texts
    raise AssertionError(f"the stream ended after {len(texts)} guide_text events")


def joined(texts: list[dict]) -> str:
    """The text the pieces add up to, overlaps skipped by their offsets (as a client does)."""
    text = ""
    for piece in texts:
        assert piece["offset"] <= len(text)
        text += piece["text"][len(text) - piece["offset"] :]
    return text


def test_a_stream_sends_a_running_guide_as_it_grows_and_a_new_one_its_text_so_far(
    live_factory: Callable[..., LiveServer], database_url: str
):
    # Given a served app whose worker writes a guide in about 2 s, and a hub that listens
    live = live_factory(database_url, threads=1, GENERATOR="offline", GENERATOR_LATENCY_MS=2000)
    hub = listen.get_hub()
    keep_listening = hub.subscribe(0)  # LISTEN is in place before the guide's first word
    try:
        job_id = dispatch.submit(
            make_project({"key": "api", "title": "Write the API"}),
            batch_size=5,
            max_batch_size=50,
            max_tasks=100,
        )
        # When a client follows the job for a few pieces of the guide
        first = open_stream(live.host, live.port, job_id)
        early = guide_texts(first.events(texts=True), 3)

        # Then they come in order, each where the text so far ends
        assert early[0]["offset"] == 0
        assert [t["offset"] for t in early[1:]] == [len(joined(early[:i])) for i in (1, 2)]
        run_id = early[0]["run_id"]
        assert {(t["run_id"], t["stream"]) for t in early} == {(run_id, early[0]["stream"])}

        # And a client that connects now gets the text so far at once, after the snapshot
        second = open_stream(live.host, live.port, job_id)
        frames = second.events(texts=True)
        assert next(frames).event == "snapshot"
        so_far = next(frames)
        assert so_far.event == "guide_text"
        assert so_far.json()["offset"] == 0
        assert so_far.json()["text"].startswith(joined(early))

        # And then the rest, up to the stored guide, before the task's outcome
        rest: list[dict] = [so_far.json()]
        for frame in frames:
            if frame.event == "guide_text":
                rest.append(frame.json())
            elif frame.json()["type"] == "task_succeeded":
                break
        # (the hub dropped the finished guide's text: a stream opening now gets none)
        assert hub.text_so_far(job_id) == []
        first.close()
        second.close()
    finally:
        hub.unsubscribe(0, keep_listening)
    with session_scope() as session:
        stored = session.query(HandsOn.markdown).one()[0]
    assert joined(rest) == stored
