"""The topics a producer or consumer needs: created when missing, used as they are otherwise.

The topic is the queue name; its dead-letter topic is `<queue>.dlq`. New topics get
`partitions` (3 by default) and `replication_factor` (by default as many as the cluster has
brokers, up to 3); a topic that exists with another partition count is used as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import aiokafka.errors  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

from streamtools._foreign.aiokafka import broker_count, created_topic_errors
from streamtools.errors import ConfigurationError, StreamtoolsError
from streamtools.transports.kafka._errors import translate
from streamtools.transports.kafka._settings import Settings


async def ensure_topics(settings: Settings, names: Iterable[str], timeout: float) -> None:
    """Create the topics that are missing; existing ones are used as they are."""
    admin = AIOKafkaAdminClient(**settings.client(), request_timeout_ms=int(timeout * 1000))
    wanted = list(dict.fromkeys(names))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [name for name in wanted if name not in existing]
            if not missing:
                return
            factor = settings.replication_factor
            if factor is None:
                factor = min(3, broker_count(await admin.describe_cluster()))
            response = await admin.create_topics(
                [NewTopic(name, settings.partitions, factor) for name in missing]
            )
            for topic, code, message in created_topic_errors(response):
                if code not in (0, aiokafka.errors.TopicAlreadyExistsError.errno):
                    raise ConfigurationError(
                        f"{settings.where} refused to create topic {topic!r}: "
                        f"{aiokafka.errors.for_code(code).__name__} {message or ''}".rstrip()
                    )
    except StreamtoolsError:
        raise
    except (aiokafka.errors.KafkaError, OSError, TimeoutError) as exc:
        raise translate(exc, settings, f"creating topics {', '.join(wanted)}") from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
