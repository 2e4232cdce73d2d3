"""`streamtools asyncapi`: AsyncAPI 3.0.0 documents, validated by the official parser.

The parser is npm's `@asyncapi/parser`, installed once by `scripts/asyncapi_parser.sh` into
`.venv/asyncapi-parser` (Node.js 20). Every document is written by the CLI as a user would,
for each transport, as JSON and YAML, from the demo contracts (`schemas/`) and from the
codegen cases (typed maps, closed objects, every format); any error-level diagnostic fails.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML: pinned in the dev extra

from streamtools import HTTP, KAFKA, MEMORY, RMQ
from streamtools.codegen import generate

ROOT = Path(__file__).resolve().parents[1]
TRANSPORTS = {HTTP: "http", RMQ: "rabbitmq", KAFKA: "kafka", MEMORY: "memory"}


@pytest.fixture(scope="session")
def parser_dir() -> Path:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "asyncapi_parser.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"installing @asyncapi/parser failed:\n{done.stderr}"
    return Path(done.stdout.strip())


def validate(parser_dir: Path, *files: Path) -> tuple[int, list[dict[str, Any]]]:
    done = subprocess.run(
        ["node", str(ROOT / "scripts" / "validate_asyncapi.mjs"), *map(str, files)],
        env={**os.environ, "ASYNCAPI_PARSER_DIR": str(parser_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert not done.stderr, done.stderr
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def asyncapi(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("STREAMTOOLS_CONTRACTS", "QUEUE_TYPE")}
    return subprocess.run(
        [sys.executable, "-m", "streamtools", "asyncapi", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def cases_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The codegen cases as a contracts package `case_contracts` in a folder of its own."""
    root = tmp_path_factory.mktemp("cases")
    generate(ROOT / "tests" / "codegen_cases", root / "case_contracts")
    return root


@pytest.fixture(scope="module")
def polyglot_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another team's schemas (camelCase, allOf over a shared base, a tagged union)."""
    root = tmp_path_factory.mktemp("polyglot")
    generate(ROOT / "tests" / "contracts" / "polyglot", root / "partner_contracts")
    return root


@pytest.fixture(scope="module")
def documents(
    tmp_path_factory: pytest.TempPathFactory, cases_package: Path, polyglot_package: Path
) -> dict[str, Path]:
    """Every document: demo and cases x transports x JSON/YAML, written by the CLI."""
    out = tmp_path_factory.mktemp("asyncapi")
    files: dict[str, Path] = {}
    for transport, short in TRANSPORTS.items():
        for suffix in ("json", "yaml"):
            demo = out / f"demo-{short}.{suffix}"
            done = asyncapi(
                "--contracts", "examples.contracts", "--transport", transport, "-o", demo
            )
            assert done.returncode == 0, done.stderr
            files[demo.name] = demo
            cases = out / f"cases-{short}.{suffix}"
            done = asyncapi(
                "--contracts",
                "case_contracts",
                "--transport",
                short,
                "-o",
                cases,
                cwd=cases_package,
            )
            assert done.returncode == 0, done.stderr
            files[cases.name] = cases
            partner = out / f"partner-{short}.{suffix}"
            done = asyncapi(
                "--contracts",
                "partner_contracts",
                "--transport",
                short,
                "-o",
                partner,
                cwd=polyglot_package,
            )
            assert done.returncode == 0, done.stderr
            files[partner.name] = partner
    return files


def test_every_document_validates_with_the_official_parser(
    parser_dir: Path, documents: dict[str, Path]
) -> None:
    code, diagnostics = validate(parser_dir, *documents.values())
    errors = [d for d in diagnostics if d["severity"] == 0]
    warnings = [d for d in diagnostics if d["severity"] == 1]
    assert errors == [], errors
    assert warnings == [], warnings
    assert code == 0


def test_the_parser_rejects_a_broken_document(
    parser_dir: Path, documents: dict[str, Path], tmp_path: Path
) -> None:
    # The control: the same validation fails when a document is wrong.
    doc = json.loads(documents["demo-rabbitmq.json"].read_text())
    broken = copy.deepcopy(doc)
    broken["components"]["schemas"]["OrderCreated"]["properties"]["items"]["minItems"] = "one"
    del broken["channels"]["orders.created"]["address"]
    broken["operations"]["orders.created.send"]["action"] = "publish"  # an AsyncAPI 2 verb
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    code, diagnostics = validate(parser_dir, tmp_path / "broken.json")
    assert code == 1
    assert any(d["severity"] == 0 for d in diagnostics)


def test_the_parser_checks_kafka_bindings(
    parser_dir: Path, documents: dict[str, Path], tmp_path: Path
) -> None:
    # The control for the Kafka parts: the parser reads the kafka binding schemas.
    broken = json.loads(documents["demo-kafka.json"].read_text())
    broken["channels"]["orders.created"]["bindings"]["kafka"]["partitions"] = 0
    broken["operations"]["orders.created.receive"]["bindings"]["kafka"]["bindingVersion"] = "9"
    broken["components"]["messages"]["OrderCreated"]["bindings"]["kafka"]["keys"] = {}
    (tmp_path / "broken-kafka.json").write_text(json.dumps(broken))
    code, diagnostics = validate(parser_dir, tmp_path / "broken-kafka.json")
    assert code == 1
    paths = {".".join(d["path"]) for d in diagnostics if d["severity"] == 0}
    assert {
        "channels.orders.created.bindings.kafka.partitions",
        "operations.orders.created.receive.bindings.kafka.bindingVersion",
        "components.messages.OrderCreated.bindings.kafka.keys",
    } <= paths, paths


def test_yaml_and_json_are_the_same_document(documents: dict[str, Path]) -> None:
    for name, path in documents.items():
        if name.endswith(".yaml"):
            as_json = json.loads(path.with_suffix(".json").read_text())
            assert yaml.safe_load(path.read_text()) == as_json, name


def test_channels_operations_and_messages(documents: dict[str, Path]) -> None:
    doc = json.loads(documents["demo-rabbitmq.json"].read_text())
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "examples.contracts"
    assert doc["servers"] == {
        "amqp": {"host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0.9.1"}
    }
    queues = ["billing.invoiced", "orders.created", "shipping.requested"]
    assert sorted(doc["channels"]) == sorted([*queues, *(f"{q}.dlq" for q in queues)])
    orders = doc["channels"]["orders.created"]
    assert orders["address"] == "orders.created"
    assert orders["bindings"]["amqp"]["is"] == "queue"
    assert orders["bindings"]["amqp"]["queue"]["name"] == "orders.created"
    assert doc["operations"]["orders.created.send"] == {
        "action": "send",
        "channel": {"$ref": "#/channels/orders.created"},
        "messages": [{"$ref": "#/channels/orders.created/messages/OrderCreated"}],
        "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": "0.3.0"}},
    }
    assert doc["operations"]["orders.created.receive"]["action"] == "receive"
    assert doc["operations"]["orders.created.dlq.receive"]["action"] == "receive"
    message = doc["components"]["messages"]["OrderCreated"]
    assert message["payload"] == {"$ref": "#/components/schemas/OrderCreated"}
    assert message["correlationId"]["location"] == "$message.header#/ce-id"
    assert set(message["headers"]["required"]) == {
        "ce-id",
        "ce-type",
        "ce-source",
        "ce-specversion",
        "ce-time",
    }
    dead = doc["components"]["messages"]["OrderCreated.deadLetter"]
    assert "x-death-reason" in dead["headers"]["properties"]
    # The payload is the source schema as written: constraints and $defs included, every
    # $ref pointing within the document.
    schemas = doc["components"]["schemas"]
    line_item = schemas["OrderCreated"]["$defs"]["LineItem"]["properties"]
    assert line_item["quantity"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert schemas["OrderCreated"]["properties"]["items"]["items"] == {
        "$ref": "#/components/schemas/OrderCreated/$defs/LineItem"
    }


def test_http_and_memory_documents(documents: dict[str, Path]) -> None:
    http = json.loads(documents["demo-http.json"].read_text())
    assert http["servers"] == {"http": {"host": "localhost:8080", "protocol": "http"}}
    assert not any(name.endswith(".dlq") for name in http["channels"])  # HTTP answers 422/500
    assert http["operations"]["orders.created.send"]["bindings"] == {
        "http": {"method": "POST", "bindingVersion": "0.3.0"}
    }
    memory = json.loads(documents["demo-memory.json"].read_text())
    assert "servers" not in memory
    assert "orders.created.dlq" in memory["channels"]


def test_closed_objects_and_typed_maps_reach_the_payload(documents: dict[str, Path]) -> None:
    schemas = json.loads(documents["cases-rabbitmq.json"].read_text())["components"]["schemas"]
    strict = schemas["StrictMaps"]
    assert strict["additionalProperties"] is False
    labels = strict["properties"]["labels"]  # the source schema, as written
    assert labels == {"type": "object", "additionalProperties": {"type": "string", "maxLength": 5}}


def test_server_url_and_determinism(tmp_path: Path) -> None:
    args = ["--contracts", "examples.contracts", "--transport", RMQ]
    first = asyncapi(*args, "--server", "amqps://app:s3cret@rmq.example:5671/prod")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["servers"]["amqp"] == {
        "host": "rmq.example:5671",
        "protocol": "amqps",
        "protocolVersion": "0.9.1",
        "pathname": "/prod",
    }
    assert "s3cret" not in first.stdout
    assert asyncapi(*args, "--server", "amqps://app:s3cret@rmq.example:5671/prod").stdout == (
        first.stdout
    )
    bad = asyncapi(*args, "--server", "http://x")
    assert bad.returncode == 1
    assert "is not an amqp or amqps URL" in bad.stderr
    missing = asyncapi("--contracts", "examples.contracts", "-o", tmp_path / "no" / "x.json")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: ")


def test_kafka_document(documents: dict[str, Path]) -> None:
    doc = json.loads(documents["demo-kafka.json"].read_text())
    assert doc["servers"] == {"kafka": {"host": "localhost:9092", "protocol": "kafka"}}
    queues = ["billing.invoiced", "orders.created", "shipping.requested"]
    assert sorted(doc["channels"]) == sorted([*queues, *(f"{q}.dlq" for q in queues)])
    for name in doc["channels"]:  # topic = queue name, the transport's default partitions
        assert doc["channels"][name]["bindings"] == {
            "kafka": {"topic": name, "partitions": 3, "bindingVersion": "0.5.0"}
        }
    assert doc["channels"]["orders.created.dlq"]["messages"] == {
        "OrderCreated.deadLetter": {"$ref": "#/components/messages/OrderCreated.deadLetter"}
    }
    operations = doc["operations"]
    assert "bindings" not in operations["orders.created.send"]  # no producer-side binding
    assert "acks=all" in operations["orders.created.send"]["description"]
    for queue in ("orders.created", "orders.created.dlq"):
        kafka = operations[f"{queue}.receive"]["bindings"]["kafka"]
        assert kafka["bindingVersion"] == "0.5.0"
        assert kafka["groupId"]["type"] == "string"
        assert kafka["groupId"]["default"] == queue  # group= else KAFKA_GROUP else the queue
    assert "orders.created.dlq.send" not in operations

    messages = doc["components"]["messages"]
    message = messages["OrderCreated"]
    assert message["payload"] == {"$ref": "#/components/schemas/OrderCreated"}
    assert message["correlationId"]["location"] == "$message.header#/ce_id"
    headers = message["headers"]
    # The CloudEvents Kafka binding's names: ce_ and content-type, never the ce- of HTTP/AMQP.
    assert headers["required"] == [
        "ce_id",
        "ce_type",
        "ce_source",
        "ce_specversion",
        "ce_time",
        "content-type",
    ]
    assert list(headers["properties"]) == [*headers["required"], "x-streamtools-attempt"]
    assert not any(key.startswith("ce-") for key in json.dumps(doc).split('"'))
    assert message["bindings"]["kafka"]["key"]["type"] == "string"
    assert message["bindings"]["kafka"]["bindingVersion"] == "0.5.0"
    dead = messages["OrderCreated.deadLetter"]
    assert dead["correlationId"]["location"] == "$message.header#/ce_id"
    assert {"ce_id", "content-type", "x-death-reason", "x-error-type"} <= set(
        dead["headers"]["required"]
    )
    assert "x-original-queue" in dead["headers"]["properties"]
    # Only the transport-specific parts differ from the RabbitMQ document.
    rmq = json.loads(documents["demo-rabbitmq.json"].read_text())
    assert doc["components"]["schemas"] == rmq["components"]["schemas"]
    assert sorted(doc["operations"]) == sorted(rmq["operations"])


def test_kafka_transport_names_and_server(tmp_path: Path) -> None:
    by_name = asyncapi("--contracts", "examples.contracts", "--transport", KAFKA)
    assert by_name.returncode == 0, by_name.stderr
    by_alias = asyncapi("--contracts", "examples.contracts", "--transport", "kafka")
    assert by_alias.stdout == by_name.stdout  # deterministic, and the alias is the same
    args = ["--contracts", "examples.contracts", "--transport", "kafka", "--server"]
    for url, host, protocol in [
        ("kafka://broker.example:9093", "broker.example:9093", "kafka"),
        ("broker.example:9093", "broker.example:9093", "kafka"),  # as Kafka clients take it
        ("kafka-secure://app:s3cret@broker.example:9094", "broker.example:9094", "kafka-secure"),
    ]:
        done = asyncapi(*args, url)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["servers"] == {"kafka": {"host": host, "protocol": protocol}}
        assert "s3cret" not in done.stdout
    for bad in ("amqp://broker.example:5672", "broker.example:x", "a:9092,b:9092", "kafka://b/x"):
        done = asyncapi(*args, bad)
        assert done.returncode == 1, bad
        assert "is not a kafka or kafka-secure URL with a host" in done.stderr, done.stderr


def test_the_source_schemas_are_published_as_written(documents: dict[str, Path]) -> None:
    doc = json.loads(documents["partner-kafka.json"].read_text())
    schemas = doc["components"]["schemas"]
    assert set(schemas) == {"Common", "OrderPlaced", "PaymentReceived", "ServiceHeartbeat"}
    order = schemas["OrderPlaced"]
    # composition and shared definitions as written, every $ref within the document
    assert order["allOf"][0] == {"$ref": "#/components/schemas/Common/$defs/EventBase"}
    placed = order["allOf"][1]["properties"]
    assert placed["total"] == {"$ref": "#/components/schemas/Common/$defs/Money"}
    assert placed["lines"]["items"] == {"$ref": "#/components/schemas/OrderPlaced/$defs/OrderLine"}
    assert placed["tags"]["uniqueItems"] is True  # what only the validator checks, published too
    assert "orderId" in placed  # wire names
    assert "order_id" not in json.dumps(order)
    method = schemas["PaymentReceived"]["properties"]["method"]
    assert method["discriminator"] == "kind"  # AsyncAPI's spelling of OpenAPI's object
    assert method["oneOf"][0] == {"$ref": "#/components/schemas/PaymentReceived/$defs/Card"}
    assert doc["components"]["messages"]["OrderPlaced"]["payload"] == {
        "$ref": "#/components/schemas/OrderPlaced"
    }
    assert "$id" not in json.dumps(schemas)
    assert '"$schema": "https' not in json.dumps(schemas)
