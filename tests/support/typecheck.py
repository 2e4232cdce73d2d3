"""mypy --strict with the project's settings, in a process of its own.

Run in-process (`mypy.api.run`), mypy changes the whole interpreter for good: it raises the
recursion limit (the deep-nesting tests depend on the default), sets the collector to wait
for 200,000 new objects between collections (700 by default) and keeps about 300,000
objects of its own alive. Every later test then ran its event loop through collections of
0.1-0.6 s, enough for a 1 s `ack_wait` to redeliver a message whose heartbeat could not run.
A process of its own costs about half a second a run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def mypy_strict(*paths: Path) -> tuple[str, int]:
    """mypy's report on `paths` (from the repository root, so `examples` imports) and its
    exit status; fails the test on anything mypy writes to stderr (a crash, a bad option)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir=/dev/null",
            "--no-error-summary",
            "--show-error-codes",
            *map(str, paths),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert not done.stderr, done.stderr
    return done.stdout, done.returncode
