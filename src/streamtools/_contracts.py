"""Resolve a constructor's queue argument (a Queue, a name + type, a bare name) to a Queue."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from streamtools._types import Queue, T, check_queue_name
from streamtools.errors import ConfigurationError

_contracts: dict[str, Queue[Any]] = {}
_published: dict[type[Any], str] = {}
_autoloaded = False


def register_contracts(queues: Mapping[str, Queue[Any]], *, schemas: str | None = None) -> None:
    """Make generated contracts resolvable by bare queue name.

    Generated packages call this on import, with `schemas`: their source schemas as published
    (a JSON object of named schemas, each message's under its class name, every `$ref` pointing
    into it), which `streamtools asyncapi` uses as they are. Registering the same contract twice
    is harmless; a different message type for an already registered queue name is a
    ConfigurationError.
    """
    for name, contract in queues.items():
        known = _contracts.get(name)
        if known is not None and known.message_type is not contract.message_type:
            raise ConfigurationError(
                f"queue {name!r} is registered with {known.message_type.__name__} and "
                f"{contract.message_type.__name__}; a queue carries one message type"
            )
    for name, contract in queues.items():  # all or nothing
        _contracts[name] = contract
        if schemas is not None:
            _published[contract.message_type] = schemas


def published_schemas(message_type: type[Any]) -> str | None:
    """The published schemas (JSON) of the generated package that defines `message_type`."""
    return _published.get(message_type)


def registered_contracts() -> Mapping[str, Queue[Any]]:
    """Every contract registered so far, by queue name."""
    _autoload()
    return dict(_contracts)


def _autoload() -> None:
    # Seed-style code passes bare names without importing the contracts package; import the
    # package named by STREAMTOOLS_CONTRACTS (default `generated`) once, if there is one.
    global _autoloaded
    if _autoloaded:
        return
    _autoloaded = True
    module = os.environ.get("STREAMTOOLS_CONTRACTS", "generated")
    if module:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def resolve_queue(queue: Queue[T] | str, message_type: type[T] | None) -> Queue[T]:
    """The contract for a constructor's `queue` and `message_type` arguments."""
    if isinstance(queue, Queue):
        if message_type is not None and message_type is not queue.message_type:
            raise ConfigurationError(
                f"{queue!r} carries {queue.message_type.__name__}, not {message_type.__name__}; "
                "drop message_type= or pass the queue name instead"
            )
        return queue
    if not isinstance(queue, str):
        raise ConfigurationError(f"queue must be a Queue contract or a name, got {queue!r}")
    check_queue_name(queue)
    if message_type is not None:
        return Queue(queue, message_type)
    _autoload()
    found = _contracts.get(queue)
    if found is not None:
        return found
    # Untyped: raw JSON in, decoded builtins out.
    return Queue(queue, object)  # type: ignore[arg-type]  # T defaults to Any here
