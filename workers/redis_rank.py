"""Message priority on the Redis queue: a message's rank rides in its Redis id.

A message whose Dramatiq options hold ``rank`` (a non-negative integer; the engine puts
each task's longest chain of tasks still ahead of it there, ``pipelines.compose``) is
stored under the Redis id ``"<rank>.<uuid>"`` instead of a bare uuid. The fetch script
(``workers/lua/fetch.lua``) looks at a window of the queue's head and takes the
highest-ranked ids first; ids without a rank (stock producers, actors sent by hand) rank
0. Stock consumers sharing the queue see opaque ids and take them in list order.

Ranks cost no Redis command: the id is written anyway, and the fetch that looks at the
window is the one that takes messages (one LPUSH more when it leaves some behind).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from pipelines import RANK_OPTION

_RANKED = re.compile(r"(\d+)\.")


def redis_id(options: Mapping[str, Any]) -> str:
    """Return a new Redis id for a message with these options: ranked when they hold a
    non-negative integer ``rank``, a bare uuid (rank 0) otherwise."""
    rank = options.get(RANK_OPTION)
    if isinstance(rank, int) and not isinstance(rank, bool) and rank > 0:
        return f"{rank}.{uuid.uuid4()}"
    return str(uuid.uuid4())


def rank_of(message_id: str) -> int:
    """Return the rank a Redis id carries (0 for an unranked id)."""
    ranked = _RANKED.match(message_id)
    return int(ranked.group(1)) if ranked else 0


def highest_first(message_ids: Iterable[str]) -> list[str]:
    """Return the ids highest rank first, equal ranks in their order (as the fetch takes them)."""
    return sorted(message_ids, key=rank_of, reverse=True)
