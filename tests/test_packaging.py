"""The built wheel, installed into fresh virtualenvs outside the repository, as a user has it.

One wheel is built per session with `scripts/dist.sh` (what `make dist` runs) from a copy of
the checkout, which must come out unchanged. Then, in a fresh venv with the wheel alone:
nothing but `streamtools` at the top level, no codegen toolchain, a missing extra named;
with `[codegen]`: a user's service in a folder of its own generates its contracts into a
package named `generated` (as the demo's once was, to catch shadowing), runs a typed round trip
on the memory transport and passes `mypy --strict` with `Producer[T]` revealed. An editable
install (`pip install -e`) must be as visible to mypy.

pip downloads from the index on the first run; its cache serves the later ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamtools._version import __version__

ROOT = Path(__file__).resolve().parents[1]
MYPY = "mypy==2.4.1"  # the dev pin; the test checks it against pyproject.toml
TIMEOUT = 600

SCHEMA = {
    "title": "OrderPlaced",
    "x-queue": "user.orders",
    "type": "object",
    "additionalProperties": False,
    "required": ["order_id", "quantity"],
    "properties": {
        "order_id": {"type": "string", "format": "uuid"},
        "quantity": {"type": "integer", "minimum": 1},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        # msgspec has no uniqueItems: the contract runs the validator from the [codegen] extra
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    },
}

SERVICE = '''\
"""A user's service: its own contracts package `generated`, the memory transport."""

import asyncio
import uuid

from generated import USER_ORDERS, OrderPlaced
from streamtools import CONSUMER_LOOPS, MEMORY, PRODUCERS, ValidationError


async def main() -> None:
    consumer = CONSUMER_LOOPS[MEMORY](USER_ORDERS)
    got: asyncio.Queue[OrderPlaced] = asyncio.Queue()

    @consumer()
    async def on_order(order: OrderPlaced) -> None:
        await got.put(order)

    await consumer.start()
    producer = PRODUCERS[MEMORY](USER_ORDERS)
    reveal_type(producer)
    async with producer:
        await producer.send(OrderPlaced(order_id=uuid.uuid4(), quantity=2, labels={"a": "b"}))
        try:
            await producer.send(OrderPlaced(order_id=uuid.uuid4(), quantity=0))
        except ValidationError as exc:
            print("refused", exc.path)
    order = await asyncio.wait_for(got.get(), 10)
    print("handled", type(order).__module__, order.quantity, order.labels)
    await consumer.close()


if __name__ == "__main__":
    asyncio.run(main())
'''

WRONG = """\
from generated import USER_ORDERS
from streamtools import MEMORY, PRODUCERS


async def send() -> None:
    await PRODUCERS[MEMORY](USER_ORDERS).send({"order_id": 1})
"""


def _run(
    *args: str | Path, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # The user's environment: no PYTHONPATH into the checkout, no active venv of ours.
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _copy_checkout(dest: Path) -> Path:
    """The checkout's files (tracked and new, not ignored) as a plain folder."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    return dest


@dataclass
class Venv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.root / "bin" / name

    def pip(self, *args: str | Path, cwd: Path) -> None:
        _run(
            self.python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *args,
            cwd=cwd,
        )

    def distributions(self, cwd: Path) -> set[str]:
        code = (
            "import importlib.metadata as m, json; "
            "print(json.dumps(sorted({d.metadata['Name'].lower() for d in m.distributions()})))"
        )
        return set(json.loads(_run(self.python, "-c", code, cwd=cwd).stdout))


def _make_venv(path: Path) -> Venv:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return Venv(path)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkout copy, dist dir): `scripts/dist.sh` run in a copy, dist written outside it."""
    copy = _copy_checkout(tmp_path_factory.mktemp("checkout"))
    before = _tree(copy)
    dist = tmp_path_factory.mktemp("dist")
    done = _run(
        "bash", "scripts/dist.sh", cwd=copy, env={"PYTHON": sys.executable, "DIST_DIR": str(dist)}
    )
    assert done.stdout.startswith("dist: "), done.stdout + done.stderr
    assert _tree(copy) == before, "building changed the source tree"
    return copy, dist


@pytest.fixture(scope="session")
def wheel(built: tuple[Path, Path]) -> Path:
    [found] = built[1].glob("*.whl")
    return found


@dataclass
class WheelInstall:
    venv: Venv
    user: Path
    base_distributions: set[str]
    base_codegen: subprocess.CompletedProcess[str]
    base_http: subprocess.CompletedProcess[str]
    base_generated: subprocess.CompletedProcess[str]
    version: subprocess.CompletedProcess[str]


@pytest.fixture(scope="session")
def wheel_install(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> WheelInstall:
    """A fresh venv with the wheel alone (observed), then with `[codegen]` and mypy added."""
    env = _make_venv(tmp_path_factory.mktemp("venv-wheel") / "venv")
    user = tmp_path_factory.mktemp("user-service")
    env.pip(wheel, cwd=user)
    base = WheelInstall(
        venv=env,
        user=user,
        base_distributions=env.distributions(user),
        base_codegen=_run(
            env.bin("streamtools"), "codegen", "schemas", "generated", cwd=user, check=False
        ),
        base_http=_run(
            env.python,
            "-c",
            "from streamtools import PRODUCERS, ConfigurationError\n"
            "try:\n    PRODUCERS['http']\nexcept ConfigurationError as exc:\n    print(exc)",
            cwd=user,
        ),
        base_generated=_run(env.python, "-c", "import generated", cwd=user, check=False),
        version=_run(env.bin("streamtools"), "--version", cwd=user),
    )
    env.pip(f"{wheel}[codegen]", MYPY, cwd=user)
    return base


def test_the_wheel_alone_installs_streamtools_and_no_codegen_toolchain(
    wheel: Path, wheel_install: WheelInstall
) -> None:
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
    assert tops == {"streamtools", f"streamtools-{__version__}.dist-info"}
    installed = wheel_install.base_distributions
    assert "streamtools" in installed
    assert installed.isdisjoint({"pydantic", "black", "isort", "jsonschema-rs", "jsonschema_rs"})
    assert installed.isdisjoint({"aiohttp", "aio-pika"})  # transports are extras
    assert "No module named 'generated'" in wheel_install.base_generated.stderr
    assert wheel_install.version.stdout.strip() == f"streamtools {__version__}"


def test_missing_extras_are_named(wheel_install: WheelInstall) -> None:
    codegen_run = wheel_install.base_codegen
    assert codegen_run.returncode == 2
    assert codegen_run.stdout == ""
    assert codegen_run.stderr.count("\n") == 1, codegen_run.stderr
    assert "pip install 'streamtools[codegen]'" in codegen_run.stderr
    assert wheel_install.base_http.stdout.strip() == (
        "the HTTPHandler transport needs aiohttp, which is not installed: "
        "pip install 'streamtools[http]'"
    )


def test_a_users_service_generates_runs_and_type_checks(wheel_install: WheelInstall) -> None:
    env, user = wheel_install.venv, wheel_install.user
    (user / "schemas").mkdir()
    (user / "schemas" / "order_placed.json").write_text(json.dumps(SCHEMA))
    generated = _run(env.bin("streamtools"), "codegen", "schemas", "generated", cwd=user)
    assert generated.stdout.strip() == "wrote 3 files to generated"
    (user / "service.py").write_text(SERVICE.replace("    reveal_type(producer)\n", ""))
    ran = _run(env.python, "service.py", cwd=user)
    assert ran.stdout.splitlines() == [
        "refused $.quantity",
        "handled generated.order_placed 2 {'a': 'b'}",
    ]
    # The console script finds the user's contracts the way `python -m` would: cwd first.
    queues = _run(env.bin("streamtools"), "queues", cwd=user)
    assert queues.stdout.split()[:2] == ["user.orders", "OrderPlaced(order_id,"]

    (user / "service.py").write_text(SERVICE)
    (user / "wrong.py").write_text(WRONG)
    checked = _run(env.bin("mypy"), "--strict", "service.py", "wrong.py", cwd=user, check=False)
    assert 'Revealed type is "streamtools._base.Producer[generated.order_placed.OrderPlaced]"' in (
        checked.stdout
    ), checked.stdout
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, checked.stdout
    assert errors[0].startswith("wrong.py:6: error: ")
    assert "[arg-type]" in errors[0]


def test_an_editable_install_is_visible_to_mypy(
    built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    copy = built[0]
    before = _tree(copy)
    env = _make_venv(tmp_path_factory.mktemp("venv-editable") / "venv")
    user = tmp_path_factory.mktemp("user-editable")
    env.pip("-e", copy, MYPY, cwd=user)
    assert _tree(copy) == before, "the editable install wrote into the source tree"
    pth = [
        p for p in (env.root / "lib").glob("python*/site-packages/*.pth") if "streamtools" in p.name
    ]
    assert len(pth) == 1, pth
    assert pth[0].read_text().strip() == str(copy / "src")  # a plain path: mypy follows it
    (user / "svc.py").write_text(
        textwrap.dedent(
            """\
            import msgspec

            from streamtools import MEMORY, PRODUCERS, Queue


            class Point(msgspec.Struct):
                x: int


            class Other(msgspec.Struct):
                y: int


            POINTS = Queue("points", Point)


            async def send() -> None:
                producer = PRODUCERS[MEMORY](POINTS)
                reveal_type(producer)
                await producer.send(Other(y=1))
            """
        )
    )
    checked = _run(env.bin("mypy"), "--strict", "svc.py", cwd=user, check=False)
    assert 'Revealed type is "streamtools._base.Producer[svc.Point]"' in checked.stdout, (
        checked.stdout
    )
    assert re.search(r"svc\.py:20: error: .*\[arg-type\]", checked.stdout), checked.stdout


def test_versions_and_pins_are_written_once() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dynamic"] == ["version"]
    assert "version" not in project
    extras = project["optional-dependencies"]
    assert extras["codegen"] == extras["validator"] == ["jsonschema-rs>=0.61,<1"]
    assert "jsonschema-rs==0.61.2" in extras["dev"]
    assert MYPY in extras["dev"]
    assert not any(
        dep.startswith(("datamodel", "aiohttp", "aio-pika")) for dep in project["dependencies"]
    )
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {__version__}" in changelog
