"""The seed's HandlerFactory dict shape with mixed transports, run as a script.

A bridge: queue_1 is consumed from RabbitMQ and every message is produced onward over HTTP
to a consumer in this same process (queue_2); prints BRIDGED <n> when all have crossed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from streamtools import HTTP, PRODUCERS, RMQ, HandlerFactory

RMQ_QUEUE = os.environ["RMQ_QUEUE"]
HTTP_QUEUE = os.environ["HTTP_QUEUE"]
PORT = int(os.environ["PORT"])
COUNT = int(os.environ.get("COUNT", "20"))

messages_queues: dict[str, dict[str, object]] = {
    "queue_1": {
        "name": RMQ_QUEUE,
        "consumer_loop": "RMQIOHandler",
        "producer": "HTTPHandler",
        "producer_settings": {"host": "127.0.0.1", "port": PORT},
    },
    "queue_2": {
        "name": HTTP_QUEUE,
        "consumer_loop": "HTTPHandler",
        "producer": "HTTPHandler",
        "consumer_settings": {"host": "127.0.0.1", "port": PORT},
        "producer_settings": {"host": "127.0.0.1", "port": PORT},
    },
}


async def main() -> int:
    factory = HandlerFactory(messages_queues)
    bridge, sink = factory["queue_1"], factory["queue_2"]
    arrived: list[Any] = []  # at-least-once: a retried forward may deliver a message twice
    done = asyncio.Event()

    @bridge.consumer()
    async def forward(msg: Any) -> None:
        # The bridge's producer carries queue_1's name; send to the sink's route instead.
        await bridge.producer.send(msg, endpoint=f"http://127.0.0.1:{PORT}/{HTTP_QUEUE}")

    @sink.consumer()
    async def land(msg: Any) -> None:
        arrived.append(msg)
        if len({m["n"] for m in arrived}) == COUNT:
            done.set()

    await factory.a_init()
    try:
        await sink.consumer.start()
        await bridge.consumer.start()
        async with PRODUCERS[RMQ](RMQ_QUEUE) as into_rabbit:
            for n in range(COUNT):
                await into_rabbit.send({"n": n})
        async with asyncio.timeout(60):
            await done.wait()
    finally:
        await factory.close()
    crossed = {m["n"] for m in arrived}
    print(f"BRIDGED {len(crossed)} via {RMQ} -> {HTTP} ({len(arrived) - len(crossed)} duplicates)")
    return 0 if crossed == set(range(COUNT)) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
