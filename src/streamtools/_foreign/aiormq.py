"""aiormq's private API and error texts that the RabbitMQ transport relies on.

Checked against aiormq 7.2.4 (installed, under aio-pika 10.2.1). In aiormq 6.8.0 (what
aio-pika 9.4.0, the floor pyproject.toml claims, requires) neither
`Channel.on_consumer_cancel_callbacks` exists nor does a refused Connection.Open raise
`InvalidFrameError("Expected Connection.OpenOk, got <Connection.Close ...>")` (it raises
`AMQPInternalError`): the consumer needs aiormq 7. `tests/foreign/test_amqp_pins.py` pins
each item.
"""

from __future__ import annotations

from collections.abc import Callable

import aiormq
import aiormq.abc
import aiormq.exceptions
import pamqp.commands

__all__ = [
    "closed_during_handshake",
    "is_consuming",
    "on_consumer_cancel",
    "refused_connection_open",
    "reply_text",
]

# Parts (lower case) of the AMQPConnectionError texts aiormq raises (Connection.__reader)
# when the peer hangs up mid-frame or resets the connection: no exception type of their own
# tells them apart.
UNEXPECTEDLY_CLOSED = "unexpectedly closed"  # "Server connection unexpectedly closed. ..."
CONNECTION_RESET = "server connection reset"  # "Server connection reset: ..."
# What `Connection.connect` puts in the InvalidFrameError for any answer to Connection.Open
# other than OpenOk, the broker's refusal included (the reply text is not kept).
OPEN_REFUSED = "Expected Connection.OpenOk, got"


def is_consuming(channel: aiormq.abc.AbstractChannel, consumer_tag: str) -> bool:
    """Whether `channel` has a subscription with `consumer_tag` now.

    `Channel.consumers` (tag -> callback) is not in aiormq.abc and not documented, but it is
    the only record of which subscriptions a channel holds: aiormq removes an entry when
    the broker cancels the subscription (Basic.Cancel) or basic_cancel completes.
    """
    assert isinstance(channel, aiormq.Channel)
    return consumer_tag in channel.consumers


def on_consumer_cancel(
    channel: aiormq.abc.AbstractChannel,
    callback: Callable[[pamqp.commands.Basic.Cancel], object],
) -> None:
    """Call `callback` with the frame when the broker cancels a subscription on `channel`.

    `on_consumer_cancel_callbacks` is declared in aiormq.abc but undocumented, and aio-pika
    has no public equivalent (its robust queue does not tell a broker cancel apart).
    """
    channel.on_consumer_cancel_callbacks.add(callback)


def closed_during_handshake(exc: BaseException) -> bool:
    """The peer hung up in the middle of a frame (aiormq reports it in words only)."""
    reason = " ".join(str(a) for a in exc.args if not isinstance(a, int)).lower()
    return isinstance(exc, aiormq.exceptions.AMQPConnectionError) and (
        UNEXPECTEDLY_CLOSED in reason or CONNECTION_RESET in reason
    )


def refused_connection_open(exc: BaseException) -> bool:
    """The broker answered Connection.Open with Connection.Close (the reply text is lost)."""
    return isinstance(exc, aiormq.exceptions.InvalidFrameError) and "Connection.Close" in str(exc)


def reply_text(exc: BaseException) -> str | None:
    """The broker's reply text of a channel-closing error; None when it is not at hand.

    aiormq's `exception_by_code` builds `ChannelClosed(reply_code, reply_text)` for codes it
    has no class for and `<class>(reply_text)` otherwise: the text's position in `args` is
    the only way to it (the frame is not kept).
    """
    return str(exc.args[1]) if len(exc.args) > 1 else None
