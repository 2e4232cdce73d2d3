"""The `streamtools` command line: `streamtools <command> ...`.

Each subcommand is one `_cmd_<name>(args) -> int` function, registered in `build_parser()`
with `set_defaults(handler=...)`. Errors are one line on stderr (`error: ...`) and a
non-zero exit status: 1 when the command failed, 2 for a usage error; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from streamtools import codegen
from streamtools.errors import StreamtoolsError

__all__ = ["build_parser", "main"]

_Handler = Callable[[argparse.Namespace], int]


def _version() -> str:
    try:
        return metadata.version("streamtools")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand; add a subcommand here and a `_cmd_` below."""
    parser = argparse.ArgumentParser(
        prog="streamtools", description="Typed, async messaging between microservices."
    )
    parser.add_argument("--version", action="version", version=f"streamtools {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    gen = commands.add_parser(
        "codegen",
        help="generate msgspec Structs and queue contracts from JSON Schemas",
        description="Write OUT_DIR as a package of msgspec Structs and Queue[T] contracts, "
        "one module per JSON Schema in SCHEMAS_DIR.",
    )
    codegen.add_arguments(gen)
    gen.set_defaults(handler=_cmd_codegen)
    return parser


def _cmd_codegen(args: argparse.Namespace) -> int:
    return codegen.run(args.schemas_dir, args.out_dir, check_only=args.check)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: _Handler = args.handler
    try:
        return handler(args)
    except StreamtoolsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
