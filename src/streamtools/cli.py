"""The `streamtools` command line: `streamtools <command> ...` (or `python -m streamtools`).

Each subcommand is one `_cmd_<name>(args) -> int` function, registered in `build_parser()`
with `set_defaults(handler=...)`. Errors are one line on stderr (`error: ...`) and a
non-zero exit status: 1 when the command failed, 2 for a usage error; never a traceback.

Contracts: `queues`, `send`, `run`, `asyncapi` and `docs serve` import the package named by
`--contracts` (default `$STREAMTOOLS_CONTRACTS`, else `generated`). As with `python -m`, the
working directory comes first on `sys.path`, so a service's own `generated/` is found. An import
error inside that package is shown, never taken for "no contracts".
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from streamtools import codegen
from streamtools import compat as compat_module
from streamtools._codec import codec_for
from streamtools._docs_page import distribution_version
from streamtools._registry import PRODUCERS
from streamtools._routing import ConsumerFactory
from streamtools._runner import ConsumerRunner
from streamtools._types import Queue
from streamtools._version import __version__
from streamtools.errors import ConfigurationError, StreamtoolsError

__all__ = ["DEFAULT_CONTRACTS", "build_parser", "load_contracts", "main"]

_Handler = Callable[[argparse.Namespace], int]

DEFAULT_CONTRACTS = "generated"
"""The contracts package when neither --contracts nor STREAMTOOLS_CONTRACTS names one."""


def _add_contracts_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--contracts",
        metavar="PKG",
        default=None,
        help="package of generated contracts (default: $STREAMTOOLS_CONTRACTS, else "
        f"{DEFAULT_CONTRACTS!r}; the working directory is searched first)",
    )


def _add_document_options(parser: argparse.ArgumentParser) -> None:
    """The options of the AsyncAPI document: `asyncapi` and `docs serve`."""
    _add_contracts_option(parser)
    parser.add_argument(
        "--transport",
        default=os.environ.get("QUEUE_TYPE", "HTTPHandler"),
        help="the transport the servers and bindings describe (default: $QUEUE_TYPE, else "
        "HTTPHandler)",
    )
    parser.add_argument(
        "--server", metavar="URL", help="the server URL (default: localhost); credentials dropped"
    )
    parser.add_argument("--title", help="info.title (default: the contracts package name)")
    parser.add_argument(
        "--api-version",
        help="info.version (default: the version of the distribution holding the package, "
        "else 0.0.0)",
    )


def load_contracts(package: str | None, *, required: bool = True) -> Mapping[str, Queue[Any]]:
    """Import the contracts `package` (None: the default) and return its queues by name.

    A missing package is a ConfigurationError when it was named or `required`; an error raised
    while importing it is a ConfigurationError that shows that error and where it happened.
    The package is also made the one bare queue names resolve against (STREAMTOOLS_CONTRACTS).
    """
    named = package or os.environ.get("STREAMTOOLS_CONTRACTS") or None
    module_name = named or DEFAULT_CONTRACTS
    os.environ["STREAMTOOLS_CONTRACTS"] = module_name
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name != missing and not module_name.startswith(f"{missing}."):
            # the package exists; something it imports does not
            raise ConfigurationError(_import_failure(module_name, exc)) from exc
        if named is None and not required:
            return {}
        raise ConfigurationError(
            f"no contracts package {module_name!r} (searched {os.getcwd()} and sys.path); "
            "pass --contracts PKG or set STREAMTOOLS_CONTRACTS, or generate one with "
            "'streamtools codegen SCHEMAS_DIR OUT_DIR'"
        ) from None
    except Exception as exc:  # whatever the package raised on import: show it as it is
        raise ConfigurationError(_import_failure(module_name, exc)) from exc
    queues = getattr(module, "QUEUES", None)
    if not isinstance(queues, Mapping):
        raise ConfigurationError(
            f"{module_name!r} has no QUEUES mapping; is it a package 'streamtools codegen' wrote?"
        )
    return dict(queues)


def _import_failure(module_name: str, exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    shown = "".join(traceback.format_exception_only(exc)).strip().replace("\n", " ")
    return f"importing contracts package {module_name!r} failed: {shown}{where}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand; add a subcommand here and a `_cmd_` below."""
    parser = argparse.ArgumentParser(
        prog="streamtools", description="Typed, async messaging between microservices."
    )
    parser.add_argument("--version", action="version", version=f"streamtools {__version__}")
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
    _add_contracts_option(run)
    run.set_defaults(handler=_cmd_run)

    send = commands.add_parser(
        "send",
        help="validate a JSON message against its queue's contract and send it",
        description="Send JSON to QUEUE, validated against the queue's contract in the "
        "contracts package (--raw: send it unvalidated). Prints the message id, or with "
        "--request the reply as JSON.",
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
    send.add_argument(
        "--raw", action="store_true", help="send without a contract: any JSON, not validated"
    )
    _add_contracts_option(send)
    send.set_defaults(handler=_cmd_send)

    queues = commands.add_parser(
        "queues",
        help="list the queue contracts and their message types",
        description="List the queues of the contracts package (--contracts, else "
        "$STREAMTOOLS_CONTRACTS, else `generated`) with their message types and fields.",
    )
    _add_contracts_option(queues)
    queues.set_defaults(handler=_cmd_queues)

    doc = commands.add_parser(
        "asyncapi",
        help="write an AsyncAPI 3.0.0 document of the contracts",
        description="Write an AsyncAPI 3.0.0 document of the contracts package: a channel, "
        "send and receive operations per queue (and its .dlq on queued transports), payload "
        "schemas from the contracts. JSON, or YAML when FILE ends in .yaml/.yml.",
    )
    _add_document_options(doc)
    doc.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    doc.set_defaults(handler=_cmd_asyncapi)

    docs = commands.add_parser(
        "docs",
        help="serve the AsyncAPI page of the contracts",
        description="The AsyncAPI document of the contracts package as a page.",
    )
    docs_commands = docs.add_subparsers(title="docs commands", metavar="ACTION", required=True)
    docs_serve = docs_commands.add_parser(
        "serve",
        help="serve the page, /asyncapi.json and /asyncapi.yaml until SIGINT/SIGTERM",
        description="Serve the AsyncAPI document of the contracts package at /docs (an HTML "
        "page, its viewer shipped with streamtools: nothing is fetched from elsewhere), "
        "/asyncapi.json and /asyncapi.yaml until SIGINT or SIGTERM.",
    )
    _add_document_options(docs_serve)
    docs_serve.add_argument(
        "--host", default="127.0.0.1", help="host to listen on (default: 127.0.0.1)"
    )
    docs_serve.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default: 8000; 0: any free)"
    )
    docs_serve.set_defaults(handler=_cmd_docs_serve)

    compat = commands.add_parser(
        "compat",
        help="report breaking changes between two folders of schemas",
        description="Compare the JSON Schemas of OLD_SCHEMAS and NEW_SCHEMAS (paired by message "
        "class name) and print one line per incompatible change; exit 0 when every contract is "
        "compatible, 1 otherwise.",
    )
    compat_module.add_arguments(compat)
    compat.set_defaults(handler=_cmd_compat)

    outbox = commands.add_parser(
        "outbox",
        help="the PostgreSQL outbox: create its tables, run its relay",
        description="The transactional outbox and inbox on PostgreSQL (streamtools[postgres]).",
    )
    outbox_commands = outbox.add_subparsers(
        title="outbox commands", metavar="ACTION", required=True
    )
    init = outbox_commands.add_parser(
        "init",
        help="create the outbox and inbox tables (idempotent); prints the SQL it runs",
        description="Create the outbox and inbox tables in SCHEMA, idempotently, and print the "
        "SQL; with --print, print it only (for a migration tool).",
    )
    relay = outbox_commands.add_parser(
        "relay",
        help="publish committed outbox rows until SIGINT/SIGTERM",
        description="Publish the outbox's committed rows through TRANSPORT, in commit order "
        "per key, until SIGINT or SIGTERM. The transport's settings come from its environment "
        "variables (RMQ_URL, KAFKA_BOOTSTRAP_SERVERS, ...).",
    )
    for sub in (init, relay):
        sub.add_argument(
            "--schema", default="streamtools", help="schema name (default: streamtools)"
        )
        sub.add_argument(
            "--dsn",
            default=None,
            help="PostgreSQL connection string (default: $STREAMTOOLS_OUTBOX_DSN, else "
            "$DATABASE_URL, else libpq's PG* variables)",
        )
    init.add_argument("--print", action="store_true", help="print the SQL, do not run it")
    init.set_defaults(handler=_cmd_outbox_init)
    relay.add_argument(
        "--transport",
        default=os.environ.get("QUEUE_TYPE", "RMQIOHandler"),
        help="registry name (default: $QUEUE_TYPE, else RMQIOHandler)",
    )
    relay.add_argument("--batch-size", type=int, default=200, help="rows per batch (200)")
    relay.add_argument("--poll-interval", type=float, default=1.0, help="seconds (1.0)")
    relay.add_argument(
        "--retention", type=float, default=86_400.0, help="seconds sent rows are kept (86400)"
    )
    _add_contracts_option(relay)
    relay.set_defaults(handler=_cmd_outbox_relay)
    return parser


def _cmd_codegen(args: argparse.Namespace) -> int:
    return codegen.run(args.schemas_dir, args.out_dir, check_only=args.check)


def _load_target(target: str) -> object:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"expected MODULE:ATTR, got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}") from None


def _cmd_run(args: argparse.Namespace) -> int:
    # Bare queue names in the service resolve against these contracts; none is fine here.
    load_contracts(args.contracts, required=False)
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
                docs=target.docs,
            )
            # The service's own cleanups (e.g. closing its producers) still run at the stop.
            runner.on_startup = list(target.on_startup)  # e.g. an outbox relay's start
            runner.on_shutdown = list(target.on_shutdown)
    else:
        raise ConfigurationError(
            f"{args.target} is a {type(target).__name__}; expected a ConsumerFactory "
            "or a ConsumerRunner"
        )
    return runner


def _cmd_send(args: argparse.Namespace) -> int:
    producer_class = PRODUCERS[args.transport]  # an unknown transport is the first error
    raw = sys.stdin.read() if args.message == "-" else args.message
    message_type: type[Any] = object
    if not args.raw:
        contracts = load_contracts(args.contracts)
        contract = contracts.get(args.queue)
        if contract is None:
            known = ", ".join(sorted(contracts)) or "none"
            raise ConfigurationError(
                f"no contract for queue {args.queue!r} in {os.environ['STREAMTOOLS_CONTRACTS']!r} "
                f"(its queues: {known}); pass --contracts PKG, or --raw to send unvalidated JSON"
            )
        message_type = contract.message_type
    message = codec_for(message_type).decode(raw.encode())
    settings: dict[str, object] = {}
    for key in ("host", "port", "url"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    producer = producer_class(args.queue, **settings)

    async def send() -> str:
        async with producer:
            if args.request:
                reply = await producer.request(message, reply_type=object, timeout=args.timeout)
                return msgspec.json.encode(reply).decode()
            return await producer.send(message)

    print(asyncio.run(send()))
    return 0


def _cmd_queues(args: argparse.Namespace) -> int:
    contracts = load_contracts(args.contracts)
    if not contracts:
        print(
            f"error: {os.environ['STREAMTOOLS_CONTRACTS']!r} defines no queues (no x-queue in "
            "its schemas)",
            file=sys.stderr,
        )
        return 1
    width = max(len(name) for name in contracts)
    for name, contract in sorted(contracts.items()):
        fields = ", ".join(getattr(contract.message_type, "__struct_fields__", ()))
        print(f"{name:<{width}}  {contract.message_type.__name__}({fields})")
    return 0


def _cmd_compat(args: argparse.Namespace) -> int:
    return compat_module.run(
        args.old_dir, args.new_dir, mode=args.mode, acknowledge=args.acknowledge
    )


def _document(args: argparse.Namespace) -> dict[str, Any]:
    """The AsyncAPI document the `_add_document_options` options ask for."""
    from streamtools import asyncapi

    contracts = load_contracts(args.contracts)
    package = os.environ["STREAMTOOLS_CONTRACTS"]
    return asyncapi.document(
        contracts,
        title=args.title or package,
        version=args.api_version or distribution_version(package),
        transport=args.transport,
        server=args.server,
    )


def _cmd_asyncapi(args: argparse.Namespace) -> int:
    from streamtools import asyncapi

    doc = _document(args)
    yaml = bool(args.output) and args.output.endswith((".yaml", ".yml"))
    text = asyncapi.dumps(doc, yaml=yaml)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_docs_serve(args: argparse.Namespace) -> int:
    from streamtools import _docs_page
    from streamtools._health import serve_endpoints

    doc = _document(args)  # a bad contract or option fails before listening

    async def serve() -> None:
        import signal

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        port, close = await serve_endpoints(
            _docs_page.docs_endpoints(lambda: doc),
            host=args.host,
            port=args.port,
            headers=_docs_page.HEADERS,
        )
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(
            f"serving the AsyncAPI page at http://{host}:{port}{_docs_page.DOCS_PATH}", flush=True
        )
        try:
            await stop.wait()
        finally:
            await close()

    asyncio.run(serve())
    return 0


def _cmd_outbox_init(args: argparse.Namespace) -> int:
    from streamtools.outbox import _outbox, _relay, _schema

    try:
        sql = _schema.schema_sql(args.schema)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    print(sql, end="")
    if args.print:
        return 0
    dsn = _relay.default_dsn() if args.dsn is None else args.dsn

    async def init() -> None:
        import psycopg

        try:
            async with await psycopg.AsyncConnection.connect(dsn) as conn:
                await _outbox.init_schema(conn, args.schema)
        except psycopg.Error as exc:
            raise ConfigurationError(f"outbox init failed: {exc}".strip()) from exc

    asyncio.run(init())
    print(f"-- schema {args.schema!r} is ready", file=sys.stderr)
    return 0


def _cmd_outbox_relay(args: argparse.Namespace) -> int:
    from streamtools.outbox import Relay

    contracts = load_contracts(args.contracts, required=False)
    relay = Relay(
        args.transport,
        dsn=args.dsn,
        schema=args.schema,
        contracts=contracts.values(),
        batch_size=args.batch_size,
        poll_interval=args.poll_interval,
        retention=args.retention,
    )

    async def serve() -> None:
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, relay.stop)
        await relay.run()

    print(f"relaying outbox {args.schema!r} to {args.transport}", file=sys.stderr, flush=True)
    asyncio.run(serve())
    stats = relay.stats
    print(f"published {stats.published}, parked {stats.parked}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    # As `python -m` does: a service's own modules and contracts in the working directory.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
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
    except OSError as exc:  # e.g. asyncapi -o into a missing folder
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
