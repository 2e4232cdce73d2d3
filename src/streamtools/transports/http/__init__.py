"""The HTTP transport on aiohttp: typed request/response between services.

`HTTPProducer` sends each message as one HTTP request (POST body, or GET query parameters)
with CloudEvents binary-mode headers, over one pooled `ClientSession` per producer, retrying
connection errors and 502/503/504 with the same message id. `HTTPConsumer` serves one route
per queue (`/{queue name}`) on an aiohttp server that consumers of the same loop, host and
port share. Bad input gets a JSON error body `{"error": ..., "detail": ...}` and its status:

    400 malformed body or query     413 body over `max_body_size`   404 unknown queue
    422 schema violation (+ path)   415 unsupported content type    405 wrong method
    401 missing or wrong token      500 the handler raised          503 shutting down
    408 headers or body too slow    (or encoding)                       or overloaded

A handler's returned Struct is the 200 body (in the request's content type), else 204.
A request whose (`ce-source`, `ce-id`) was handled recently is answered as before without
running the handler again, so producer retries are safe.

Modules, by job: `_producer` (requests and retries), `_consumer` (one queue's route:
checks, decode, handler, status), `_server` (the shared server and its dispatch),
`_connection` (one client connection: timeouts, parser errors, limits, graceful stop),
`_negotiation` (content types, Accept, GET query <-> message), `_body` (reading and
inflating within the size limit), `_dedup` (the answers to recent messages), `_presets`
(send-side wire formats), `_outcome` (answers), `_config` (settings and the environment).
"""

from streamtools._public import report_as as _report_as
from streamtools.transports.http._consumer import HTTPConsumer
from streamtools.transports.http._presets import (
    HeadersPreset,
    headers_presets,
    register_headers_preset,
)
from streamtools.transports.http._producer import HTTPProducer

__all__ = [
    "HTTPConsumer",
    "HTTPProducer",
    "HeadersPreset",
    "headers_presets",
    "register_headers_preset",
]

_report_as(__name__, (globals()[name] for name in __all__))
