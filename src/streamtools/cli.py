"""The `streamtools` command line: `streamtools <command> ...`.

Each subcommand is one `_cmd_<name>(args) -> int` function, registered in `build_parser()`
with `set_defaults(handler=...)`. Errors are one line on stderr (`error: ...`) and a
non-zero exit status: 1 when the command failed, 2 for a usage error; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import msgspec

from streamtools import codegen
from streamtools._codec import codec_for
from streamtools._contracts import registered_contracts
from streamtools._helpers import ConsumerFactory, ConsumerRunner
from streamtools._registry import PRODUCERS
from streamtools.errors import ConfigurationError, StreamtoolsError

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

    run = commands.add_parser(
        "run",
        help="run a service's consumers until SIGINT/SIGTERM",
        description="Import MODULE and serve ATTR, a ConsumerFactory or a ConsumerRunner, "
        "until SIGINT or SIGTERM; then stop gracefully.",
    )
    run.add_argument("target", metavar="MODULE:ATTR", help="e.g. examples.billing:consumers")
    run.add_argument("--host", help="host HTTP consumers listen on")
    run.add_argument("--port", type=int, help="port HTTP consumers listen on")
    run.add_argument("--transport", help="serve the factory's routes on this transport instead")
    run.set_defaults(handler=_cmd_run)

    send = commands.add_parser(
        "send",
        help="validate a JSON message against its queue's contract and send it",
        description="Send JSON to QUEUE (validated against the queue's generated contract, "
        "if it has one). Prints the message id, or with --request the reply as JSON.",
    )
    send.add_argument("queue", metavar="QUEUE", help="queue name, e.g. orders.created")
    send.add_argument("message", metavar="JSON", help="the message as JSON ('-' reads stdin)")
    send.add_argument(
        "--transport",
        default=os.environ.get("QUEUE_TYPE", "HTTPHandler"),
        help="registry name (default: $QUEUE_TYPE, else HTTPHandler)",
    )
    send.add_argument("--host", help="HTTP: host of the consumer")
    send.add_argument("--port", type=int, help="HTTP: port of the consumer")
    send.add_argument("--url", help="RabbitMQ: amqp:// URL (default: the RMQ_* variables)")
    send.add_argument("--request", action="store_true", help="wait for the handler's reply")
    send.add_argument("--timeout", type=float, default=30.0, help="reply timeout in seconds")
    send.set_defaults(handler=_cmd_send)

    queues = commands.add_parser(
        "queues",
        help="list the queue contracts and their message types",
        description="List the queues of the contracts package ($STREAMTOOLS_CONTRACTS, "
        "default `generated`) with their message types and fields.",
    )
    queues.set_defaults(handler=_cmd_queues)
    return parser


def _cmd_codegen(args: argparse.Namespace) -> int:
    return codegen.run(args.schemas_dir, args.out_dir, check_only=args.check)


def _load_target(target: str) -> object:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"expected MODULE:ATTR, got {target!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}") from None


def _cmd_run(args: argparse.Namespace) -> int:
    _runner_for(_load_target(args.target), args).run()
    return 0


def _runner_for(target: object, args: argparse.Namespace) -> ConsumerRunner:
    """The runner that serves `target` with the --transport/--host/--port overrides."""
    if isinstance(target, ConsumerFactory):
        factory = target
        if args.transport or args.port is not None or args.host:
            factory = factory.using(args.transport, port=args.port, host=args.host)
        runner = ConsumerRunner(
            factory.instances, factory.handlers, port=factory.port, host=factory.host
        )
    elif isinstance(target, ConsumerRunner):
        if args.transport:
            raise ConfigurationError("--transport needs a ConsumerFactory target, not a runner")
        runner = target
        if args.port is not None or args.host:
            runner = ConsumerRunner(
                target.consumers,
                port=args.port if args.port is not None else target.port,
                host=args.host or target.host,
                shutdown_timeout=target.shutdown_timeout,
            )
            # The service's own cleanups (e.g. closing its producers) still run at the stop.
            runner.on_shutdown = list(target.on_shutdown)
    else:
        raise ConfigurationError(
            f"{args.target} is a {type(target).__name__}; expected a ConsumerFactory "
            "or a ConsumerRunner"
        )
    return runner


def _cmd_send(args: argparse.Namespace) -> int:
    raw = sys.stdin.read() if args.message == "-" else args.message
    contract = registered_contracts().get(args.queue)
    message_type: type[Any] = contract.message_type if contract is not None else object
    message = codec_for(message_type).decode(raw.encode())
    settings: dict[str, object] = {}
    for key in ("host", "port", "url"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    producer = PRODUCERS[args.transport](args.queue, **settings)

    async def send() -> str:
        async with producer:
            if args.request:
                reply = await producer.request(message, reply_type=object, timeout=args.timeout)
                return msgspec.json.encode(reply).decode()
            return await producer.send(message)

    print(asyncio.run(send()))
    return 0


def _cmd_queues(args: argparse.Namespace) -> int:
    contracts = registered_contracts()
    if not contracts:
        print("no queue contracts found; run `make codegen` or set STREAMTOOLS_CONTRACTS")
        return 1
    width = max(len(name) for name in contracts)
    for name, contract in sorted(contracts.items()):
        fields = ", ".join(getattr(contract.message_type, "__struct_fields__", ()))
        print(f"{name:<{width}}  {contract.message_type.__name__}({fields})")
    return 0


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
    except KeyError as exc:  # an unknown queue in a HandlerFactory and the like
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
