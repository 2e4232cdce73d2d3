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


def _tree_in_docstring() -> dict[str, str]:
    """Each error of the `streamtools.errors` docstring's tree -> its parent in the tree."""
    import re

    doc = streamtools.errors.__doc__ or ""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        found = re.match(r"^([\s│├└─]*)([A-Z]\w+Error)\b", line)
        if not found:
            continue
        depth = len(found.group(1))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[found.group(2)] = stack[-1][1] if stack else ""
        stack.append((depth, found.group(2)))
    return parents


def test_the_errors_docstring_tree_is_complete_and_true() -> None:
    """Every error the library defines is in `errors.py` and in its docstring's tree, under
    the parent the class really has; every exported error is one of them."""
    import streamtools.errors as errors_module

    defined = {
        name: member
        for name, member in vars(errors_module).items()
        if isinstance(member, type) and issubclass(member, Exception)
    }
    tree = _tree_in_docstring()
    assert set(tree) == set(defined) == set(errors_module.__all__)
    for name, parent in tree.items():
        if parent:
            assert defined[parent] in defined[name].__bases__, (name, parent)
    exported = {n for n in streamtools.__all__ if n.endswith("Error")}
    assert exported == set(defined)


def test_every_error_class_in_the_package_is_in_the_tree() -> None:
    """No module defines a public error of its own outside `errors.py` (a private subclass,
    like the schema's field check, must still be one of the tree's)."""
    import importlib
    import pkgutil

    tree = set(_tree_in_docstring())
    strays = []
    for info in pkgutil.walk_packages(streamtools.__path__, "streamtools."):
        if info.name.startswith(("streamtools.transports.", "streamtools.outbox")):
            continue  # import client libraries; their errors are private classes (checked below)
        module = importlib.import_module(info.name)
        for name, member in vars(module).items():
            if (
                isinstance(member, type)
                and issubclass(member, streamtools.StreamtoolsError)
                and member.__module__ == info.name
                and not name.startswith("_")
                and name not in tree
            ):
                strays.append(f"{info.name}.{name}")
    # SchemaFieldError: the check generated code raises inside msgspec's decode; users see
    # it as a ValidationError, its base
    assert strays == ["streamtools._schema.SchemaFieldError"]
    assert issubclass(streamtools._schema.SchemaFieldError, streamtools.ValidationError)


def test_validation_error_is_a_decode_error_as_in_msgspec() -> None:
    import msgspec

    assert issubclass(msgspec.ValidationError, msgspec.DecodeError)
    assert issubclass(streamtools.ValidationError, streamtools.DecodeError)
    assert not issubclass(streamtools.DecodeError, streamtools.ValidationError)
    assert issubclass(streamtools.EncodeError, streamtools.CodecError)


def test_public_classes_report_streamtools_as_their_module() -> None:
    for name in streamtools.__all__:
        member = getattr(streamtools, name)
        if isinstance(member, type):
            assert member.__module__ == "streamtools", name
            assert repr(member) == f"<class 'streamtools.{name}'>"
    assert streamtools.current_metadata.__module__ == "streamtools"


def test_transport_classes_report_the_package_users_import_them_from() -> None:
    import importlib
    from typing import Any

    from streamtools import CONSUMER_LOOPS, PRODUCERS

    registries: tuple[Any, ...] = (PRODUCERS, CONSUMER_LOOPS)
    for registry in registries:
        for name in registry:
            cls: type[Any] = registry[name]
            module = cls.__module__
            assert not module.rsplit(".", 1)[-1].startswith("_"), (cls, module)
            assert getattr(importlib.import_module(module), cls.__name__) is cls
