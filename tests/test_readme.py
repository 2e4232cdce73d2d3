"""Every Python snippet in README.md is run or type-checked, as its marker says.

A ```python block must follow a `<!-- readme-test: run -->` (executed in a subprocess from
the repository root, must exit 0), `<!-- readme-test: pytest -->` (a test module: run by
pytest in a subprocess from the repository root with the project's pytest settings, must
pass) or `<!-- readme-test: typecheck -->` (mypy --strict clean) comment; an unmarked block
fails the test, so no snippet goes unchecked. Run and pytest blocks are type-checked too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.typecheck import mypy_strict

ROOT = Path(__file__).parents[1]
BLOCK = re.compile(r"(?:<!-- readme-test: (\w+) -->\n)?```python\n(.*?)```", re.S)


def snippets() -> list[tuple[str, str, int]]:
    text = (ROOT / "README.md").read_text()
    found = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        found.append((match[1] or "unmarked", match[2], line))
    return found


SNIPPETS = snippets()


def test_readme_has_snippets_and_all_are_marked() -> None:
    assert len(SNIPPETS) >= 4
    unmarked = [line for mode, _, line in SNIPPETS if mode not in {"run", "pytest", "typecheck"}]
    assert not unmarked, f"README python blocks without a readme-test marker at lines {unmarked}"


@pytest.mark.parametrize(
    ("code", "line"),
    [(code, line) for mode, code, line in SNIPPETS if mode == "run"],
    ids=lambda v: f"line{v}" if isinstance(v, int) else "",
)
def test_runnable_snippet_runs(code: str, line: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"README line {line}:\n{result.stderr}"
    assert result.stdout.strip(), f"README line {line} printed nothing"


@pytest.mark.parametrize(
    ("code", "line"),
    [(code, line) for mode, code, line in SNIPPETS if mode == "pytest"],
    ids=lambda v: f"line{v}" if isinstance(v, int) else "",
)
def test_pytest_snippet_passes(code: str, line: int, tmp_path: Path) -> None:
    path = tmp_path / f"test_readme_line{line}.py"
    path.write_text(code)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"README line {line}:\n{result.stdout}{result.stderr}"
    assert " passed" in result.stdout, result.stdout
    assert " skipped" not in result.stdout, result.stdout


TYPED = [(code, line) for mode, code, line in SNIPPETS if mode in {"run", "pytest", "typecheck"}]


@pytest.fixture(scope="module")
def mypy_says(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    """mypy --strict's words on each snippet (by its README line), from one run over all of
    them: each snippet is a module of its own, so none sees another's names."""
    folder = tmp_path_factory.mktemp("readme")
    paths = {line: folder / f"readme_line{line}.py" for _, line in TYPED}
    for code, line in TYPED:
        paths[line].write_text(code)
    stdout, status = mypy_strict(*paths.values())
    said = {
        line: "".join(
            text for text in stdout.splitlines(keepends=True) if text.startswith(f"{path}:")
        )
        for line, path in paths.items()
    }
    unclaimed = stdout.count("\n") - sum(text.count("\n") for text in said.values())
    assert unclaimed == 0, f"mypy output naming no snippet:\n{stdout}"
    assert (status == 0) == (not stdout), stdout
    return said


@pytest.mark.parametrize(
    ("code", "line"), TYPED, ids=lambda v: f"line{v}" if isinstance(v, int) else ""
)
def test_snippet_type_checks(code: str, line: int, mypy_says: dict[int, str]) -> None:
    assert code.strip()
    assert not mypy_says[line], f"README line {line}:\n{mypy_says[line]}"
