"""The CLI finds a user's contracts: --contracts, STREAMTOOLS_CONTRACTS, the working directory.

Each case runs `python -m streamtools` as a subprocess in a folder of its own outside the
repository, as a service would, with contracts generated there by `streamtools codegen`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamtools import MEMORY
from streamtools._version import __version__
from streamtools.codegen import generate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = {
    "title": "Ping",
    "x-queue": "user.pings",
    "type": "object",
    "required": ["n"],
    "properties": {"n": {"type": "integer", "minimum": 1}},
}


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # No PYTHONPATH into the checkout and no STREAMTOOLS_CONTRACTS unless the case sets it.
    clean = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STREAMTOOLS_CONTRACTS")
    }
    return subprocess.run(
        [sys.executable, "-m", "streamtools", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A service folder with its contracts in `generated/` and a copy in `other_contracts/`."""
    root = tmp_path_factory.mktemp("service")
    (root / "schemas").mkdir()
    (root / "schemas" / "ping.json").write_text(json.dumps(SCHEMA))
    generate(root / "schemas", root / "generated")
    other = dict(SCHEMA, title="Pong", **{"x-queue": "user.pongs"})
    (root / "other_schemas").mkdir()
    (root / "other_schemas" / "pong.json").write_text(json.dumps(other))
    generate(root / "other_schemas", root / "other_contracts")
    return root


def _one_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ")
    assert "Traceback" not in done.stderr
    return done.stderr


def test_python_dash_m_streamtools_is_the_cli(service: Path) -> None:
    done = cli("--version", cwd=service)
    assert done.stdout.strip() == f"streamtools {__version__}"
    helped = cli("asyncapi", "--help", cwd=service)
    assert "--contracts PKG" in helped.stdout


def test_queues_finds_generated_in_the_working_directory(service: Path) -> None:
    done = cli("queues", cwd=service)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["user.pings  Ping(n)"]


def test_contracts_option_and_environment_variable(service: Path) -> None:
    by_option = cli("queues", "--contracts", "other_contracts", cwd=service)
    assert by_option.stdout.splitlines() == ["user.pongs  Pong(n)"]
    by_env = cli("queues", cwd=service, env={"STREAMTOOLS_CONTRACTS": "other_contracts"})
    assert by_env.stdout.splitlines() == ["user.pongs  Pong(n)"]
    # the option wins over the variable
    both = cli(
        "queues", "--contracts", "generated", cwd=service, env={"STREAMTOOLS_CONTRACTS": "x"}
    )
    assert both.stdout.splitlines() == ["user.pings  Ping(n)"]


def test_a_missing_package_says_how_to_name_one(tmp_path: Path) -> None:
    error = _one_error(cli("queues", cwd=tmp_path))
    assert "no contracts package 'generated'" in error
    assert "--contracts PKG" in error
    error = _one_error(cli("queues", "--contracts", "nope.contracts", cwd=tmp_path))
    assert "no contracts package 'nope.contracts'" in error


def test_an_import_error_in_the_package_is_shown_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "__init__.py").write_text("import json\nimport not_installed_dep\n")
    error = _one_error(cli("queues", "--contracts", "broken", cwd=tmp_path))
    assert "importing contracts package 'broken' failed" in error
    assert "ModuleNotFoundError: No module named 'not_installed_dep'" in error
    assert f"{tmp_path / 'broken' / '__init__.py'}:2" in error
    (tmp_path / "broken" / "__init__.py").write_text("QUEUES = {}\nraise RuntimeError('boom')\n")
    error = _one_error(cli("send", "q", "{}", "--contracts", "broken", cwd=tmp_path))
    assert "RuntimeError: boom" in error


def test_send_validates_against_the_contract_and_never_skips_silently(service: Path) -> None:
    error = _one_error(cli("send", "user.pings", '{"n": 0}', "--transport", MEMORY, cwd=service))
    assert "Ping message does not match its schema" in error
    assert "$.n" in error
    error = _one_error(cli("send", "unknown.q", "{}", "--transport", MEMORY, cwd=service))
    assert "no contract for queue 'unknown.q' in 'generated' (its queues: user.pings)" in error
    assert "--raw" in error
    sent = cli("send", "unknown.q", '{"any": 1}', "--transport", MEMORY, "--raw", cwd=service)
    assert sent.returncode == 0, sent.stderr
    assert len(sent.stdout.strip()) == 32  # the message id
    ok = cli("send", "user.pings", '{"n": 2}', "--transport", MEMORY, cwd=service)
    assert ok.returncode == 0, ok.stderr


def test_the_checkout_is_not_needed(service: Path) -> None:
    # The service folder is outside the repository: nothing above came from the checkout's cwd.
    assert ROOT not in service.parents
