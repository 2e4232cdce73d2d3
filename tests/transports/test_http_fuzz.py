"""Fuzz the HTTP consumer: random bytes, JSON, headers and queries never crash it or yield 500.

Each test starts one server, then hypothesis drives requests through an event loop the test
owns (`asyncio.Runner`), since hypothesis calls its test body synchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

import aiohttp
import msgspec
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from streamtools import Limits, Queue
from streamtools.transports.http import HTTPConsumer
from streamtools.transports.http._negotiation import query_text as _query_text
from tests.conftest import unique_name

WAIT = 30.0
BAD_INPUT_STATUSES = {400, 413, 415, 422}
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)


class Line(msgspec.Struct, kw_only=True):
    sku: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}-\d{3}$")]
    qty: Annotated[int, msgspec.Meta(ge=1)]


class Order(msgspec.Struct, kw_only=True):
    order_id: UUID
    placed_at: Annotated[datetime, msgspec.Meta(tz=True)]
    lines: Annotated[list[Line], msgspec.Meta(min_length=1)]
    note: str | None = None


VALID = msgspec.json.encode(
    {
        "order_id": str(uuid4()),
        "placed_at": "2026-01-01T00:00:00Z",
        "lines": [{"sku": "ABC-123", "qty": 1}],
    }
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Objects shaped like an Order with wrong pieces, to reach the validation paths.
near_orders = st.fixed_dictionaries(
    {},
    optional={
        "order_id": st.uuids().map(str) | json_values,
        "placed_at": st.just("2026-01-01T00:00:00Z") | st.datetimes().map(str) | json_values,
        "lines": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "sku": st.just("ABC-123") | json_values,
                    "qty": st.integers() | json_values,
                },
            ),
            max_size=3,
        )
        | json_values,
        "note": json_values,
    },
)
valid_orders = st.fixed_dictionaries(
    {
        "order_id": st.uuids().map(str),
        "placed_at": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
        "lines": st.lists(
            st.fixed_dictionaries(
                {"sku": st.from_regex(r"\A[A-Z]{3}-\d{3}\Z"), "qty": st.integers(1, 10**6)}
            ),
            min_size=1,
            max_size=3,
        ),
    },
    optional={"note": st.none() | st.text(max_size=30)},
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)
content_types = (
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/msgpack",
            "application/x-msgpack",
            "text/plain",
            "application/cloudevents+json",
            "multipart/form-data; boundary=x",
        ]
    )
    | header_text
)
headers = st.dictionaries(
    st.sampled_from(
        [
            "ce-id",
            "ce-type",
            "ce-source",
            "ce-time",
            "ce-specversion",
            "Accept",
            "Authorization",
            "Content-Encoding",
            "X-Anything",
        ]
    ),
    header_text,
    max_size=5,
)


@contextlib.contextmanager
def served(
    max_body_size: int = 4096,
) -> Iterator[
    tuple[Callable[[Coroutine[Any, Any, Any]], Any], str, aiohttp.ClientSession, list[Order]]
]:
    """One consumer of Order (GET and POST) and a client, on an event loop this test owns."""
    handled: list[Order] = []
    consumer = HTTPConsumer(
        Queue(unique_name("st-fuzz"), Order),
        host="127.0.0.1",
        port=0,
        limits=Limits(max_message_size=max_body_size),
    )

    async def handle(msg: Order) -> Order:
        assert isinstance(msg, Order)
        handled.append(msg)
        return msg

    consumer()(handle)
    consumer(method="GET")(handle)

    async def start() -> aiohttp.ClientSession:
        await consumer.start()
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT))

    async def stop(session: aiohttp.ClientSession) -> None:
        await session.close()
        await consumer.close()

    with asyncio.Runner() as runner:
        session = runner.run(start())
        try:
            yield runner.run, consumer.url, session, handled
            # The server still serves a valid message after all the garbage.
            status, _ = runner.run(
                _request(session, "POST", consumer.url, VALID, {"Content-Type": "application/json"})
            )
            assert status == 200
        finally:
            runner.run(stop(session))


async def _request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    params: list[tuple[str, str]] | None = None,
) -> tuple[int, bytes]:
    async with (
        asyncio.timeout(WAIT),
        session.request(
            method,
            url,
            data=body,
            headers=headers,
            params=params,
            skip_auto_headers=["Content-Type"],
        ) as resp,
    ):
        return resp.status, await resp.read()


def check(status: int, body: bytes) -> None:
    assert status != 500, body
    assert status in BAD_INPUT_STATUSES | {200, 204}, (status, body)
    if status >= 400:
        error = msgspec.json.decode(body)
        assert {"error", "detail"} <= set(error), error


def test_random_bytes_and_headers_never_yield_500() -> None:
    with served(max_body_size=512) as (run, url, session, _):

        @FUZZ
        @given(
            body=st.binary(max_size=600) | st.binary(min_size=500, max_size=1500),
            content_type=content_types,
            extra=headers,
        )
        def one(body: bytes, content_type: str, extra: dict[str, str]) -> None:
            check(
                *run(_request(session, "POST", url, body, {**extra, "Content-Type": content_type}))
            )

        one()


def test_random_json_never_yields_500_and_valid_ones_are_handled() -> None:
    with served() as (run, url, session, handled):
        before = 0

        @FUZZ
        @given(doc=json_values | near_orders | valid_orders, packed=st.booleans(), extra=headers)
        def one(doc: object, packed: bool, extra: dict[str, str]) -> None:
            nonlocal before
            extra.pop("Content-Encoding", None)
            extra.pop("ce-id", None)  # fresh ids: every valid message must reach the handler
            try:
                body = msgspec.msgpack.encode(doc) if packed else msgspec.json.encode(doc)
            except OverflowError:  # msgpack has no integers past 64 bits: no such body exists
                reject()
            content_type = "application/msgpack" if packed else "application/json"
            status, reply = run(
                _request(session, "POST", url, body, {**extra, "Content-Type": content_type})
            )
            check(status, reply)
            valid = _is_valid(doc)
            assert (status == 200) == valid, (status, reply, doc)
            if valid:
                before += 1
                assert len(handled) == before

        one()


def test_random_queries_never_yield_500() -> None:
    with served() as (run, url, session, handled):
        keys = st.sampled_from(["order_id", "placed_at", "lines", "note"]) | st.text(max_size=10)
        values = st.text(max_size=40) | json_values.map(lambda v: msgspec.json.encode(v).decode())

        valid = valid_orders.map(lambda d: [(k, _query_text(v)) for k, v in d.items()])

        @FUZZ
        @given(params=st.lists(st.tuples(keys, values), max_size=6) | valid, extra=headers)
        def one(params: list[tuple[str, str]], extra: dict[str, str]) -> None:
            extra.pop("Content-Encoding", None)
            extra.pop("ce-id", None)
            count = len(handled)
            status, body = run(_request(session, "GET", url, None, extra, params))
            check(status, body)
            if status == 200:
                assert len(handled) == count + 1

        one()


def _is_valid(doc: object) -> bool:
    try:
        msgspec.convert(doc, Order)
    except msgspec.ValidationError:
        return False
    return True
