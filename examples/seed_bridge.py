"""The seed's HandlerFactory example, running: queue_1 over HTTP into Kafka, queue_2 on RabbitMQ.

The seed's "messages queues" dict pairs queue_1's Kafka consumer with an HTTP producer: some
other service "accepts HTTP messages to be produced to a Kafka queue". That service is
`bridge` here: an HTTP consumer whose handler produces each message to Kafka. queue_2 is
RabbitMQ both ways. Run it with a Kafka and a RabbitMQ reachable (KAFKA_BOOTSTRAP_SERVERS,
RMQ_URL); it sends COUNT messages on each queue and prints what arrived where.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from streamtools import HTTP, KAFKA, PRODUCERS, ConsumerFactory, ConsumerRunner, HandlerFactory

QUEUE_1 = os.environ.get("QUEUE_1", "queue_1")
QUEUE_2 = os.environ.get("QUEUE_2", "queue_2")
BRIDGE_PORT = int(os.environ.get("BRIDGE_PORT", "9000"))
COUNT = int(os.environ.get("COUNT", "20"))

# The seed's dict, with the settings a deployment adds (where the bridge listens).
messages_queues: dict[str, dict[str, object]] = {
    "queue_1": {
        "name": QUEUE_1,
        "consumer_loop": "KafkaHandler",
        "producer": "HTTPHandler",
        "producer_settings": {"host": "127.0.0.1", "port": BRIDGE_PORT},
    },
    "queue_2": {
        "name": QUEUE_2,
        "consumer_loop": "RMQIOHandler",
        "producer": "RMQIOHandler",
    },
}

# The bridge service: accepts queue_1's messages over HTTP and produces them to Kafka.
bridge = ConsumerFactory(HTTP, port=BRIDGE_PORT, host="127.0.0.1")
to_kafka = PRODUCERS[KAFKA](QUEUE_1)


@bridge.route(QUEUE_1)
async def accept(msg: Any) -> None:
    await to_kafka.send(msg)  # the HTTP answer waits for Kafka's acknowledgement


async def main() -> int:
    runner = ConsumerRunner(bridge.instances, bridge.handlers)
    runner.on_shutdown.append(to_kafka.close)
    serving = asyncio.create_task(runner.serve())
    factory = HandlerFactory(messages_queues)
    arrived: dict[str, set[int]] = {QUEUE_1: set(), QUEUE_2: set()}
    done = asyncio.Event()

    for key in ("queue_1", "queue_2"):
        pair = factory[key]

        @pair.consumer()
        async def handle(msg: Any, name: str = pair.queue.name) -> None:
            arrived[name].add(msg["n"])
            if all(len(got) == COUNT for got in arrived.values()):
                done.set()

    try:
        while not all(c.serving for c in bridge.instances.values()):
            if serving.done():
                await serving
            await asyncio.sleep(0.01)
        await factory.a_init()
        for pair in factory.values():
            await pair.consumer.start()
        for n in range(COUNT):
            await factory["queue_1"].producer.send({"n": n})  # HTTP -> bridge -> Kafka
            await factory["queue_2"].producer.send({"n": n})  # RabbitMQ
        async with asyncio.timeout(120):
            await done.wait()
    finally:
        await factory.close()
        runner.stop()
        await serving
    print(
        f"SEED queue_1: {len(arrived[QUEUE_1])} via HTTPHandler -> bridge -> KafkaHandler; "
        f"queue_2: {len(arrived[QUEUE_2])} via RMQIOHandler"
    )
    return 0 if all(got == set(range(COUNT)) for got in arrived.values()) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
