"""The one CloudEvents header binding: written and read back the same for every prefix."""

from __future__ import annotations

from datetime import datetime

import pytest

from streamtools._binding import ATTEMPT_HEADER, CE, HeaderBinding, attempt_of, carried
from streamtools._codec import MSGPACK, Metadata, new_metadata
from streamtools.transports.kafka._wire import record_metadata


@pytest.mark.parametrize(
    "binding",
    [CE, HeaderBinding("ce_", content_type_header="content-type")],
    ids=["ce- (HTTP, AMQP)", "ce_ (Kafka)"],
)
def test_metadata_round_trips_through_headers(binding: HeaderBinding) -> None:
    sent = new_metadata("OrderCreated", "//orders", MSGPACK)
    sent = Metadata(
        id=sent.id,
        type=sent.type,
        source=sent.source,
        time=sent.time,
        content_type=MSGPACK,
        attempt=3,
        headers={"x-death-reason": "invalid"},
    )
    headers = binding.write(sent)
    assert headers[binding.id] == sent.id
    assert headers[ATTEMPT_HEADER] == "3"
    ct = None if binding.content_type_header else MSGPACK
    assert binding.read(headers, default_type="Other", ct=ct) == sent


def test_the_first_attempt_sends_no_attempt_header() -> None:
    assert ATTEMPT_HEADER not in CE.write(new_metadata("T", "//s"))


def test_constant_headers_are_the_shared_part() -> None:
    meta = new_metadata("T", "//s")
    constant = CE.constant("T", "//s")
    assert constant.items() <= CE.write(meta).items()
    assert set(CE.write(meta)) - set(constant) == {"ce-id", "ce-time"}


def test_a_foreign_message_gets_usable_metadata() -> None:
    meta = CE.read({}, default_type="OrderCreated", source="//peer")
    assert len(meta.id) == 32
    assert meta.type == "OrderCreated"
    assert meta.source == "//peer"
    assert meta.specversion == "1.0"
    assert meta.attempt == 1
    assert datetime.fromisoformat(meta.time).tzinfo is not None
    assert meta.headers == {}


def test_odd_header_values_are_read_as_text_or_dropped() -> None:
    meta = CE.read(
        {"ce-id": 7, "ce-type": b"Bytes", "x-n": 1.5, "x-table": {"a": 1}, "x-s": "kept"},
        default_type="T",
    )
    assert (meta.id, meta.type) == ("7", "Bytes")
    assert meta.headers == {"x-n": "1.5", "x-s": "kept"}


def test_protocol_fallbacks_fill_missing_attributes() -> None:
    meta = CE.read({}, default_type="T", id="m-1", type="Given", time="2026-01-01T00:00:00Z")
    assert (meta.id, meta.type, meta.time) == ("m-1", "Given", "2026-01-01T00:00:00Z")
    # A header wins over the protocol's property.
    assert CE.read({"ce-id": "h-1"}, default_type="T", id="m-1").id == "h-1"


@pytest.mark.parametrize(
    ("value", "attempt"),
    [(None, 1), ("2", 2), (5, 5), (b"3", 3), ("0", 1), ("-4", 1), ("many", 1), (2.5, 1)],
)
def test_attempt_header_is_a_positive_integer_or_one(value: object, attempt: int) -> None:
    assert attempt_of(value) == attempt


def test_copies_drop_the_brokers_bookkeeping() -> None:
    headers = {
        "x-death": "[...]",
        "x-delivery-count": "2",
        "x-first-death-queue": "q",
        "x-last-death-reason": "expired",
        "x-death-reason": "invalid",
        "x-custom": "kept",
    }
    assert carried(headers) == {"x-death-reason": "invalid", "x-custom": "kept"}


def test_a_send_option_may_not_set_owned_headers() -> None:
    assert {"ce-id", "ce-type", ATTEMPT_HEADER} <= CE.owned
    kafka = HeaderBinding("ce_", content_type_header="content-type")
    assert {"ce_id", "content-type"} <= kafka.owned


@pytest.mark.parametrize(
    "pairs",
    [
        # ours: every attribute, an attempt, the trace context
        [
            ("ce_id", b"abc"),
            ("ce_type", b"Order"),
            ("ce_source", b"//svc"),
            ("ce_specversion", b"1.0"),
            ("ce_time", b"2024-05-01T12:00:00Z"),
            ("content-type", b"application/msgpack; charset=x"),
            (ATTEMPT_HEADER, b"3"),
            ("traceparent", b"00-1-2-01"),
        ],
        # a foreign record: no attributes, odd values, a repeated key (the last one counts)
        [("x-a", None), ("x-b", b"\xff"), ("x-b", b"second"), ("content-type", b"")],
        [],
    ],
)
def test_read_pairs_reads_what_read_reads(pairs: list[tuple[str, object]]) -> None:
    """Kafka's one-pass reader gives the Metadata the Mapping reader gives for the same
    headers (with the same fallbacks)."""
    binding = HeaderBinding("ce_", content_type_header="content-type")
    by_map = binding.read(
        dict(pairs), default_type="Fallback", id="t-0-7", time="2020-01-01T00:00:00.000000Z"
    )

    class Record:  # what the Kafka consumer reads of an aiokafka ConsumerRecord
        headers = tuple(pairs)
        offset = 7
        timestamp = 1_577_836_800_000  # 2020-01-01T00:00:00Z

    by_pairs = record_metadata("t", 0, Record(), "Fallback")
    assert by_pairs == by_map
