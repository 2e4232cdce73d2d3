"""The streams and consumer groups of a queue.

The stream's key is the queue name itself (no prefix: `XLEN orders.created` in redis-cli
shows the queue), its dead letters go to the stream `<queue>.dlq`. Retries go back to the
queue's own stream (after their backoff delay), so there are no retry streams.

Each consumer joins the consumer group `group=` (else the queue name) on its stream, which it
creates with MKSTREAM at id 0 when missing: entries added before the first consumer started
are delivered too. Members of one group share the entries; two groups each get all of them.
A producer creates nothing: its first XADD creates the stream, and a group created later
still starts at id 0. The `.dlq` stream appears with the first dead letter (or when a consumer
of it starts).
"""

from __future__ import annotations

import redis.asyncio
import redis.exceptions


async def ensure_group(client: redis.asyncio.Redis, stream: str, group: str) -> bool:
    """Create consumer group `group` on `stream` at id 0 (and the stream) unless it exists;
    True if it was created now."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.exceptions.ResponseError as exc:
        if str(exc).startswith("BUSYGROUP"):
            return False
        raise
    return True


def missing_group(exc: BaseException) -> bool:
    """The group (or its stream) is gone: deleted, or a server restarted without its data."""
    return isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith("NOGROUP")
