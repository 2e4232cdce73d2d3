"""Traces and metrics, emitted in one place for every transport.

**Tracing** uses the OpenTelemetry API (`pip install 'streamtools[otel]'`), following the
messaging semantic conventions: a PRODUCER span `send {queue}` around `send` / `send_many`
/ `request`, and a CONSUMER span `process {queue}` around decode, handler and settle, whose
parent is the context that came with the message (W3C `traceparent` / `tracestate`, carried
as message headers on every transport; a retry or dead-letter copy keeps them, so its
`process` span joins the original trace as a child of the same `send`). Spans are recorded
only once an SDK is configured (`opentelemetry.trace.set_tracer_provider`, or
`configure_tracing(provider)` for streamtools alone); until then the cost is one check.

**Metrics** use prometheus-client (`pip install 'streamtools[prometheus]'`) once enabled:
`ConsumerRunner` enables them itself and serves `GET /metrics`, or call `enable_metrics()`.

    streamtools_messages_sent_total{transport,queue}
    streamtools_send_duration_seconds{transport,queue}             (until accepted)
    streamtools_messages_processed_total{transport,queue,outcome}  (ok, retried,
                                          dead_lettered, invalid, failed)
    streamtools_process_duration_seconds{transport,queue}          (decode to settle)
    streamtools_messages_in_flight{transport,queue}

The `transport` label is the endpoint's `messaging.system` (rabbitmq, kafka, streamtools.http,
streamtools.memory), as on the spans and in the log records: one name per transport.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec

from streamtools._codec import Metadata
from streamtools._version import __version__

if TYPE_CHECKING:
    from streamtools._base import Consumer, Producer

_trace: Any
_propagate: Any
try:
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # the otel extra is not installed: tracing stays off
    _trace = _propagate = None

__all__ = ["Processing", "configure_tracing", "enable_metrics", "metrics_answer"]

OUTCOMES: Final = ("ok", "retried", "dead_lettered", "invalid", "failed")
TRACE_HEADERS: Final = ("traceparent", "tracestate")

_UNKNOWN: Final = object()
_configured: Any = None  # a TracerProvider given to configure_tracing, else the global one
_cached: tuple[Any, Any] | None = None  # (provider, its tracer)


def configure_tracing(provider: Any | None) -> None:
    """Record streamtools' spans with `provider` (None: the global provider again)."""
    global _configured, _cached
    _configured, _cached = provider, None


def _tracer() -> Any | None:
    """The tracer to record with, or None while no SDK is configured (the common case)."""
    global _cached
    if _trace is None:
        return None
    if _configured is not None:
        provider = _configured
    else:
        # The API keeps the provider set by set_tracer_provider here; None means none was
        # set (the common case, checked without a call). Read the public way otherwise.
        provider = getattr(_trace, "_TRACER_PROVIDER", _UNKNOWN)
        if provider is None:
            return None
        if provider is _UNKNOWN:
            provider = _trace.get_tracer_provider()
    if isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider):
        return None
    cached = _cached
    if cached is not None and cached[0] is provider:
        return cached[1]
    tracer = provider.get_tracer("streamtools", __version__)
    _cached = (provider, tracer)
    return tracer


# --- metrics ---------------------------------------------------------------------------------


class _Metrics:
    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        labels = ("transport", "queue")
        self.registry = registry
        self.sent = Counter(
            "streamtools_messages_sent",
            "Messages accepted by the broker or server.",
            labels,
            registry=registry,
        )
        self.send_duration = Histogram(
            "streamtools_send_duration_seconds",
            "From send to accepted.",
            labels,
            registry=registry,
        )
        self.processed = Counter(
            "streamtools_messages_processed",
            "Messages handled, by outcome.",
            (*labels, "outcome"),
            registry=registry,
        )
        self.process_duration = Histogram(
            "streamtools_process_duration_seconds",
            "From receipt to settled.",
            labels,
            registry=registry,
        )
        self.in_flight = Gauge(
            "streamtools_messages_in_flight",
            "Messages being handled now.",
            labels,
            registry=registry,
        )
        self._children: dict[tuple[str, str], _Children] = {}

    def of(self, transport: str, queue: str) -> _Children:
        """The labelled children of one (transport, queue), looked up once."""
        children = self._children.get((transport, queue))
        if children is None:
            children = self._children[(transport, queue)] = _Children(self, transport, queue)
        return children


class _Children:
    __slots__ = ("in_flight", "process_duration", "processed", "send_duration", "sent")

    def __init__(self, metrics: _Metrics, transport: str, queue: str) -> None:
        self.sent = metrics.sent.labels(transport, queue)
        self.send_duration = metrics.send_duration.labels(transport, queue)
        self.process_duration = metrics.process_duration.labels(transport, queue)
        self.in_flight = metrics.in_flight.labels(transport, queue)
        self.processed = {
            outcome: metrics.processed.labels(transport, queue, outcome) for outcome in OUTCOMES
        }


_metrics: _Metrics | None = None
_registered: dict[int, _Metrics] = {}


def enable_metrics(registry: Any | None = None) -> Any:
    """Count every send and delivery in `registry` (prometheus-client's default one when
    None); returns the registry in use. Calling it again with another registry moves the
    counting there."""
    global _metrics
    try:
        import prometheus_client
    except ImportError:
        from streamtools.errors import ConfigurationError

        raise ConfigurationError(
            "metrics need prometheus-client: pip install 'streamtools[prometheus]'"
        ) from None
    chosen = registry if registry is not None else prometheus_client.REGISTRY
    found = _registered.get(id(chosen))
    if found is None or found.registry is not chosen:
        found = _registered[id(chosen)] = _Metrics(chosen)  # a registry takes them once
    _metrics = found
    return chosen


def metrics_enabled() -> bool:
    return _metrics is not None


def metrics_answer() -> tuple[bytes, str]:
    """The Prometheus text exposition of the registry in use, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    assert _metrics is not None
    return generate_latest(_metrics.registry), CONTENT_TYPE_LATEST


def in_flight(consumer: Consumer[Any], change: int) -> None:
    metrics = _metrics
    if metrics is not None:
        metrics.of(consumer.messaging_system, consumer.queue.name).in_flight.inc(change)


# --- the two places everything is emitted ----------------------------------------------------


def active() -> bool:
    """Whether anything is recorded: the one check on the hot path when nothing is."""
    return _metrics is not None or _tracer() is not None


def _server_attributes(endpoint: Producer[Any] | Consumer[Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": endpoint.messaging_system,
        "messaging.destination.name": endpoint.queue.name,
    }
    address = endpoint.server_address
    if address is not None:
        attributes["server.address"], attributes["server.port"] = address
    return attributes


@contextlib.contextmanager
def sending(
    producer: Producer[Any], metas: Sequence[Metadata], operation: str = "send"
) -> Iterator[list[Metadata]]:
    """Around accepting `metas`: a PRODUCER span whose context the yielded metas carry in
    their headers, and the send metrics. The caller sends the yielded metas."""
    tracer = _tracer()
    started = time.perf_counter()
    if tracer is None:
        yield list(metas)
    else:
        attributes = _server_attributes(producer)
        attributes["messaging.operation.name"] = operation
        attributes["messaging.operation.type"] = "send"
        if len(metas) == 1:
            attributes["messaging.message.id"] = metas[0].id
        else:
            attributes["messaging.batch.message_count"] = len(metas)
        with tracer.start_as_current_span(
            f"{operation} {producer.queue.name}",
            kind=_trace.SpanKind.PRODUCER,
            attributes=attributes,
        ):
            carrier: dict[str, str] = {}
            _propagate.inject(carrier)
            yield [
                msgspec.structs.replace(meta, headers={**meta.headers, **carrier}) for meta in metas
            ]
    metrics = _metrics
    if metrics is not None:
        children = metrics.of(producer.messaging_system, producer.queue.name)
        children.sent.inc(len(metas))
        children.send_duration.observe(time.perf_counter() - started)


class Processing:
    """What `processing` yields: set `outcome` (and `error`) as the delivery ends."""

    __slots__ = ("error", "outcome", "span")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.outcome = "ok"
        self.error: BaseException | None = None

    @property
    def trace_id(self) -> str | None:
        """The trace id as 32 hex digits while a span records, for log lines."""
        if self.span is None:
            return None
        return f"{self.span.get_span_context().trace_id:032x}"


@contextlib.contextmanager
def processing(
    consumer: Consumer[Any],
    meta: Metadata,
    attributes: Mapping[str, Any] | None = None,
    carrier: Mapping[str, Any] | None = None,
) -> Iterator[Processing]:
    """Around one delivery (decode, handler, settle): a CONSUMER span whose parent is the
    context the message carried, and the process metrics with the outcome set on the
    yielded `Processing`."""
    tracer = _tracer()
    started = time.perf_counter()
    if tracer is None:
        observed = Processing(None)
        yield observed
    else:
        span_attributes = _server_attributes(consumer)
        span_attributes["messaging.operation.name"] = "process"
        span_attributes["messaging.operation.type"] = "process"
        span_attributes["messaging.message.id"] = meta.id
        if attributes:
            span_attributes.update(attributes)
        parent = _propagate.extract(carrier if carrier is not None else meta.headers)
        with tracer.start_as_current_span(
            f"process {consumer.queue.name}",
            context=parent,
            kind=_trace.SpanKind.CONSUMER,
            attributes=span_attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            observed = Processing(span)
            try:
                yield observed
            finally:
                span.set_attribute("streamtools.outcome", observed.outcome)
                if observed.error is not None:
                    span.set_attribute("error.type", type(observed.error).__qualname__)
                    span.record_exception(observed.error)
                    span.set_status(_trace.Status(_trace.StatusCode.ERROR, str(observed.error)))
    metrics = _metrics
    if metrics is not None:
        children = metrics.of(consumer.messaging_system, consumer.queue.name)
        children.processed[observed.outcome].inc()
        children.process_duration.observe(time.perf_counter() - started)


def current_trace_id() -> str | None:
    """The current span's trace id as 32 hex digits, for log lines; None without one."""
    if _trace is None:
        return None
    context = _trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def trace_headers(headers: Mapping[str, Any]) -> MutableMapping[str, str]:
    """The W3C trace headers among `headers` (for transports that read no other extras)."""
    found: dict[str, str] = {}
    for key in TRACE_HEADERS:
        value = headers.get(key)
        if isinstance(value, str):
            found[key] = value
    return found
