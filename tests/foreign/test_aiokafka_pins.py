"""Pins of the aiokafka shapes `streamtools._foreign.aiokafka` reads (checked: 0.14.0).

Each check fails naming the library, its version and the hook, so an aiokafka upgrade that
changes one is found here, not as a wrong topic-creation error on a live broker.
"""

from __future__ import annotations

import inspect
from typing import Any

import aiokafka  # type: ignore[import-untyped]
import aiokafka.protocol.admin  # type: ignore[import-untyped]
import aiokafka.protocol.metadata  # type: ignore[import-untyped]
import pytest
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.protocol.types import Array, Schema  # type: ignore[import-untyped]

from streamtools._foreign.aiokafka import broker_count, created_topic_errors

VERSION = aiokafka.__version__


def _where(hook: str) -> str:
    return f"aiokafka {VERSION}: {hook} changed; see streamtools._foreign.aiokafka"


def _versions(module: Any, prefix: str) -> list[type[Any]]:
    found = [
        value
        for name, value in vars(module).items()
        if name.startswith(prefix) and name[len(prefix) :].isdigit()
    ]
    assert found, _where(f"{module.__name__}.{prefix}* (no response versions found)")
    return found


def test_create_topics_answers_topic_errors_as_topic_code_message_tuples() -> None:
    hook = "AIOKafkaAdminClient.create_topics -> CreateTopicsResponse_vN.topic_errors"
    parameters = inspect.signature(AIOKafkaAdminClient.create_topics).parameters
    assert "new_topics" in parameters, _where(hook)
    for response in _versions(aiokafka.protocol.admin, "CreateTopicsResponse_v"):
        schema: Schema = response.SCHEMA
        assert "topic_errors" in schema.names, _where(f"{hook} ({response.__name__})")
        errors = schema.fields[schema.names.index("topic_errors")]
        assert isinstance(errors, Array), _where(hook)
        assert isinstance(errors.array_of, Schema), _where(hook)
        names = tuple(errors.array_of.names)
        assert names in (
            ("topic", "error_code"),
            ("topic", "error_code", "error_message"),
        ), _where(f"{hook} ({response.__name__} has {names})")


def test_describe_cluster_lists_brokers() -> None:
    hook = "AIOKafkaAdminClient.describe_cluster -> MetadataResponse_vN 'brokers'"
    assert hasattr(AIOKafkaAdminClient, "describe_cluster"), _where(hook)
    for response in _versions(aiokafka.protocol.metadata, "MetadataResponse_v"):
        assert "brokers" in response.SCHEMA.names, _where(f"{hook} ({response.__name__})")


class _Answer:
    def __init__(self, *topic_errors: tuple[Any, ...]) -> None:
        self.topic_errors = list(topic_errors)


@pytest.mark.parametrize(
    ("row", "read"),
    [
        (("orders", 0), ("orders", 0, "")),
        (("orders", 36, "exists"), ("orders", 36, "exists")),
        (("orders", 37, None), ("orders", 37, None)),
    ],
)
def test_created_topic_errors_reads_every_version(
    row: tuple[Any, ...], read: tuple[Any, ...]
) -> None:
    assert created_topic_errors(_Answer(row)) == [read]


def test_broker_count_is_at_least_one() -> None:
    assert broker_count({"brokers": [(1, "a", 9092), (2, "b", 9092)]}) == 2
    assert broker_count({"brokers": []}) == 1
    assert broker_count({}) == 1
