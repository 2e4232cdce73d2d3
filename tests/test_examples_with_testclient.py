"""The example services' handlers under `streamtools.testing.TestClient`.

QUEUE_TYPE names a real broker transport (RabbitMQ, HTTP, Kafka), yet nothing leaves the
process: the client substitutes in-process classes for every registry name. The test would
fail (a connection refused, or a timeout) if a broker or port were reached.
"""

from __future__ import annotations

import socket

import pytest

from examples.contracts import BILLING_INVOICED, ORDERS_CREATED, InvoiceIssued
from examples.orders import make_order
from streamtools import HTTP, KAFKA, RMQ, RetryPolicy
from streamtools.testing import TestClient


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any TCP connection or listening socket fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the network was reached: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket.socket, "bind", refuse)


@pytest.mark.parametrize("queue_type", [RMQ, HTTP, KAFKA])
async def test_billing_invoices_each_order_without_a_broker(
    queue_type: str, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.setenv("QUEUE_TYPE", queue_type)
    async with TestClient() as client:
        billing = client.import_service("examples.billing")
        assert queue_type == billing.QUEUE_TYPE
        await client.start(billing.consumers)
        orders = [make_order(seq) for seq in range(3)]
        for order in orders:
            await client.send(ORDERS_CREATED, order)

        invoices: list[InvoiceIssued] = client.published(BILLING_INVOICED)
        assert [invoice.order_id for invoice in invoices] == [o.order_id for o in orders]
        for invoice, order in zip(invoices, orders, strict=True):
            expected = round(sum(i.quantity * i.unit_price for i in order.items), 2)
            assert invoice.total == expected
            assert invoice.currency == order.currency
        assert client.dead_letters(ORDERS_CREATED) == []


async def test_billing_through_its_runner_rebuilt_in_process(
    monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    """A runner built the way billing's main() builds it, its consumers rebuilt."""
    monkeypatch.setenv("QUEUE_TYPE", RMQ)
    async with TestClient() as client:
        billing = client.import_service("examples.billing")
        from streamtools import ConsumerRunner

        runner = ConsumerRunner(
            consumers=billing.consumers.instances, handlers=billing.consumers.handlers
        )
        runner.on_shutdown.append(billing.invoices.close)
        await client.start(runner)
        await client.send(ORDERS_CREATED, make_order(7))
        assert len(client.published(BILLING_INVOICED)) == 1
    assert billing.invoices.closed  # the runner's on_shutdown ran when the client closed


async def test_an_order_that_breaks_its_schema_is_dead_lettered_not_invoiced(
    monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.setenv("QUEUE_TYPE", RMQ)
    async with TestClient() as client:
        billing = client.import_service("examples.billing")
        await client.start(billing.consumers)
        broken = make_order(1)
        broken.items[0].quantity = 0  # the schema says >= 1
        message_id = await client.send(ORDERS_CREATED, broken, validate=False)

        assert client.published(BILLING_INVOICED) == []
        [dead] = client.dead_letters(ORDERS_CREATED)
        assert dead.meta.id == message_id
        assert dead.reason == "invalid"
        assert "quantity" in dead.error
        assert client.attempts(message_id) == 0  # the handler never saw it


async def test_a_failing_invoice_send_is_retried_then_dead_lettered(
    monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    """The ledger refusing invoices: billing's handler raises, is retried, dead-lettered."""
    monkeypatch.setenv("QUEUE_TYPE", RMQ)
    async with TestClient() as client:
        billing = client.import_service("examples.billing")

        async def refuse(invoice: InvoiceIssued) -> str:
            raise ConnectionError("ledger down")

        monkeypatch.setattr(billing.invoices, "send", refuse)
        consumers = billing.consumers.using()
        consumers.settings["retry"] = RetryPolicy(attempts=2)
        await client.start(consumers)
        message_id = await client.send(ORDERS_CREATED, make_order(2))

        assert client.attempts(message_id) == 3
        [dead] = client.dead_letters(ORDERS_CREATED)
        assert (dead.reason, dead.attempts, dead.error_type) == (
            "max-retries",
            3,
            "ConnectionError",
        )
        assert dead.error == "ledger down"


async def test_the_module_imported_before_is_back_after_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import examples.billing as before

    monkeypatch.setenv("QUEUE_TYPE", RMQ)
    async with TestClient() as client:
        fresh = client.import_service("examples.billing")
        assert fresh is not before
        import examples

        assert examples.billing is fresh
    import sys

    assert sys.modules["examples.billing"] is before
    assert examples.billing is before
