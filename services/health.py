"""gRPC health that follows Redis: a server whose queue is unreachable says NOT_SERVING (so
balancers and orchestrators stop sending it work) and SERVING again on its own once Redis
answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

INTERVAL_S = 1.0


async def follow_redis(ping: Callable[[], Awaitable[Any]], set_serving: Callable[[bool], Awaitable[None]],
                       ready: Callable[[], bool], interval_s: float = INTERVAL_S) -> None:
    """Until cancelled: every interval, SERVING when Redis answers a PING and `ready()` holds,
    else NOT_SERVING; health changes only when the answer does."""
    serving: bool | None = None
    while True:
        try:
            await asyncio.wait_for(ping(), interval_s)
            reachable = True
        except (RedisError, TimeoutError, OSError):
            reachable = False
        wanted = reachable and ready()
        if wanted != serving:
            if serving is not None:
                log.warning("health %s: Redis %s", "SERVING" if wanted else "NOT_SERVING",
                            "answers again" if reachable else "is unreachable")
            await set_serving(wanted)
            serving = wanted
        await asyncio.sleep(interval_s)
