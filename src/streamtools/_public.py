"""Public names report the module users import them from, not the private one defining them."""

from __future__ import annotations

from collections.abc import Iterable


def report_as(module: str, members: Iterable[object]) -> None:
    """Set `__module__` of each class or function in `members` defined under streamtools to
    `module`: tracebacks and reprs then say `streamtools.ConsumerRunner`, not
    `streamtools._runner.ConsumerRunner`. Pickling still works: `module` exports the name."""
    for member in members:
        if isinstance(member, type) or callable(member):
            defined_in = getattr(member, "__module__", None)
            if isinstance(defined_in, str) and defined_in.startswith("streamtools."):
                member.__module__ = module
