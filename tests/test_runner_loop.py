"""`ConsumerRunner.run()` on uvloop when installed (`streamtools[speed]`), opt-out (#14)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streamtools import CONSUMER_LOOPS, MEMORY, ConfigurationError, ConsumerRunner

INSTALLED = importlib.util.find_spec("uvloop") is not None

# A service that reports the loop it served on, stopped by SIGTERM from inside.
SERVICE = textwrap.dedent(
    """
    import asyncio, os, signal, sys, threading
    from streamtools import MEMORY, CONSUMER_LOOPS, ConsumerRunner

    consumer = CONSUMER_LOOPS[MEMORY]("loop.q")

    @consumer()
    async def handle(msg: object) -> None: ...

    wanted = {"default": None, "on": True, "off": False}[sys.argv[1]]
    runner = ConsumerRunner([consumer], uvloop=wanted, metrics=False)

    async def report() -> None:
        print(type(asyncio.get_running_loop()).__module__, flush=True)

    runner.on_shutdown.append(report)
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    runner.run()
    """
)


def serve(tmp_path: Path, wanted: str, **env: str) -> str:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    done = subprocess.run(
        [sys.executable, str(script), wanted],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_runner_serves_on_uvloop_when_installed_unless_told_not_to(tmp_path: Path) -> None:
    assert serve(tmp_path, "default") == ("uvloop" if INSTALLED else "asyncio.unix_events")
    assert serve(tmp_path, "off") == "asyncio.unix_events"
    assert serve(tmp_path, "default", STREAMTOOLS_UVLOOP="0") == "asyncio.unix_events"
    if INSTALLED:
        assert serve(tmp_path, "on") == "uvloop"


def test_uvloop_settings_are_checked_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = CONSUMER_LOOPS[MEMORY]("loop.settings")

    @consumer()
    async def handle(msg: object) -> None: ...

    if not INSTALLED:
        with pytest.raises(ConfigurationError, match=r"streamtools\[speed\]"):
            ConsumerRunner([consumer], uvloop=True, metrics=False)
    assert ConsumerRunner([consumer], uvloop=False, metrics=False).uvloop is False
    monkeypatch.setenv("STREAMTOOLS_UVLOOP", "maybe")
    with pytest.raises(ConfigurationError, match="STREAMTOOLS_UVLOOP must be 1 or 0"):
        ConsumerRunner([consumer], metrics=False)
    monkeypatch.setenv("STREAMTOOLS_UVLOOP", "off")
    assert ConsumerRunner([consumer], metrics=False).uvloop is False
