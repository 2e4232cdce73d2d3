"""The NATS JetStream transport on nats-py: stored with a PubAck, at-least-once.

Streams: one per queue, its subject the queue name, and one for `<queue>.dlq`; stream names
cannot hold `.`, so `orders.created` is stored in stream `orders_created-<sha1[:8]>` (see
`_streams.stream_name`). New streams use file storage, work-queue retention (an
acknowledged message is removed) and a two-minute duplicate window; an existing stream with
another subject, retention or storage is a ConfigurationError.

Wire format: the CloudEvents NATS protocol binding in binary mode. The payload is the
message's JSON (or msgpack) alone; the headers are `ce-id`, `ce-type`, `ce-source`,
`ce-specversion`, `ce-time` and `Content-Type`, plus `Nats-Msg-Id` (the message id) for
JetStream's duplicate detection.

Producers: `send` returns once JetStream acknowledged the message (PubAck), publishing again
through a lost connection up to `send_timeout` (the server drops the second copy as a
duplicate). Send option: `headers=`. `request()` waits for the reply on a core NATS inbox.

Consumers: one durable pull consumer per queue, shared by every member (competing
consumers), explicit acknowledgements, `max_ack_pending` = `limits.max_in_flight`. The
delivery policy is the core's; a retry copy is published to the stream's tail after its
backoff delay while the original is held, kept from redelivery by in-progress
acknowledgements every third of `ack_wait`. nats-py reconnects by itself and re-subscribes
the pull subscription; after failed fetches the durable is declared and bound again.

Modules, by job: `_producer` (`NATSProducer`), `_consumer` (`NATSConsumer`: the durable,
the fetch loop, holding and acknowledging), `_client` (the connection, publish until
acknowledged), `_endpoint` (what producers and consumers share), `_streams` (stream names,
creating and checking streams), `_wire` (metadata on headers), `_errors` (nats-py errors to
streamtools errors), `_settings` (keywords and the environment; secrets kept out of sight).
"""

import logging

# Without nats-py the registry says: pip install 'streamtools[nats]'.
from streamtools._public import report_as as _report_as
from streamtools.transports.nats._consumer import NATSConsumer
from streamtools.transports.nats._producer import NATSProducer

logging.getLogger("streamtools.nats").addHandler(logging.NullHandler())

__all__ = ["NATSConsumer", "NATSProducer"]

_report_as(__name__, (globals()[name] for name in __all__))
