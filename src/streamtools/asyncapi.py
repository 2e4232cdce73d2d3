"""An AsyncAPI 3.0.0 document of a contracts package: `streamtools asyncapi`.

One channel per queue (its address is the queue name), with a `send` and a `receive`
operation; on the queued transports (RabbitMQ, Kafka, memory) the `<queue>.dlq` channel too,
with a `receive` operation and the dead-letter headers. Each message's payload is the JSON
Schema of its contract's Struct (`msgspec.json.schema_components`), stored under
`components.schemas` with `$ref`s pointing there: draft-07 keywords only, which is what
AsyncAPI 3.0's default schema format (a superset of JSON Schema draft-07) reads. The
CloudEvents attributes travel as headers (binary content mode) and are the messages' headers
schema, named as the protocol binding names them (`ce-id`, ... over HTTP and AMQP; `ce_id`,
... and `content-type` over Kafka); `correlationId` points at the id header, which a reply to
a request carries as its correlation id.

Kafka: a `kafka` server (bootstrap `host:port`), channels with `kafka` bindings (topic, the
transport's default 3 partitions), `receive` operations with the consumer group (`groupId`:
the queue name unless `group=`/`KAFKA_GROUP` say otherwise) and messages with the optional
record key (binding version 0.5.0, the newest the AsyncAPI 3.0.0 schema knows).

The output is deterministic: keys in a fixed order, queues and schemas sorted, no timestamps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from streamtools._contracts import published_schemas
from streamtools._registry import HTTP, KAFKA, MEMORY, PRODUCERS, RMQ
from streamtools._types import Queue
from streamtools.errors import ConfigurationError

__all__ = ["ASYNCAPI_VERSION", "document", "dumps"]

ASYNCAPI_VERSION: Final = "3.0.0"
_BINDING_VERSION: Final = "0.3.0"
_KAFKA_BINDING_VERSION: Final = "0.5.0"  # the newest kafka bindings of AsyncAPI 3.0.0
_KAFKA_PARTITIONS: Final = 3  # the transport's default `partitions=`
_SCHEMA_REFS: Final = "#/components/schemas/{name}"
_DEFAULT_SERVERS: Final = {
    HTTP: "http://localhost:8080",
    RMQ: "amqp://localhost:5672/",
    KAFKA: "kafka://localhost:9092",
}
_SCHEMES: Final = {
    HTTP: ("http", "https"),
    RMQ: ("amqp", "amqps"),
    KAFKA: ("kafka", "kafka-secure"),
}

# The CloudEvents attributes without their prefix (`ce-` over HTTP/AMQP, `ce_` over Kafka).
_CLOUDEVENTS_ATTRIBUTES: Final[dict[str, dict[str, Any]]] = {
    "id": {"type": "string", "description": "Unique per message, kept across retries."},
    "type": {"type": "string", "description": "The message type (the Struct's name)."},
    "source": {"type": "string", "description": "The sending service."},
    "specversion": {"type": "string", "const": "1.0"},
    "time": {"type": "string", "format": "date-time"},
}
_ATTEMPT_HEADER: Final[dict[str, Any]] = {
    "type": "string",
    "description": "Deliveries so far to this queue's consumer (absent on the first).",
}
_KAFKA_CONTENT_TYPE: Final[dict[str, Any]] = {
    "type": "string",
    "description": "The record value's media type (CloudEvents Kafka binding), e.g. "
    "application/json.",
}
_DEAD_LETTER_HEADERS: Final[dict[str, Any]] = {
    "x-death-reason": {"type": "string", "enum": ["invalid", "max-retries", "internal"]},
    "x-error-type": {"type": "string", "description": "The error's class name."},
    "x-error-message": {"type": "string", "description": "What failed (the field path)."},
    "x-attempts": {"type": "string", "description": "Deliveries before dead-lettering."},
    "x-original-queue": {"type": "string"},
}


def document(
    contracts: Mapping[str, Queue[Any]],
    *,
    title: str,
    version: str,
    transport: str = HTTP,
    server: str | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document (as JSON-ready dicts) of `contracts` on `transport`."""
    canonical = _canonical(transport)
    queued = canonical in (RMQ, KAFKA, MEMORY)
    types = sorted({q.message_type for q in contracts.values()}, key=lambda t: t.__name__)
    structs = [t for t in types if issubclass(t, msgspec.Struct)]
    if len(structs) != len(types):
        raise ConfigurationError("every contract needs a msgspec Struct message type")
    names = [t.__name__ for t in structs]
    if len(set(names)) != len(names):
        raise ConfigurationError(
            f"two message types share a name ({', '.join(sorted(names))}); rename one"
        )
    schemas = _source_schemas(structs)
    if schemas is None:  # hand-written Structs: the schema msgspec derives from them
        try:
            _, schemas = msgspec.json.schema_components(structs, ref_template=_SCHEMA_REFS)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot describe the contracts as JSON Schema: {exc}"
            ) from exc

    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for name, queue in sorted(contracts.items()):
        type_name = queue.message_type.__name__
        messages.setdefault(
            type_name, _message(type_name, schemas[type_name], canonical, dead=False)
        )
        channels[name] = _channel(name, type_name, "#/components/messages/", canonical)
        operations[f"{name}.send"] = _operation("send", name, type_name, canonical)
        operations[f"{name}.receive"] = _operation("receive", name, type_name, canonical)
        if queued:
            dead_name = f"{type_name}.deadLetter"
            messages.setdefault(
                dead_name, _message(type_name, schemas[type_name], canonical, dead=True)
            )
            dlq = f"{name}.dlq"
            channels[dlq] = _channel(dlq, dead_name, "#/components/messages/", canonical)
            channels[dlq]["description"] = (
                f"Messages of {name} that failed validation or every retry of their handler."
            )
            operations[f"{dlq}.receive"] = _operation("receive", dlq, dead_name, canonical)

    doc: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": f"Message contracts of {title}, as streamtools sends them.",
        },
        "defaultContentType": "application/json",
    }
    if canonical != MEMORY:
        doc["servers"] = {_protocol(canonical): _server(canonical, server)}
    doc["channels"] = channels
    doc["operations"] = operations
    doc["components"] = {
        "schemas": dict(sorted(schemas.items())),
        "messages": dict(sorted(messages.items())),
    }
    return doc


def _source_schemas(structs: list[type[Any]]) -> dict[str, Any] | None:
    """The schemas the contracts were generated from, as codegen published them (wire names,
    `allOf`, unions and shared `$defs` as written), if every contract has them; else None."""
    texts = [published_schemas(struct) for struct in structs]
    if any(text is None for text in texts):
        return None
    schemas: dict[str, Any] = {}
    for text in sorted({text for text in texts if text is not None}):
        for name, schema in json.loads(text).items():
            if schemas.setdefault(name, schema) != schema:
                raise ConfigurationError(
                    f"two contracts packages publish different schemas named {name!r}; "
                    "document them separately"
                )
    return schemas


def dumps(doc: Mapping[str, Any], *, yaml: bool = False) -> str:
    """The document as JSON (2-space indent) or as block YAML; both end with a newline."""
    if not yaml:
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    return "".join(_yaml(doc, 0)) or "{}\n"


# --- pieces ------------------------------------------------------------------------------


def _canonical(transport: str) -> str:
    if transport not in PRODUCERS:
        raise ConfigurationError(
            f"unknown transport {transport!r}; use one of {HTTP}, {RMQ}, {KAFKA}, {MEMORY} "
            "(or http, rabbitmq, kafka, memory)"
        )
    for name in (HTTP, RMQ, KAFKA, MEMORY):
        if transport == name or transport.lower() in _ALIASES[name]:
            return name
    raise ConfigurationError(f"transport {transport!r} has no AsyncAPI description")


_ALIASES: Final = {
    HTTP: ("http", HTTP.lower()),
    RMQ: ("rabbitmq", "rmq", "amqp", RMQ.lower()),
    KAFKA: ("kafka", KAFKA.lower()),
    MEMORY: ("memory", MEMORY.lower()),
}


def _protocol(transport: str) -> str:
    return {HTTP: "http", RMQ: "amqp", KAFKA: "kafka"}[transport]


def _server(transport: str, url: str | None) -> dict[str, Any]:
    text = url or _DEFAULT_SERVERS[transport]
    if transport == KAFKA and "://" not in text:
        text = f"kafka://{text}"  # a bootstrap server as Kafka clients take it: host:port
    parts = urlsplit(text)
    expected: tuple[str, ...] = _SCHEMES[transport]
    try:
        port = parts.port
    except ValueError:
        port, expected = None, ()  # a port that is not a number
    kafka_path = transport == KAFKA and parts.path not in ("", "/")
    if parts.scheme not in expected or not parts.hostname or "," in text or kafka_path:
        example = _DEFAULT_SERVERS[transport]
        if transport == KAFKA:
            example = "kafka://kafka.internal:9092 or kafka.internal:9092, one broker"
        article = "a" if transport == KAFKA else "an"
        raise ConfigurationError(
            f"--server {url!r} is not {article} {' or '.join(_SCHEMES[transport])} URL with "
            f"a host (e.g. {example})"
        )
    host = parts.hostname if port is None else f"{parts.hostname}:{port}"
    server: dict[str, Any] = {"host": host, "protocol": parts.scheme}  # credentials never
    if transport == RMQ:
        server["protocolVersion"] = "0.9.1"
    if parts.path not in ("", "/"):
        server["pathname"] = parts.path
    return server


def _headers(transport: str, *, dead: bool) -> dict[str, Any]:
    """The headers schema: the CloudEvents attributes as the transport's binding names them."""
    prefix = "ce_" if transport == KAFKA else "ce-"
    properties: dict[str, Any] = {
        f"{prefix}{name}": dict(schema) for name, schema in _CLOUDEVENTS_ATTRIBUTES.items()
    }
    required = list(properties)
    if transport == KAFKA:
        properties["content-type"] = dict(_KAFKA_CONTENT_TYPE)
        required.append("content-type")
    properties["x-streamtools-attempt"] = dict(_ATTEMPT_HEADER)
    if dead:
        properties.update(json.loads(json.dumps(_DEAD_LETTER_HEADERS)))
        required += ["x-death-reason", "x-error-type"]
    description = "CloudEvents 1.0 attributes in binary content mode."
    if transport == KAFKA:
        description = "CloudEvents 1.0 attributes as the CloudEvents Kafka protocol binding "
        description += "carries them (binary content mode): ce_ headers and content-type."
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required,
    }


def _message(
    type_name: str, payload: Mapping[str, Any], transport: str, *, dead: bool
) -> dict[str, Any]:
    id_header = "ce_id" if transport == KAFKA else "ce-id"
    if transport == KAFKA:
        correlation = (
            "The message id (ce_id), kept across retries and dead-lettering; the Kafka "
            "transport offers no request/reply."
        )
    else:
        correlation = (
            "The message id; a reply to a request carries it as its correlation id "
            "(AMQP correlation_id; over HTTP the reply is the response)."
        )
    message: dict[str, Any] = {
        "name": f"{type_name}.deadLetter" if dead else type_name,
        "title": f"{type_name} (dead-lettered)" if dead else type_name,
        "contentType": "application/json",
        "headers": _headers(transport, dead=dead),
        "payload": {"$ref": _SCHEMA_REFS.format(name=type_name)},
        "correlationId": {
            "description": correlation,
            "location": f"$message.header#/{id_header}",
        },
    }
    if transport == KAFKA:
        message["bindings"] = {
            "kafka": {
                "key": {
                    "type": "string",
                    "description": "Optional (send option key=): records with one key go "
                    "to one partition and keep their order; retry and dead-letter copies "
                    "keep it.",
                },
                "bindingVersion": _KAFKA_BINDING_VERSION,
            }
        }
    description = payload.get("description")
    if isinstance(description, str):
        message["summary"] = re.sub(r"\s+", " ", description).strip()
    return message


def _channel(name: str, message: str, refs: str, transport: str) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": name,
        "messages": {message: {"$ref": f"{refs}{message}"}},
    }
    if transport == RMQ:
        channel["bindings"] = {
            "amqp": {
                "is": "queue",
                "queue": {
                    "name": name,
                    "durable": True,
                    "exclusive": False,
                    "autoDelete": False,
                },
                "bindingVersion": _BINDING_VERSION,
            }
        }
    elif transport == KAFKA:
        channel["bindings"] = {
            "kafka": {
                "topic": name,
                "partitions": _KAFKA_PARTITIONS,
                "bindingVersion": _KAFKA_BINDING_VERSION,
            }
        }
    return channel


def _operation(action: str, channel: str, message: str, transport: str) -> dict[str, Any]:
    pointer = channel.replace("~", "~0").replace("/", "~1")
    operation: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{pointer}"},
        "messages": [{"$ref": f"#/channels/{pointer}/messages/{message}"}],
    }
    if transport == RMQ:
        amqp: dict[str, Any] = (
            {"deliveryMode": 2, "mandatory": True} if action == "send" else {"ack": True}
        )
        operation["bindings"] = {"amqp": {**amqp, "bindingVersion": _BINDING_VERSION}}
    elif transport == HTTP:
        operation["bindings"] = {"http": {"method": "POST", "bindingVersion": _BINDING_VERSION}}
    elif transport == KAFKA and action == "receive":
        group = {
            "type": "string",
            "default": channel,
            "description": "The consumer group: group= (else KAFKA_GROUP, else the queue "
            "name); each group gets every record, its members share the partitions.",
        }
        operation["bindings"] = {
            "kafka": {"groupId": group, "bindingVersion": _KAFKA_BINDING_VERSION}
        }
    elif transport == KAFKA:
        operation["description"] = (
            "Produced with acks=all: a send returns once every in-sync replica has the record."
        )
    return operation


# --- a small YAML emitter: block style, every string double-quoted (JSON escapes are YAML) --


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


def _yaml(value: object, indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            label = f"{pad}{_key(key)}:"
            if isinstance(item, Mapping | list) and item:
                lines.append(f"{label}\n")
                lines += _yaml(item, indent + 1)
            else:
                lines.append(f"{label} {_empty_or_scalar(item)}\n")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, Mapping | list) and item:
                nested = _yaml(item, indent + 1)
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines += nested[1:]
            else:
                lines.append(f"{pad}- {_empty_or_scalar(item)}\n")
    else:
        lines.append(f"{pad}{_scalar(value)}\n")
    return lines


_PLAIN_KEY: Final = re.compile(r"^[A-Za-z_$][A-Za-z0-9_.$-]*$")
_YAML_WORDS: Final = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def _key(key: object) -> str:
    text = str(key)
    if _PLAIN_KEY.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return _scalar(text)


def _empty_or_scalar(value: object) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)
