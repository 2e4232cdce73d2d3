"""Run mypy --strict on the case files: right uses are clean, each wrong use is an error.

A line in a `fail_*.py` case ending in `# E: code` must produce exactly that error code on that
line, and no other line may produce an error.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.typecheck import mypy_strict

CASES = Path(__file__).parent / "cases"
EXPECT = re.compile(r"#\s*E:\s*([a-z-]+)")
ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")


def run_mypy(case: Path) -> list[tuple[int, str]]:
    stdout, _ = mypy_strict(case)
    errors = []
    for line in stdout.splitlines():
        match = ERROR.match(line)
        if match and Path(match["file"]).name == case.name:
            errors.append((int(match["line"]), match["code"]))
        elif ": error:" in line:
            pytest.fail(f"unexpected mypy output: {line}")
    return errors


@pytest.mark.parametrize("case", sorted(CASES.glob("pass_*.py")), ids=lambda p: p.stem)
def test_right_uses_type_check(case: Path) -> None:
    assert run_mypy(case) == []


@pytest.mark.parametrize("case", sorted(CASES.glob("fail_*.py")), ids=lambda p: p.stem)
def test_wrong_uses_are_rejected(case: Path) -> None:
    expected = sorted(
        (number, match[1])
        for number, text in enumerate(case.read_text().splitlines(), start=1)
        if (match := EXPECT.search(text))
    )
    assert expected, f"{case.name} marks no expected error"
    assert sorted(run_mypy(case)) == expected
