"""EventFeed: streams of one job share reads; memory answers only what it fully holds."""

from __future__ import annotations

from web.feed import EventFeed


class Store:
    """A job's events in memory, counting reads like the database would."""

    def __init__(self) -> None:
        self.events: dict[int, list[dict]] = {}

    def add(self, job_id: int, count: int) -> int:
        events = self.events.setdefault(job_id, [])
        for _ in range(count):
            events.append({"seq": len(events) + 1, "type": "t", "payload": {}})
        return len(events)

    def read(self, job_id: int, after_seq: int) -> list[dict]:
        return [e for e in self.events.get(job_id, []) if e["seq"] > after_seq][:3]


def seqs(events: list[dict]) -> list[int]:
    return [e["seq"] for e in events]


def test_a_commit_is_read_once_for_every_stream_of_the_job():
    store = Store()
    feed = EventFeed(store.read)
    newest = store.add(1, 2)
    assert seqs(feed.after(1, 0, newest, limit=10)) == [1, 2]
    # Every other stream woken by the same commit is served from memory
    for _ in range(5):
        assert seqs(feed.after(1, 0, newest, limit=10)) == [1, 2]
        assert seqs(feed.after(1, 1, newest, limit=10)) == [2]
    assert feed.reads == 1


def test_memory_never_answers_what_it_does_not_hold():
    store = Store()
    feed = EventFeed(store.read)
    feed.after(1, 0, store.add(1, 2), limit=10)
    # A newer commit, an unknown newest seq, or an older start: the database answers
    assert seqs(feed.after(1, 2, store.add(1, 1), limit=10)) == [3]
    assert seqs(feed.after(1, 0, -1, limit=10)) == [1, 2, 3]
    assert feed.reads == 3
    # ...and reads are merged into one contiguous run
    assert seqs(feed.after(1, 1, 3, limit=10)) == [2, 3]
    assert feed.reads == 3


def test_jobs_are_kept_apart_and_the_least_recent_dropped():
    store = Store()
    feed = EventFeed(store.read, keep=2, jobs=1)
    feed.after(1, 0, store.add(1, 3), limit=10)
    feed.after(2, 0, store.add(2, 1), limit=10)
    assert seqs(feed.after(2, 0, 1, limit=10)) == [1]
    assert feed.reads == 2
    assert seqs(feed.after(1, 1, 3, limit=10)) == [2, 3]  # job 1 was dropped: read again
    assert feed.reads == 3
