"""The streams a producer or consumer needs: one per queue, created when missing.

The queue name is the subject; its stream holds that one subject. `<queue>.dlq` is a subject
of its own and has its own stream. Stream (and durable consumer) names may not hold `.`,
`*`, `>`, spaces or path separators, so the name is mapped deterministically:
every character outside `A-Z a-z 0-9 _ -` becomes `_`, and when any was replaced the first
8 hex digits of the queue name's SHA-1 are appended so that `a.b` and `a_b` stay apart:
`orders` -> `orders`, `orders.dlq` -> `orders_dlq-<hash8>`.

New streams: file storage, work-queue retention (a message is removed once acknowledged,
like a queue), a two-minute duplicate window (`Nats-Msg-Id`), one replica (`replicas=`).
A stream that exists with another subject list, retention or storage is a
ConfigurationError saying which setting differs; other settings (limits, replicas) are used
as they are.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from streamtools.errors import ConfigurationError, StreamtoolsError
from streamtools.transports.nats._errors import translate
from streamtools.transports.nats._settings import Settings

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")
_SUBJECT_TOKEN: Final = re.compile(r"[^\s*>.]+")
DUPLICATE_WINDOW: Final = 120.0
STREAM_NOT_FOUND: Final = 10059


def stream_name(queue: str) -> str:
    """The stream of `queue` (also its durable consumer's name): see the module docstring."""
    safe = _UNSAFE.sub("_", queue)
    if safe != queue:
        safe = f"{safe}-{hashlib.sha1(queue.encode()).hexdigest()[:8]}"
    return safe


def check_subject(owner: str, queue: str) -> str:
    """The queue name as a NATS subject: dot-separated tokens, no wildcard, no space."""
    if not all(_SUBJECT_TOKEN.fullmatch(token) for token in queue.split(".")):
        raise ConfigurationError(
            f"{owner}: queue {queue!r} is not a NATS subject (dot-separated tokens without "
            "spaces, '*' or '>')"
        )
    return queue


def wanted(queue: str, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=stream_name(queue),
        subjects=[queue],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW,
        num_replicas=replicas,
    )


async def ensure_streams(
    js: JetStreamContext, settings: Settings, queues: tuple[str, ...], replicas: int
) -> None:
    """Create the streams that are missing; check the ones that exist."""
    for queue in dict.fromkeys(queues):
        config = wanted(queue, replicas)
        name = config.name
        assert name is not None
        try:
            try:
                info = await js.stream_info(name)
            except nats.js.errors.NotFoundError:
                try:
                    await js.add_stream(config)
                    continue
                except nats.js.errors.BadRequestError:
                    # Created meanwhile by a competing consumer, or refused: look again.
                    info = await js.stream_info(name)
            found = info.config
            differences = [
                f"{field} is {have!r}, not {want!r}"
                for field, have, want in (
                    ("subjects", found.subjects, config.subjects),
                    ("retention", _value(found.retention), _value(config.retention)),
                    ("storage", _value(found.storage), _value(config.storage)),
                )
                if have != want
            ]
            if differences:
                raise ConfigurationError(
                    f"{settings.where}: stream {name!r} for queue {queue!r} exists with other "
                    f"settings ({'; '.join(differences)}); delete it (nats stream rm {name}) "
                    "or use another queue name"
                )
        except StreamtoolsError:
            raise
        except Exception as exc:
            raise translate(exc, settings, f"declaring stream {name!r}") from exc


def _value(setting: object) -> object:
    return getattr(setting, "value", setting)
