"""The transport cases, sized for the run: `builders(quick)` lists them for benchmarks.run."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from benchmarks import http, rabbitmq, rss
from benchmarks.harness import Case


def builders(quick: bool) -> list[Callable[[], list[Case]]]:
    scale = 1 if quick else 4
    found: list[Callable[[], list[Case]]] = [
        lambda: rabbitmq.publish_cases(300 * scale, 5_000 * scale),
        lambda: rabbitmq.consume_cases(5_000 * scale),
        lambda: rabbitmq.latency_cases(200 * scale),
    ]
    has_http = importlib.util.find_spec("streamtools.transports.http") is not None
    has_kafka = importlib.util.find_spec("aiokafka") is not None
    if has_http:
        found.append(lambda: http.cases(2_000 * scale))
    else:
        print("(HTTP cases skipped: streamtools.transports.http is not there yet)")
    if has_kafka:
        from benchmarks import kafka

        found.append(lambda: kafka.produce_cases(5_000 * scale))
        found.append(lambda: kafka.consume_cases(5_000 * scale))
    else:
        print("(Kafka cases skipped: install streamtools[kafka])")
    if importlib.util.find_spec("nats") is not None:
        from benchmarks import nats

        if nats.reachable():
            found.append(lambda: nats.publish_cases(5_000 * scale))
            found.append(lambda: nats.consume_cases(5_000 * scale))
        else:
            print(f"(NATS cases skipped: no server at {nats.NATS_URL})")
    else:
        print("(NATS cases skipped: install streamtools[nats])")
    if (
        importlib.util.find_spec("redis") is not None
        and importlib.util.find_spec("streamtools.transports.redis") is not None
    ):
        from benchmarks import redis

        if redis.reachable():
            found.append(lambda: redis.publish_cases(5_000 * scale))
            found.append(lambda: redis.consume_cases(5_000 * scale))
        else:
            print(f"(Redis cases skipped: no server at {redis.REDIS_URL})")
    else:
        print("(Redis cases skipped: install streamtools[redis])")
    if importlib.util.find_spec("opentelemetry.sdk") and importlib.util.find_spec(
        "prometheus_client"
    ):
        from benchmarks import telemetry

        found.append(lambda: telemetry.cases(5_000 * scale))
    if importlib.util.find_spec("psycopg") is not None:
        from benchmarks import outbox

        found.append(lambda: outbox.cases(scale))
    else:
        print("(outbox cases skipped: install streamtools[postgres])")
    memory = tuple(
        transport
        for transport in rss.TRANSPORTS
        if transport in ("memory", "rabbitmq")
        or (transport == "http" and has_http)
        or (transport == "kafka" and has_kafka)
    )
    found.append(lambda: rss.cases(10_000, 60_000 if quick else 200_000, memory))
    return found
