"""A guide's pieces, coalesced into a few bounded deltas (workers/streaming.py)."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Sequence

import pytest

from db import text_stream
from db.text_stream import TextDelta, TextSoFar
from settings import Settings
from workers import streaming
from workers.generators import GuideRequest, OfflineGenerator
from workers.streaming import Coalescer

REQUEST = GuideRequest(
    project_name="Potluck",
    task_key="api",
    task_title="Write the recipe API",
    task_description="REST endpoints for recipes, with tests and pagination.",
    job_id=7,
)


class Recorder:
    """A sender that keeps each flush (its deltas and when it came)."""

    def __init__(self, fail: bool = False) -> None:
        self.flushes: list[tuple[float, list[TextDelta]]] = []
        self.fail = fail
        self.sent = threading.Event()

    def __call__(self, deltas: Sequence[TextDelta]) -> None:
        self.flushes.append((time.monotonic(), list(deltas)))
        self.sent.set()
        if self.fail:
            raise ConnectionError("the database is gone")

    @property
    def deltas(self) -> list[TextDelta]:
        return [delta for _, deltas in self.flushes for delta in deltas]


def coalescer(recorder: Recorder, interval_s: float = 0.1, max_chars: int = 20_000) -> Coalescer:
    return Coalescer(job_id=7, run_id=3, interval_s=interval_s, max_chars=max_chars, send=recorder)


def test_a_fast_stream_of_pieces_is_sent_in_few_flushes_in_order_with_its_tail():
    # Given the offline generator writing over 1 s (a piece of words every 50 ms)
    recorder = Recorder()
    stream = coalescer(recorder, interval_s=0.1)
    started = time.monotonic()
    written = OfflineGenerator(latency_ms=1000).generate(REQUEST, on_text=stream)
    took = time.monotonic() - started
    stream.close()

    # Then it went out in at most one flush per interval, plus the tail...
    assert 5 <= len(recorder.flushes) <= math.ceil(took / 0.1) + 1
    times = [at for at, _ in recorder.flushes]
    assert all(later - earlier >= 0.099 for earlier, later in itertools.pairwise(times[:-1]))
    # ...every character once, in order, each delta where the previous one ended...
    deltas = recorder.deltas
    assert "".join(delta.text for delta in deltas) == written.markdown
    assert [delta.offset for delta in deltas] == [0] + [d.end for d in deltas[:-1]]
    assert {(d.job_id, d.run_id, d.stream) for d in deltas} == {(7, 3, stream.stream)}
    # ...the last flush carrying the tail after the generator returned
    assert times[-1] >= started + took - 0.01
    assert stream.flushes == len(recorder.flushes)


def test_the_last_pieces_of_a_burst_go_out_on_a_timer_without_more_pieces():
    # Given a flush that just went out, then one more piece and silence
    recorder = Recorder()
    stream = coalescer(recorder, interval_s=0.05)
    time.sleep(0.06)  # the generator's pace, not a wait for our work
    stream("Hello")
    assert recorder.sent.wait(2)  # on the timer's thread, at once: the interval has passed
    assert [d.text for d in recorder.deltas] == ["Hello"]
    recorder.sent.clear()
    stream(" world")

    # Then the piece goes out once the interval has passed, with nothing else arriving
    assert recorder.sent.wait(2)
    assert [d.text for d in recorder.deltas] == ["Hello", " world"]
    assert recorder.flushes[1][0] - recorder.flushes[0][0] >= 0.049
    stream.close()
    assert len(recorder.flushes) == 2  # nothing was left for the end


def test_the_tail_goes_out_when_the_end_comes_during_the_first_flush():
    # Given a first flush still on its way (the database is slow to answer)
    entered, gate = threading.Event(), threading.Event()
    recorder = Recorder()

    def slow(deltas: Sequence[TextDelta]) -> None:
        recorder(deltas)
        entered.set()
        assert gate.wait(5)

    stream = Coalescer(job_id=7, run_id=3, interval_s=0.05, max_chars=100, send=slow)
    time.sleep(0.06)  # the generator's pace, not a wait for our work
    first = threading.Thread(target=stream, args=("Hello",))
    first.start()
    assert entered.wait(5)

    # When the last piece comes and the guide ends while it is on its way
    stream(" world")
    threading.Timer(0.05, gate.set).start()
    stream.close()
    first.join()

    # Then the tail followed it
    assert [d.text for d in recorder.deltas] == ["Hello", " world"]


def test_the_tail_can_be_taken_to_go_with_the_outcome():
    # Given a run whose first flush went out, with one more piece pending
    recorder = Recorder()
    stream = coalescer(recorder, interval_s=0.05)
    time.sleep(0.06)  # the generator's pace, not a wait for our work
    stream("Hello")
    assert recorder.sent.wait(5)
    stream(" world")

    # When the guide ends and its tail is taken (to be sent with the run's outcome)
    tail = stream.take_tail()
    stream("late")

    # Then the tail is the pending text where the first flush ended, and it was not sent
    assert tail == [TextDelta(7, 3, stream.stream, 5, " world")]
    assert [d.text for d in recorder.deltas] == ["Hello"]
    assert stream.take_tail() == []


def test_a_guide_written_within_one_interval_has_no_tail_to_take():
    recorder = Recorder()
    stream = coalescer(recorder, interval_s=5)
    OfflineGenerator().generate(REQUEST, on_text=stream)
    assert stream.take_tail() == []
    assert recorder.flushes == []


def test_a_guide_written_within_one_interval_is_not_streamed():
    recorder = Recorder()
    stream = coalescer(recorder, interval_s=5)
    OfflineGenerator().generate(REQUEST, on_text=stream)
    stream.close()
    assert recorder.flushes == []


def test_a_big_piece_is_cut_into_payloads_postgresql_accepts_and_the_run_is_capped():
    # Given a generator that hands over a whole long guide at once (no streaming),
    # in characters of 1 to 4 UTF-8 bytes, some of them NUL (PostgreSQL refuses those)
    recorder = Recorder()
    stream = coalescer(recorder, interval_s=0, max_chars=12_000)
    text = ("a\0é漢😀\n" * 4_000)[:20_000]
    stream(text)
    stream("more")  # past the cap
    stream.close()

    # Then it went out in one flush of payloads under the limit, cut between characters,
    # up to the run's cap, without the NULs
    assert len(recorder.flushes) == 1
    first = recorder.flushes[0][1]
    assert len(first) > 1
    assert all(len(d.payload().encode()) <= text_stream.MAX_PAYLOAD_BYTES for d in first)
    sent = "".join(d.text for d in recorder.deltas)
    assert sent == text.replace("\0", "")[:12_000]
    assert [text_stream.TextDelta.parse(d.payload()) for d in first] == first


def test_a_failing_flush_is_dropped_and_the_run_streams_nothing_more():
    # Given a sender that fails (the database is gone)
    recorder = Recorder(fail=True)
    stream = coalescer(recorder, interval_s=0.02)

    # When the generator writes for a while
    written = OfflineGenerator(latency_ms=300).generate(REQUEST, on_text=stream)
    stream.close()

    # Then the guide is whole, and only one flush was tried
    assert written.markdown.startswith("# Hands-on: Write the recipe API")
    assert len(recorder.flushes) == 1


def test_streaming_is_off_at_interval_0_and_for_a_run_of_no_job():
    settings = Settings(GUIDE_STREAM_INTERVAL_MS=0)
    with streaming.guide_stream(7, 3, settings) as on_text:
        assert on_text is None
    with streaming.guide_stream(None, 3, Settings()) as on_text:
        assert on_text is None
    with streaming.guide_stream(7, 3, Settings()) as on_text:
        assert isinstance(on_text, Coalescer)


def test_an_error_in_the_block_sends_no_tail():
    # Given a run that streamed a first piece
    recorder = Recorder()
    stream = coalescer(recorder, interval_s=0.5)
    stream("first")
    assert recorder.sent.wait(5)

    # When the generator fails with a piece pending
    with pytest.raises(RuntimeError):
        try:
            stream("second")
            raise RuntimeError("the model failed")
        except RuntimeError:
            stream.close(flush=False)
            raise

    # Then neither the pending piece nor a later one is sent
    stream("late")
    assert [d.text for d in recorder.deltas] == ["first"]
    assert stream.flushes == 1


def delta(offset: int, text: str, run: int = 3, stream: str = "s1") -> TextDelta:
    return TextDelta(7, run, stream, offset, text)


def test_the_text_so_far_skips_overlaps_restarts_on_a_new_stream_and_expires():
    kept = TextSoFar(max_runs=2, max_chars=10, keep_s=60)
    kept.add(delta(0, "Hello"), now=0)
    kept.add(delta(3, "lo wor"), now=1)  # overlaps: only "wor" is new
    kept.add(delta(0, "Hel"), now=2)  # old news
    assert kept.of_job(7, now=3) == [delta(0, "Hello wor")]
    kept.add(delta(9, "ld and more"), now=3)  # past the cap
    assert kept.of_job(7, now=3) == [delta(0, "Hello worl")]
    kept.add(delta(0, "Again", stream="s2"), now=4)  # a retry: a new stream
    assert kept.of_job(7, now=4) == [delta(0, "Again", stream="s2")]
    kept.add(delta(40, "late", run=4), now=5)  # heard from the middle
    kept.add(delta(0, "x", run=5), now=6)  # a third run: the oldest goes
    assert [d.run_id for d in kept.of_job(7, now=6)] == [4, 5]
    assert kept.of_job(8, now=6) == []
    kept.forget(4)
    assert [d.run_id for d in kept.of_job(7, now=6)] == [5]
    assert kept.of_job(7, now=70) == [] and len(kept) == 0
