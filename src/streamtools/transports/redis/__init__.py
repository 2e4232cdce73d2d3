"""The Redis Streams transport on redis-py's asyncio client: at-least-once.

Streams: a queue is the stream whose key is the queue name (no prefix); dead letters go to the
stream `<queue>.dlq`. Consumers join the consumer group `group=` (else the queue name),
created at id 0 with MKSTREAM when missing, so entries added before the first consumer are
delivered; members of a group share the entries, two groups each get all of them.

Wire format: one entry per message, the body in the field `body` and the CloudEvents
attributes as fields `ce-id`, `ce-type`, `ce-source`, `ce-specversion`, `ce-time` and
`content-type` (plus `x-streamtools-attempt` and the dead-letter fields when set), so
redis-cli and other clients read our entries, and theirs reach our typed handlers.

Producers: `send` returns once the server added the entry (XADD). `max_length=None` leaves
the stream unbounded; `max_length=n` trims with `MAXLEN ~ n`, dropping the oldest entries
whether they were read and acknowledged or not: a bounded stream can lose messages.
Durability is the server's: with `appendonly yes` and `appendfsync always` an added entry
survives a server restart; with Redis's defaults the last second (or everything since the
last snapshot) may not.

Consumers: XREADGROUP (BLOCK 1 s, COUNT up to `limits.max_in_flight`), the core's delivery
policy (retries with backoff, `<queue>.dlq` with the error fields, the `.dlq` rule), XACK in
batches once settled. Redis has no delayed delivery: a retry copy is XADDed to the stream's
tail once its backoff delay has passed, the original pending meanwhile. A member that dies
leaves its entries pending; another member reclaims them with XAUTOCLAIM once idle for
`claim_idle` seconds (30 by default), while live members renew the claims on what they are
handling. Request/reply is not offered (the capabilities say so).

Modules, by job: `_producer` (`RedisProducer`), `_consumer` (`RedisConsumer`: reading,
reclaiming, renewing claims, batched XACKs), `_client` (the connection pool, TLS with an
SSLContext, calling again through a lost connection), `_endpoint` (what both share),
`_streams` (the stream and group names, creating groups), `_wire` (metadata on entry fields),
`_errors` (redis-py errors to streamtools errors), `_settings` (keywords and the environment;
the password kept out of sight).
"""

import logging

# Without redis-py the registry says: pip install 'streamtools[redis]'.
from streamtools._public import report_as as _report_as
from streamtools.transports.redis._consumer import RedisConsumer
from streamtools.transports.redis._producer import RedisProducer

logging.getLogger("streamtools.redis").addHandler(logging.NullHandler())

__all__ = ["RedisConsumer", "RedisProducer"]

_report_as(__name__, (globals()[name] for name in __all__))
