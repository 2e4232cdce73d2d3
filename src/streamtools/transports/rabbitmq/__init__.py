"""The RabbitMQ transport on aio-pika: confirmed, persistent, self-healing.

Topology, declared idempotently with the same arguments by producers and consumers:

- `<queue>`: durable, quorum by default (`queue_type="classic"` selectable), with a
  dead-letter route to `<queue>.dlq` as a safety net for what the broker itself drops
  (e.g. a quorum queue's delivery limit after repeated consumer crashes).
- `<queue>.dlq`: durable; streamtools publishes poison and invalid messages there itself,
  with `x-death-reason`, `x-error-type`, `x-error-message`, `x-attempts` and
  `x-original-queue` headers. A consumer on a name ending in `.dlq` consumes it as is
  and declares no retry queues: what its handler cannot take goes back to the tail of that
  same DLQ after the backoff delay (the core's rule, see `streamtools._delivery`).
- `<queue>.retry.<n>` (consumers only, n = 1..retry.attempts): durable delay queues without
  consumers whose expired messages dead-letter back to `<queue>`. A failed message is copied
  there with a per-message `expiration` (the backoff delay) and `x-streamtools-attempt`
  incremented, confirmed, and only then is the original acked: nothing is lost in between,
  and no delivery is held while waiting. The TTL is per message, so consumers with other
  retry settings share the same queues without argument mismatches.

Delivery guarantees: `send` returns only after the broker confirmed the (persistent,
mandatory) message. A publish interrupted by a lost connection (or a lost confirm) is
published again with the same message id once the connection is back, until
`send_timeout`: delivery is at-least-once, so a consumer may see a duplicate with the same
`ce-id`. Consumers ack after the handler (and any retry or dead-letter copy) is done, so a
crash or a cut connection redelivers instead of losing.

Modules, by job: `_producer` (sends and requests), `_consumer` (the subscription, its
re-subscription and acks), `_incoming` (one delivery: retry and dead-letter copies, settle,
reply), `_link` (a confirm channel and the publish-until-confirmed loop), `_connection` (the
shared failover connection and the pool), `_errors` (error mapping, the refusal diagnosis),
`_wire` (AMQP properties, prebuilt encodings), `_topology` (queues and arguments),
`_settings` (addresses from keywords and environment, redaction). What they need of
aio-pika's, aiormq's and pamqp's private API is fenced in `streamtools._foreign`.
"""

import logging

from streamtools._public import report_as as _report_as
from streamtools.transports.rabbitmq._consumer import RabbitMQConsumer
from streamtools.transports.rabbitmq._link import REPLY_TO as REPLY_TO
from streamtools.transports.rabbitmq._producer import RabbitMQProducer
from streamtools.transports.rabbitmq._settings import Failover as Failover
from streamtools.transports.rabbitmq._settings import QueueType as QueueType
from streamtools.transports.rabbitmq._settings import redact as redact

# benchmarks/common.py builds properties with it
from streamtools.transports.rabbitmq._wire import _properties as _properties

__all__ = ["RabbitMQConsumer", "RabbitMQProducer"]

logger = logging.getLogger("streamtools.rabbitmq")
logger.addHandler(logging.NullHandler())

_report_as(__name__, (globals()[name] for name in __all__))
