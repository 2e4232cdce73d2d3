"""Self-tests of the test infrastructure: the cuttable TCP proxy and the private RabbitMQ node."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aio_pika
import pytest

from tests.support import RabbitNode, TcpProxy, amqp_answers

BOUND = 10.0  # seconds; a generous bound for every wait on 127.0.0.1


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def _roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await reader.readexactly(len(payload))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_proxy_forwards_both_ways(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        assert proxy.port != echo_port
        payload = bytes(range(256)) * 1000  # bigger than one read, so the pumps loop
        async with asyncio.timeout(BOUND):
            assert await _roundtrip(proxy.port, payload) == payload
        assert proxy.accepted == 1


async def test_cut_all_resets_live_connections_and_new_ones_still_work(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        async with asyncio.timeout(BOUND):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"ping")
            await writer.drain()
            assert await reader.readexactly(4) == b"ping"
            assert proxy.active == 1

            assert proxy.cut_all() == 1
            # The client sees the connection die at once: a reset or EOF, never a hang.
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await reader.readexactly(1)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            assert proxy.active == 0
            assert proxy.cuts == 1

            assert await _roundtrip(proxy.port, b"after the cut") == b"after the cut"
            assert proxy.accepted == 2


async def test_pause_refuses_new_connections_until_resume(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        proxy.pause()
        async with asyncio.timeout(BOUND):
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await _roundtrip(proxy.port, b"x")
            proxy.resume()
            assert await _roundtrip(proxy.port, b"y") == b"y"
        assert (proxy.refused, proxy.accepted) == (1, 1)


async def test_upstream_down_resets_the_client() -> None:
    # A port nothing listens on: bind one, then close it.
    probe = await asyncio.start_server(_echo, "127.0.0.1", 0)
    dead_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with TcpProxy("127.0.0.1", dead_port) as proxy:
        async with asyncio.timeout(BOUND):
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await _roundtrip(proxy.port, b"x")
        assert proxy.active == 0


async def test_stop_closes_connections_and_listener(echo_port: int) -> None:
    proxy = TcpProxy("127.0.0.1", echo_port)
    await proxy.start()
    port = proxy.port
    async with asyncio.timeout(BOUND):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"a")
        assert await reader.readexactly(1) == b"a"
        await proxy.stop()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await reader.readexactly(1)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)


async def _publish_persistent(url: str, queue: str, bodies: list[bytes]) -> None:
    async with asyncio.timeout(30):
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(queue, durable=True)
            for body in bodies:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue,
                )


async def _get_one(url: str, queue: str) -> bytes:
    async with asyncio.timeout(30):
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, durable=True)
            message = await declared.get(fail=True)
            assert message is not None
            await message.ack()
            return message.body


@pytest.mark.slow
async def test_private_node_keeps_persistent_messages_across_restart_and_crash() -> None:
    node = RabbitNode()
    base = node.base
    try:
        await node.astart()
        assert amqp_answers(node.port)
        assert node.node_pids(), "the node's processes are found by its data directory"
        await _publish_persistent(node.url, "st-support-durable", [b"first", b"second"])

        await node.arestart()  # rabbitmqctl stop, then start on the same data directory
        assert await _get_one(node.url, "st-support-durable") == b"first"
        listed = node.ctl("list_queues", "name", "durable", "--quiet", "--no-table-headers")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.split() == ["st-support-durable", "true"]

        await node.arestart(crash=True)  # SIGKILL of the whole node, then start
        assert await _get_one(node.url, "st-support-durable") == b"second"
        assert node.starts == 3

        await node.astop()
        assert not amqp_answers(node.port)
        assert node.node_pids() == []
    finally:
        node.cleanup()
    assert not base.exists()
    assert node.node_pids() == []
