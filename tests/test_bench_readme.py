"""benchmarks.readme: a full run's JSON becomes the README's Performance tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(quick: bool) -> dict[str, object]:
    ratio = {"ratio": 1.31, "ratio_min": 1.2, "ratio_max": 1.5}
    return {
        "date": "2026-12-05",
        "machine": "Linux x86_64, 2 cores",
        "versions": {"python": "3.11.7"},
        "rounds": 3 if quick else 7,
        "loops": ["asyncio", "uvloop"],
        "settings": {"quick": quick, "only": None, "seconds": 1260},
        "cases": [
            {
                "case": "rabbitmq consume+ack",
                "loop": loop,
                "unit": "msg/s",
                "streamtools": {"median": 12000.0},
                "contender": {"name": "aio-pika consumer, ack each"},
                **ratio,
            }
            for loop in ("asyncio", "uvloop")
        ],
        "targets": [
            {
                "target": "RabbitMQ consume+ack vs aio-pika acking each",
                "goal_text": ">= 1.3x",
                "limit": False,
                "loops": {
                    "asyncio": {"met": True, "median": 1.31, "min": 1.2, "max": 1.5},
                    "uvloop": {"met": False, "median": 1.21, "min": 1.1, "max": 1.4},
                },
            }
        ],
    }


def _write(tmp_path: Path, run: dict[str, object], *extra: str) -> tuple[int, str, str]:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# X\n\n## Performance\n\n<!-- bench:start -->\nold\n<!-- bench:end -->\nend\n"
    )
    results = tmp_path / "run.json"
    results.write_text(json.dumps(run))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.readme", str(results), "--readme", str(readme), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, readme.read_text(), done.stderr


def test_a_full_run_replaces_the_tables_between_the_markers(tmp_path: Path) -> None:
    code, text, _ = _write(tmp_path, _run(quick=False))
    assert code == 0
    assert "old" not in text
    assert text.startswith("# X\n\n## Performance\n\n<!-- bench:start -->\nFull run of 2026-12-05")
    assert text.endswith("<!-- bench:end -->\nend\n")
    assert (
        "| RabbitMQ consume+ack vs aio-pika acking each | >= 1.3x | met: 1.31x (1.20-1.50) " in text
    )
    assert "**not met**: 1.21x (1.10-1.40)" in text
    assert "1 of 2 met." in text
    assert "| rabbitmq consume+ack | aio-pika consumer, ack each | 12,000 msg/s |" in text


def test_a_quick_run_is_refused_unless_forced(tmp_path: Path) -> None:
    code, text, stderr = _write(tmp_path, _run(quick=True))
    assert code == 1
    assert "not a complete full run" in stderr
    assert "\nold\n" in text
    code, text, _ = _write(tmp_path, _run(quick=True), "--force")
    assert code == 0
    assert "\nold\n" not in text
