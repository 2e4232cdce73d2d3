"""The Kafka transport on aiokafka: acknowledged with acks=all, at-least-once.

Topics: the topic is the queue name. `a_init()` creates it and `<queue>.dlq` when missing
(`partitions=`, 3 by default; `replication_factor=`, by default as many as the cluster has
brokers, up to 3); a topic that exists with another partition count is used as it is.

Wire format: the CloudEvents Kafka protocol binding in binary mode. The record value is the
message's JSON (or msgpack) alone; the headers are `ce_id`, `ce_type`, `ce_source`,
`ce_specversion`, `ce_time` and `content-type` (UTF-8), so plain Kafka clients and the
CloudEvents SDK read our records, and theirs reach our typed handlers.

Producers: `send` returns once the broker acknowledged the record with `acks=all`;
`idempotence=None` (the default) turns the idempotent producer on where the broker supports
it and off, with one log line, where it refuses it. Send options: `key=` (records with one
key go to one partition and keep their order) and `headers=`.

Consumers: one consumer group per queue (`group=`, else `KAFKA_GROUP`, else the queue name):
members of a group share the partitions, like competing RabbitMQ consumers share a queue,
and each group gets every record. The delivery policy is the core's (retry with backoff,
dead-letter to `<queue>.dlq` with the error headers, the `.dlq` rule): Kafka has no delayed
delivery, so a retry copy is produced to the topic's tail once its backoff delay has passed
(the original stays unsettled meanwhile). Handlers run concurrently across keys and in order
within a key (at most `max_in_flight` at once); offsets are committed per partition only up
to the contiguous settled prefix (the core's settle window), so a crash, a rebalance or a cut
connection redelivers and never loses. On partitions revoked, in-flight work on them
finishes (up to `shutdown_timeout`) and the settled offsets are committed before they go.
Request/reply is not offered (the capabilities say so).

Modules, by job: `_producer` (`KafkaProducer`: send options, the send), `_consumer`
(`KafkaConsumer`: the group, the fetch loop, partitions and their offsets, rebalances),
`_client` (the producing client: acks=all, the idempotence fallback, send until
acknowledged), `_endpoint` (what producers and consumers share), `_topics` (creating the
topics), `_wire` (metadata on record headers), `_errors` (aiokafka errors to streamtools
errors), `_settings` (keywords and the environment; the password kept out of sight).
aiokafka's undocumented answer shapes are read in `streamtools._foreign.aiokafka`.
"""

import logging

# Without aiokafka the registry says: pip install 'streamtools[kafka]'.
from streamtools._public import report_as as _report_as
from streamtools.transports.kafka._consumer import KafkaConsumer
from streamtools.transports.kafka._producer import KafkaProducer

logging.getLogger("streamtools.kafka").addHandler(logging.NullHandler())

__all__ = ["KafkaConsumer", "KafkaProducer"]

_report_as(__name__, (globals()[name] for name in __all__))
