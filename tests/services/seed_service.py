"""The seed's ConsumerFactory + ConsumerRunner example, with a real handler.

Only QUEUE_TYPE changes between HTTP and RabbitMQ. The handler records each message id in
HANDLED_FILE once it has finished, after HANDLER_DELAY seconds (so a test can stop the
service while handlers are in flight).
"""

from __future__ import annotations

import asyncio
import os

from examples.contracts import OrderCreated
from streamtools import ConsumerFactory, ConsumerRunner, Queue, current_metadata

QUEUE_TYPE = os.environ["QUEUE_TYPE"]
PORT = int(os.environ["PORT"])
IP = "127.0.0.1"
QUEUE = Queue(os.environ["QUEUE_NAME"], OrderCreated)
DELAY = float(os.environ.get("HANDLER_DELAY", "0"))
HANDLED = open(os.environ["HANDLED_FILE"], "a", buffering=1)  # noqa: SIM115 - lives with the process

consumers = ConsumerFactory(QUEUE_TYPE, port=PORT)


@consumers.route(QUEUE)
async def id_result_handler(msg: OrderCreated) -> None:
    await asyncio.sleep(DELAY)
    HANDLED.write(f"{current_metadata().id}\n")


if __name__ == "__main__":
    app = ConsumerRunner(
        consumers=consumers.instances,
        handlers=consumers.handlers,
        port=PORT,
        host=IP,
    )
    app.run()
