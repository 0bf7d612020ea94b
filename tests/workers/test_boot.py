"""What a worker does when it boots, before its first message."""

from __future__ import annotations

import dramatiq
from workerkit import fast_settings

import db
from workers import broker as worker_setup


def test_a_booting_worker_opens_a_database_connection_per_thread(postgres_url):
    # Given a worker's broker and a fresh connection pool (none open yet)
    settings = fast_settings(postgres_url)
    broker = worker_setup.configure(settings, broker=worker_setup.build_broker(settings))
    db.get_engine().dispose()
    assert db.get_engine().pool.checkedin() == 0

    # When a worker with 4 threads boots
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        # Then 4 connections wait in the pool for its first messages
        assert db.get_engine().pool.checkedin() == 4
    finally:
        worker.stop()
