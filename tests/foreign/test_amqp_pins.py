"""Pins on what `streamtools._foreign` takes of aio-pika's, aiormq's and pamqp's private API.

One test per hook we override, private attribute we read or write, and foreign error text we
match. Each fails naming the library, its installed version and the hook, so that an upgrade
that changes one is caught here, in one place, rather than as a consumer that stops
re-subscribing or a failover that stops moving on. Pins are taken on the installed code
(signatures, sources, a real instance); the one that needs a channel uses the real broker.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import re
from collections.abc import Callable
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.abc
import aiormq.channel
import aiormq.connection
import aiormq.exceptions
import pamqp.commands
import pamqp.frame
import pamqp.header
import pytest
from yarl import URL

from streamtools._foreign import aio_pika as fenced_aio_pika
from streamtools._foreign import aiormq as fenced_aiormq
from streamtools._foreign.pamqp import WiredProperties
from streamtools.transports.rabbitmq._connection import _FailoverConnection
from streamtools.transports.rabbitmq._errors import _closed_early, _reply_text

DISTRIBUTIONS = {"aio_pika": "aio-pika", "aiormq": "aiormq", "pamqp": "pamqp"}


def pin(library: str, hook: str, holds: bool, expected: str) -> None:
    """Fail, naming the library, its version and the hook, unless `holds`."""
    if not holds:
        version = importlib.metadata.version(DISTRIBUTIONS[library])
        pytest.fail(
            f"{DISTRIBUTIONS[library]} {version} changed {hook}: streamtools relies on "
            f"{expected} (see streamtools._foreign.{library})",
            pytrace=False,
        )


def parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def source(obj: Any) -> str:
    return inspect.getsource(obj)


# --- aio-pika --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("_on_connected", ["self"]), ("_on_connection_close", ["self", "closing"])],
)
def test_robust_connection_hooks_we_override_keep_their_signature(
    name: str, expected: list[str]
) -> None:
    hook = f"aio_pika.RobustConnection.{name}"
    method = getattr(aio_pika.RobustConnection, name, None)
    pin("aio_pika", hook, method is not None, f"a method {name}")
    assert method is not None
    pin(
        "aio_pika",
        hook,
        inspect.iscoroutinefunction(method) and parameters(method) == expected,
        f"an async method with parameters {expected}, got {inspect.signature(method)}",
    )
    # Ours override exactly those, and nothing else of aio-pika's private surface.
    ours = fenced_aio_pika.HookedRobustConnection
    pin("aio_pika", hook, parameters(getattr(ours, name)) == expected, "the same signature")


def test_connect_reads_url_and_hands_the_close_hook_to_the_underlay() -> None:
    connect = source(aio_pika.Connection.connect)
    pin(
        "aio_pika",
        "Connection.connect",
        "self.url" in connect and "self._on_connection_close" in connect,
        "connect() connecting to self.url with self._on_connection_close as close callback",
    )
    pin(
        "aio_pika",
        "Connection.connect",
        "self._on_connected()" in connect,
        "connect() awaiting self._on_connected() once the transport is up",
    )


def test_a_refused_attempt_goes_through_the_close_hook_too() -> None:
    underlay = source(aio_pika.abc.UnderlayConnection.connect)
    pin(
        "aio_pika",
        "abc.UnderlayConnection.connect",
        re.search(r"except Exception.*?await close_callback\(closing\)", underlay, re.S)
        is not None,
        "a failed attempt awaiting close_callback(closing) with the failure in the future",
    )


def test_robust_connection_reconnects_through_connect() -> None:
    robust = source(aio_pika.RobustConnection)
    pin(
        "aio_pika",
        "RobustConnection reconnect loop",
        "Connection.connect(self" in robust,
        "its reconnect loop calling Connection.connect (which reads self.url) per attempt",
    )


async def test_url_and_transport_are_instance_attributes_our_names_are_free() -> None:
    connection = aio_pika.RobustConnection(URL("amqp://guest:guest@127.0.0.1:1/"))
    pin(
        "aio_pika",
        "Connection.url",
        isinstance(vars(connection).get("url"), URL),
        "a plain instance attribute url (a yarl.URL) that move_to may rewrite",
    )
    pin(
        "aio_pika",
        "Connection.transport",
        "transport" in vars(connection) and connection.transport is None,
        "an instance attribute transport, None until connected",
    )
    pin(
        "aio_pika",
        "abc.UnderlayConnection.connection",
        "connection" in aio_pika.abc.UnderlayConnection.__annotations__,
        "the aiormq connection at transport.connection",
    )
    # What _FailoverConnection and HookedRobustConnection add must not shadow aio-pika's own.
    added = {
        name
        for cls in (_FailoverConnection, fenced_aio_pika.HookedRobustConnection)
        for name in vars(cls)
        if not name.startswith(("__", "_abc"))
        and name not in ("_on_connected", "_on_connection_close")
    } | {"addresses", "failures", "_position", "_up", "_attempts", "_news"}
    taken = sorted(
        name
        for name in added
        if hasattr(aio_pika.RobustConnection, name) or name in vars(connection)
    )
    pin("aio_pika", "RobustConnection attribute names", not taken, f"{taken} being free")


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (aio_pika.abc.AbstractConnection, "close_called"),
        (aio_pika.abc.AbstractConnection, "connected"),
        (aio_pika.abc.AbstractConnection, "transport"),
        (aio_pika.abc.AbstractChannel, "get_underlay_channel"),
        (aio_pika.abc.AbstractRobustChannel, "reopen_callbacks"),
    ],
)
def test_the_abc_members_we_use_exist(owner: type, name: str) -> None:
    pin(
        "aio_pika",
        f"abc.{owner.__name__}.{name}",
        hasattr(owner, name) or name in getattr(owner, "__annotations__", {}),
        f"{owner.__name__}.{name}",
    )


# --- aiormq ----------------------------------------------------------------------------------


def test_a_channel_keeps_consumers_and_cancel_callbacks() -> None:
    init = source(aiormq.Channel.__init__)
    pin(
        "aiormq",
        "Channel.consumers",
        re.search(r"self\.consumers\s*:\s*dict\[str,", init, re.I) is not None,
        "a dict self.consumers (consumer tag -> callback) set in Channel.__init__",
    )
    pin(
        "aiormq",
        "Channel.on_consumer_cancel_callbacks",
        "self.on_consumer_cancel_callbacks" in init
        and "on_consumer_cancel_callbacks" in aiormq.abc.AbstractChannel.__annotations__,
        "a set on_consumer_cancel_callbacks on every channel",
    )
    cancel = source(aiormq.Channel._on_cancel_frame)
    pin(
        "aiormq",
        "Channel._on_cancel_frame",
        "self.consumers.pop(frame.consumer_tag" in cancel
        and re.search(r"for cb in self\.on_consumer_cancel_callbacks:.*?\(frame\)", cancel, re.S)
        is not None,
        "a broker Basic.Cancel dropping the tag from consumers and calling each cancel "
        "callback with the frame",
    )


async def test_a_real_channel_has_them(rabbitmq_url: str) -> None:
    connection = await aiormq.connect(rabbitmq_url)
    try:
        channel = await connection.channel()
        await channel.queue_declare("", exclusive=True, auto_delete=True)
        pin("aiormq", "Channel.consumers", vars(channel).get("consumers") == {}, "an empty dict")
        assert not fenced_aiormq.is_consuming(channel, "nobody")
        pin(
            "aiormq",
            "Channel.on_consumer_cancel_callbacks",
            isinstance(getattr(channel, "on_consumer_cancel_callbacks", None), set),
            "a set on every channel",
        )
        cancelled: list[object] = []
        fenced_aiormq.on_consumer_cancel(channel, cancelled.append)
        pin(
            "aiormq",
            "Channel.on_consumer_cancel_callbacks",
            cancelled.append in channel.on_consumer_cancel_callbacks,
            "a set the callback is added to",
        )
        declared = await channel.queue_declare("", exclusive=True)
        assert declared.queue is not None

        async def ignore(message: aiormq.abc.DeliveredMessage) -> None:
            pass

        await channel.basic_consume(declared.queue, ignore, consumer_tag="pinned")
        pin("aiormq", "Channel.consumers", fenced_aiormq.is_consuming(channel, "pinned"), "the tag")
        await channel.queue_delete(declared.queue)  # the broker cancels the subscription
        async with asyncio.timeout(10):
            while not cancelled:  # noqa: ASYNC110 - polling what a callback appends
                await asyncio.sleep(0.01)
        pin(
            "aiormq",
            "Channel.on_consumer_cancel_callbacks",
            isinstance(cancelled[0], pamqp.commands.Basic.Cancel)
            and not fenced_aiormq.is_consuming(channel, "pinned"),
            "the callback getting the Basic.Cancel frame, the tag gone from consumers",
        )
    finally:
        await connection.close()


@pytest.mark.parametrize(
    "text", [fenced_aiormq.UNEXPECTEDLY_CLOSED, fenced_aiormq.CONNECTION_RESET]
)
def test_the_handshake_hang_up_texts_are_still_raised(text: str) -> None:
    reader = source(aiormq.connection)
    pin(
        "aiormq",
        f"the AMQPConnectionError text {text!r}",
        re.search(r"raise AMQPConnectionError\(\s*f?\"[^\"]*" + re.escape(text), reader, re.I)
        is not None,
        f"an AMQPConnectionError whose text contains {text!r} (matched in closed_during_handshake)",
    )
    assert _closed_early(aiormq.exceptions.AMQPConnectionError(f"Server {text}. Read 0 bytes"))


def test_a_refused_connection_open_is_an_invalid_frame_error_naming_the_frame() -> None:
    connect = source(aiormq.Connection.connect)
    pin(
        "aiormq",
        "Connection.connect's answer to a refused Connection.Open",
        re.search(
            r"raise InvalidFrameError\(\s*f\""
            + re.escape(fenced_aiormq.OPEN_REFUSED)
            + r" \{frame!r\}",
            connect,
        )
        is not None,
        f"InvalidFrameError(f'{fenced_aiormq.OPEN_REFUSED} {{frame!r}}') (the frame's repr "
        "names Connection.Close)",
    )
    refusal = aiormq.exceptions.InvalidFrameError(
        f"{fenced_aiormq.OPEN_REFUSED} {pamqp.commands.Connection.Close()!r}"
    )
    pin("pamqp", "Connection.Close's repr", "Connection.Close" in str(refusal), "its name")
    assert fenced_aiormq.refused_connection_open(refusal)


@pytest.mark.parametrize("code", [406, 405, 403, 999])
def test_the_reply_text_of_a_channel_error_is_found(code: int) -> None:
    frame = pamqp.commands.Channel.Close(reply_code=code, reply_text="PRECONDITION - pinned")
    exc = aiormq.channel.exception_by_code(frame)
    pin(
        "aiormq",
        "channel.exception_by_code",
        _reply_text(exc) == "PRECONDITION - pinned",
        "the reply text as the only argument, or the second after the code",
    )


# --- pamqp -----------------------------------------------------------------------------------


def test_the_content_header_writes_what_properties_marshal_returns() -> None:
    pin(
        "pamqp",
        "commands.Basic.Properties.marshal",
        parameters(pamqp.commands.Basic.Properties.marshal) == ["self"],
        f"marshal(self), got {inspect.signature(pamqp.commands.Basic.Properties.marshal)}",
    )
    pin(
        "pamqp",
        "header.ContentHeader.marshal",
        "self.properties.marshal()" in source(pamqp.header.ContentHeader.marshal),
        "ContentHeader.marshal appending self.properties.marshal()",
    )
    properties = WiredProperties(message_id="m")
    properties.wire = b"\x12\x34prepared"
    frame = pamqp.header.ContentHeader(body_size=3, properties=properties).marshal()
    pin("pamqp", "header.ContentHeader.marshal", frame.endswith(properties.wire), "the bytes")
    pin(
        "aiormq",
        "spec.Basic.Properties",
        aiormq.spec.Basic.Properties is pamqp.commands.Basic.Properties,
        "aiormq.spec being pamqp.commands",
    )


@pytest.mark.parametrize(
    ("function", "expected"),
    [(pamqp.frame.marshal, ["frame_value", "channel_id"]), (pamqp.frame.unmarshal, ["data_in"])],
)
def test_the_frame_codec_of_the_refusal_diagnosis(
    function: Callable[..., Any], expected: list[str]
) -> None:
    pin(
        "pamqp",
        f"frame.{function.__name__}",
        parameters(function) == expected,
        f"{function.__name__}({', '.join(expected)}), got {inspect.signature(function)}",
    )
