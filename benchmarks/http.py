"""HTTP cases: streamtools HTTPProducer/HTTPConsumer vs a raw aiohttp client and server.

Both sides run on the same loopback in this process. The contender is what a careful
aiohttp user writes: one shared ClientSession (keep-alive pool), POSTing the msgspec-encoded
Struct to an aiohttp handler that decodes it into the Struct with a cached msgspec Decoder.
`send` waits for the handler's answer (204); `request` gets a reply Struct back (200).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from benchmarks.common import orders, unique
from benchmarks.harness import HTTP_REQUEST, HTTP_SEND, Case, Contender, Workload
from examples.contracts import OrderCreated


class Receipt(msgspec.Struct, frozen=True):
    """The reply of the request/reply cases."""

    order_id: uuid.UUID
    accepted: bool


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(OrderCreated)
_receipt_decoder = msgspec.json.Decoder(Receipt)
_JSON_HEADERS = {"Content-Type": "application/json"}


async def _workers(count: int, concurrency: int, call: Callable[[int], Awaitable[Any]]) -> None:
    """`count` calls by `concurrency` workers, each awaiting its calls one at a time."""

    async def worker(first: int) -> None:
        for i in range(first, count, concurrency):
            await call(i)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))


class _Pair:
    """A streamtools HTTP consumer+producer and a raw aiohttp server+client, both started."""

    def __init__(self, reply: bool) -> None:
        self.reply = reply
        self.queue = unique("http")
        self.state: dict[str, Any] = {}

    async def setup(self) -> None:
        from streamtools.transports.http import HTTPConsumer, HTTPProducer

        consumer: HTTPConsumer[OrderCreated] = HTTPConsumer(
            self.queue, message_type=OrderCreated, host="127.0.0.1", port=0
        )
        reply = self.reply

        @consumer()
        async def handle(msg: OrderCreated) -> Receipt | None:
            return Receipt(msg.order_id, True) if reply else None

        await consumer.start()
        producer: HTTPProducer[OrderCreated] = HTTPProducer(
            self.queue, message_type=OrderCreated, host="127.0.0.1", port=consumer.port
        )
        await producer.a_init()
        self.state.update(consumer=consumer, producer=producer)

        async def raw_handler(request: web.Request) -> web.Response:
            order = _decoder.decode(await request.read())
            if reply:
                body = _encoder.encode(Receipt(order.order_id, True))
                return web.Response(body=body, content_type="application/json")
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post(f"/{self.queue}", raw_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        self.state.update(
            runner=runner, session=session, url=f"http://127.0.0.1:{port}/{self.queue}"
        )

    async def teardown(self) -> None:
        for key in ("producer", "consumer", "session"):
            if key in self.state:
                await self.state[key].close()
        if "runner" in self.state:
            await self.state["runner"].cleanup()


def _case(kind: str, concurrency: int, count: int, msgs: list[OrderCreated]) -> Case:
    pair = _Pair(reply=kind == "request")

    def ours() -> Workload:
        async def run() -> tuple[int, float]:
            producer = pair.state["producer"]
            if pair.reply:

                async def call(i: int) -> None:
                    receipt = await producer.request(msgs[i], reply_type=Receipt)
                    assert receipt.accepted
            else:

                async def call(i: int) -> None:
                    await producer.send(msgs[i])

            started = time.perf_counter()
            await _workers(count, concurrency, call)
            return count, time.perf_counter() - started

        return run

    def theirs() -> Workload:
        async def run() -> tuple[int, float]:
            session: aiohttp.ClientSession = pair.state["session"]
            url: str = pair.state["url"]

            async def call(i: int) -> None:
                data = _encoder.encode(msgs[i])
                async with session.post(url, data=data, headers=_JSON_HEADERS) as response:
                    response.raise_for_status()
                    body = await response.read()
                    if pair.reply:
                        assert _receipt_decoder.decode(body).accepted

            started = time.perf_counter()
            await _workers(count, concurrency, call)
            return count, time.perf_counter() - started

        return run

    # Issue #14's targets are at concurrency 16 and 64; concurrency 1 is reported.
    target = (HTTP_REQUEST if pair.reply else HTTP_SEND).get(concurrency)
    return Case(
        f"http {kind}, concurrency {concurrency}",
        Contender(f"streamtools {kind}", ours()),
        [Contender("aiohttp client -> aiohttp handler", theirs(), target=target)],
        unit="req/s",
        setup=pair.setup,
        teardown=pair.teardown,
    )


def cases(count: int) -> list[Case]:
    msgs = orders(count)
    return [
        _case(kind, concurrency, count, msgs)
        for kind in ("send", "request")
        for concurrency in (1, 16, 64)
    ]
