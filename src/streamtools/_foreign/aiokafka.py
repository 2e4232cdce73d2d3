"""aiokafka's undocumented shapes that the Kafka transport reads (checked: aiokafka 0.14.0).

The Kafka transport uses aiokafka's public clients only, and overrides no hook of it (its
rebalance listener implements the documented `aiokafka.abc.ConsumerRebalanceListener`). What
is fenced here is the shape of two admin answers that aiokafka passes through from the Kafka
protocol without documenting it:

- `AIOKafkaAdminClient.create_topics` returns the raw `CreateTopicsResponse_vN` struct (its
  docstring says "appropriate version of CreateTopicResponse class" and no more): the
  per-topic outcome is its `topic_errors` array of positional `(topic, error_code)` tuples
  (v0) or `(topic, error_code, error_message)` tuples (v1+). No public call reports
  per-topic creation errors, so they are read here.
- `AIOKafkaAdminClient.describe_cluster` returns the `MetadataResponse_vN` as a dict
  (`to_object()`): the cluster's brokers are its `"brokers"` list, the one public way to
  count them.

`tests/foreign/test_aiokafka_pins.py` pins both schemas across every response version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def created_topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    """(topic, error code, error message or "") of each topic in a CreateTopicsResponse."""
    outcomes: list[tuple[str, int, str | None]] = []
    for error in response.topic_errors:
        outcomes.append((error[0], error[1], error[2] if len(error) > 2 else ""))
    return outcomes


def broker_count(cluster: Mapping[str, Any]) -> int:
    """How many brokers `describe_cluster()` lists (1 when it lists none)."""
    return len(cluster.get("brokers") or [None])
