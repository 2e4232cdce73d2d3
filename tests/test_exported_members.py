"""Every public name is exported, sorted, and nothing private leaks (after httpx's test)."""

from __future__ import annotations

import inspect

import streamtools


def test_all_is_sorted_and_complete() -> None:
    exported = set(streamtools.__all__)
    # Submodules (errors, transports, codegen, cli, ...) are importable attributes, not exports.
    public = {
        name
        for name in dir(streamtools)
        if not name.startswith("_") and not inspect.ismodule(getattr(streamtools, name))
    }
    assert public == exported
    assert streamtools.__all__ == sorted(streamtools.__all__, key=lambda n: (not n.isupper(), n))


def test_errors_share_one_root() -> None:
    errors = [getattr(streamtools, n) for n in streamtools.__all__ if n.endswith("Error")]
    assert errors
    assert all(issubclass(e, streamtools.StreamtoolsError) for e in errors)


def test_consumers_is_consumer_loops() -> None:
    assert streamtools.CONSUMERS is streamtools.CONSUMER_LOOPS
    assert (streamtools.HTTP, streamtools.RMQ, streamtools.MEMORY) == (
        "HTTPHandler",
        "RMQIOHandler",
        "MemoryHandler",
    )
