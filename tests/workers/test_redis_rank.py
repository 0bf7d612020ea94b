"""Ranks in Redis ids (workers.redis_rank): what the fetch script reads them as."""

from __future__ import annotations

import uuid

import pytest

from workers import redis_rank


@pytest.mark.parametrize("rank", [1, 7, 1200])
def test_a_ranked_message_gets_an_id_that_carries_its_rank(rank):
    message_id = redis_rank.redis_id({"rank": rank})

    assert redis_rank.rank_of(message_id) == rank
    assert uuid.UUID(message_id.split(".", 1)[1])


@pytest.mark.parametrize("options", [{}, {"rank": 0}, {"rank": -3}, {"rank": True}, {"rank": "5"}])
def test_other_messages_get_a_bare_uuid_that_ranks_lowest(options):
    message_id = redis_rank.redis_id(options)

    assert uuid.UUID(message_id)
    assert redis_rank.rank_of(message_id) == 0


def test_highest_first_keeps_the_order_of_equal_ranks():
    ids = ["a1b2", "2.x", "5.y", "2.z", "0c"]

    assert redis_rank.highest_first(ids) == ["5.y", "2.x", "2.z", "a1b2", "0c"]
