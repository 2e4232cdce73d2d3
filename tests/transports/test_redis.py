"""Redis-only behaviour against a real server (`REDIS_URL`, else 127.0.0.1:6379) and private
ones (tests.support.redis_node): settings and redaction, consumer groups, dead letters with
their fields, a killed consumer's entries reclaimed, `max_length`, a server restart, ACL, TLS.

Every stream a test creates has a unique name and is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio

from streamtools import (
    CONSUMER_LOOPS,
    PRODUCERS,
    REDIS,
    Consumer,
    Limits,
    Queue,
    RetryPolicy,
    current_metadata,
)
from streamtools._binding import DEAD_LETTER_HEADERS
from streamtools.errors import ConfigurationError, ConnectError, PublishError
from streamtools.transports.redis import RedisConsumer, RedisProducer
from tests.conftest import unique_name
from tests.support.consumer_child import Tick, kill_midway
from tests.support.redis_node import RedisNode

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = 30.0


class Order(msgspec.Struct, kw_only=True):
    seq: int


@pytest.fixture
async def streams() -> AsyncIterator[Callable[[str], str]]:
    made: list[str] = []

    def make(label: str = "t") -> str:
        made.append(unique_name(f"st-redis-{label}"))
        return made[-1]

    yield make
    async with redis.asyncio.Redis.from_url(REDIS_URL) as client:
        keys = [k for name in made for k in (name, f"{name}.dlq")]
        if keys:
            await client.delete(*keys)


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110 - handlers append, no event to wait on
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


def collecting(
    name: str, seen: list[int], url: str = REDIS_URL, **settings: Any
) -> Consumer[Order]:
    consumer: Consumer[Order] = CONSUMER_LOOPS[REDIS](
        Queue(name, Order), url=url, claim_idle=2.0, **settings
    )

    @consumer()
    async def handle(msg: Order) -> None:
        seen.append(msg.seq)

    return consumer


# --- settings ----------------------------------------------------------------------------


def test_settings_from_keywords_url_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://envhost:6390/2")
    monkeypatch.setenv("REDIS_PASSWORD", "env-secret")
    p = RedisProducer("q", username="alice")
    assert p.server_address == ("envhost", 6390)
    assert p._settings.db == 2
    assert p._settings.username == "alice"
    assert p._settings.password == "env-secret"
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.delenv("REDIS_PASSWORD")
    c = RedisConsumer("q", url="rediss://bob:s%40cret@h:7000/1")
    assert c._settings.password == "s@cret"
    assert c._settings.ssl is not None
    assert c.group == "q"
    assert c.claim_idle == 30.0
    assert RedisProducer("q")._settings.where == "Redis at redis://localhost:6379/0"


def test_secrets_never_in_repr_or_errors() -> None:
    p = RedisProducer("q", url="redis://bob:hunter2@h:7000/0")
    c = RedisConsumer("q", password="hunter2", url="redis://h/0")
    for text in (repr(p), repr(c), repr(p._settings), p._settings.where, str(c._settings)):
        assert "hunter2" not in text
    with pytest.raises(ConfigurationError) as info:
        RedisProducer("q", url="http://bob:hunter2@h/0")
    assert "hunter2" not in str(info.value)
    assert "redis://" in str(info.value)
    with pytest.raises(ConfigurationError):
        RedisProducer("q", url="redis://h/notadb")
    with pytest.raises(ConfigurationError):
        RedisProducer("q", max_length=0)
    with pytest.raises(ConfigurationError):
        RedisConsumer("q", claim_idle=0)
    with pytest.raises(ConfigurationError):
        RedisConsumer("q", prefetch=3)  # type: ignore[call-arg]  # no deprecated keywords


async def test_unreachable_server_is_a_connect_error_saying_what_to_check() -> None:
    from tests.conftest import free_port

    producer: RedisProducer[Any] = RedisProducer(
        "q", url=f"redis://127.0.0.1:{free_port()}/0", connect_timeout=1
    )
    with pytest.raises(ConnectError, match="REDIS_URL"):
        await producer.a_init()
    await producer.close()


# --- groups, dead letters, reclaiming ------------------------------------------------------


async def test_competing_consumers_share_and_two_groups_each_get_all(
    streams: Callable[[str], str],
) -> None:
    name = streams("groups")
    a: list[int] = []
    b: list[int] = []
    other: list[int] = []
    consumers = [
        collecting(name, a),
        collecting(name, b),
        collecting(name, other, group="audit"),
    ]
    for consumer in consumers:
        await consumer.start()
    try:
        async with PRODUCERS[REDIS](Queue(name, Order), url=REDIS_URL) as producer:
            await producer.send_many([Order(seq=i) for i in range(200)])
        await until(lambda: len(set(a) | set(b)) == 200 and len(set(other)) == 200, "all")
    finally:
        await asyncio.gather(*(c.close() for c in consumers))
    assert sorted(a + b) == list(range(200))  # shared, nothing twice
    assert a, "both members of the group took some"
    assert b, "both members of the group took some"
    assert sorted(other) == list(range(200))


async def test_invalid_message_dead_lettered_with_error_fields(
    streams: Callable[[str], str],
) -> None:
    name = streams("dlq")
    seen: list[int] = []
    consumer = collecting(name, seen)
    await consumer.start()
    try:
        async with redis.asyncio.Redis.from_url(REDIS_URL) as client:
            await client.xadd(name, {"body": b'{"seq": "nope"}', "ce-id": "bad-1"})
            await client.xadd(name, {"body": b'{"seq": 7}'})
            await until(lambda: seen == [7], "the good one")

            async def dead() -> list[Any]:
                return list(await client.xrange(f"{name}.dlq") or [])

            entries: list[Any] = []
            async with asyncio.timeout(WAIT):
                while not entries:
                    entries = await dead()
                    await asyncio.sleep(0.05)
            pending = await client.xpending(name, name)
    finally:
        await consumer.close()
    ((_, fields),) = entries
    fields = {k.decode(): v.decode() for k, v in fields.items()}
    assert fields["ce-id"] == "bad-1"
    assert fields["body"] == '{"seq": "nope"}'
    assert fields["x-death-reason"] == "invalid"
    assert set(DEAD_LETTER_HEADERS) <= set(fields)
    assert fields["x-original-queue"] == name
    assert pending["pending"] == 0  # both acknowledged


async def test_killed_consumer_entries_reclaimed_nothing_lost(
    streams: Callable[[str], str], tmp_path: Path
) -> None:
    name = streams("kill")
    journal, log = tmp_path / "journal", tmp_path / "child.log"
    async with PRODUCERS[REDIS](Queue(name, Tick), url=REDIS_URL) as producer:
        sent = await producer.send_many([Tick(seq=i) for i in range(100)])
    started, finished = await kill_midway(
        [
            "-m",
            "tests.support.redis_child",
            REDIS_URL,
            name,
            str(journal),
            "--max-in-flight",
            "10",
            "--sleep",
            "0.3",
            "--claim-idle",
            "2",
        ],
        journal,
        log,
        done=10,
        inflight=5,
        timeout=60,
    )
    unfinished = set(started) - set(finished)
    handled: list[str] = []
    consumer: Consumer[Tick] = CONSUMER_LOOPS[REDIS](
        Queue(name, Tick), url=REDIS_URL, claim_idle=2.0, limits=Limits(max_in_flight=20)
    )

    @consumer()
    async def handle(msg: Tick) -> None:
        handled.append(current_metadata().id)

    await consumer.start()
    try:
        await until(lambda: set(sent) <= set(handled) | set(finished), "every entry", 60)
    finally:
        await consumer.close()
    lost = set(sent) - set(handled) - set(finished)
    duplicates = len(handled) + len(finished) - len(sent)
    print(
        f"\nredis sigkill mid-backlog: sent {len(sent)}, acknowledged {len(sent)}, handled "
        f"{len(set(handled) | set(finished))}, lost {len(lost)}, duplicates {duplicates}; "
        f"the killed consumer finished {len(finished)} and had {len(unfinished)} unfinished"
    )
    assert unfinished, "killed with nothing in flight: the test proved nothing"
    assert not lost
    assert unfinished <= set(handled), "the killed consumer's pending entries were reclaimed"


async def test_max_length_trims_the_oldest_entries(streams: Callable[[str], str]) -> None:
    name = streams("maxlen")
    async with PRODUCERS[REDIS](Queue(name, Order), url=REDIS_URL, max_length=10) as producer:
        for i in range(1000):
            await producer.send(Order(seq=i))
    async with redis.asyncio.Redis.from_url(REDIS_URL) as client:
        length = await client.xlen(name)
    # MAXLEN ~ trims whole nodes: about 10 kept, never all 1000 (the rest is lost).
    assert 10 <= length < 1000


# --- a private server: restart, ACL, TLS ------------------------------------------------------


async def test_server_restart_loses_nothing_added_and_consuming_resumes() -> None:
    node = RedisNode()
    await asyncio.to_thread(node.start)
    try:
        name = unique_name("st-redis-restart")
        seen: list[int] = []
        consumer = collecting(name, seen, url=node.url)
        await consumer.start()
        added: list[int] = []
        async with PRODUCERS[REDIS](Queue(name, Order), url=node.url, send_timeout=30) as p:
            for i in range(50):
                await p.send(Order(seq=i))
                added.append(i)
            await until(lambda: len(set(seen)) == 50, "the first 50")
            await asyncio.to_thread(node.kill)
            restart = asyncio.create_task(asyncio.to_thread(node.start))
            # Sends during the outage wait for the server (within send_timeout).
            for i in range(50, 100):
                await p.send(Order(seq=i))
                added.append(i)
            await restart
        await until(lambda: set(seen) >= set(added), "everything added", 60)
        await consumer.close()
        assert set(seen) == set(range(100))
    finally:
        await asyncio.to_thread(node.cleanup)


async def test_acl_user_accepted_and_wrong_password_refused_saying_what_to_check() -> None:
    node = RedisNode(
        extra=["--user", "app", "on", ">s3cret", "~*", "&*", "+@all", "--user", "default", "off"]
    )
    await asyncio.to_thread(node.start)
    try:
        good: RedisProducer[Any] = RedisProducer(
            "q-acl", url=node.url, username="app", password="s3cret"
        )
        async with good:
            await good.send({"a": 1})
        bad: RedisProducer[Any] = RedisProducer(
            "q-acl", url=node.url, username="app", password="wrong-pw"
        )
        with pytest.raises(ConnectError) as info:
            await bad.a_init()
        assert "username and password" in str(info.value)
        assert "wrong-pw" not in str(info.value)
        await bad.close()
        nobody: RedisProducer[Any] = RedisProducer("q-acl", url=node.url)
        with pytest.raises(ConnectError, match="refused the login"):
            await nobody.a_init()
        await nobody.close()
    finally:
        await asyncio.to_thread(node.cleanup)


async def test_acl_without_stream_permission_says_which_commands() -> None:
    node = RedisNode(
        extra=[
            "--user",
            "ro",
            "on",
            ">pw",
            "~*",
            "&*",
            "+@all",
            "-xadd",
            "--user",
            "default",
            "off",
        ]
    )
    await asyncio.to_thread(node.start)
    try:
        producer: RedisProducer[Any] = RedisProducer(
            "q", url=node.url, username="ro", password="pw"
        )
        await producer.a_init()
        with pytest.raises(PublishError, match="XADD"):
            await producer.send({"a": 1})
        await producer.close()
    finally:
        await asyncio.to_thread(node.cleanup)


async def test_tls_with_an_ssl_context(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    node = RedisNode(tls=tmp_path)
    await asyncio.to_thread(node.start)
    try:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        name = unique_name("st-redis-tls")
        seen: list[int] = []
        consumer = collecting(name, seen, url=node.url, ssl=context)
        await consumer.start()
        async with PRODUCERS[REDIS](Queue(name, Order), url=node.url, ssl=context) as p:
            await p.send(Order(seq=1))
        await until(lambda: seen == [1], "the message over TLS")
        await consumer.close()
        # Without our CA the server's certificate is refused.
        plain: RedisProducer[Any] = RedisProducer("q", url=node.url, connect_timeout=3)
        with pytest.raises(ConnectError):
            await plain.a_init()
        await plain.close()
    finally:
        await asyncio.to_thread(node.cleanup)


_ = RetryPolicy  # (imported for symmetry with the other transports' tests)
