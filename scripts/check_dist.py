"""Check the built sdist and wheel in DIST_DIR: `python scripts/check_dist.py dist`.

The wheel holds the `streamtools` package only (no demo contracts, no tests), with py.typed;
its version is the one of src/streamtools/_version.py; the codegen toolchain is an extra,
never a base requirement; the sdist holds no caches, virtualenvs or build leftovers.
Prints one line per problem and exits 1 if there is any.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_FORBIDDEN = ("jsonschema-rs", "datamodel-code-generator", "pydantic")
SDIST_FORBIDDEN = re.compile(r"(^|/)(\.venv|__pycache__|build|dist|\.git|[^/]*\.egg-info)(/|$)")


def version() -> str:
    text = (ROOT / "src" / "streamtools" / "_version.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if match is None:
        raise SystemExit("src/streamtools/_version.py has no __version__ line")
    return match.group(1)


def check_wheel(path: Path, expected: str) -> list[str]:
    problems = []
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        dist_info = f"streamtools-{expected}.dist-info"
        tops = {name.split("/", 1)[0] for name in names}
        if tops != {"streamtools", dist_info}:
            problems.append(f"{path.name}: top-level entries {sorted(tops)}, expected streamtools")
        if "streamtools/py.typed" not in names:
            problems.append(f"{path.name}: no streamtools/py.typed")
        problems += [f"{path.name}: holds {n}" for n in names if "__pycache__" in n]
        metadata = Parser().parsestr(wheel.read(f"{dist_info}/METADATA").decode())
    if metadata["Version"] != expected:
        problems.append(f"{path.name}: version {metadata['Version']}, expected {expected}")
    for requirement in metadata.get_all("Requires-Dist") or []:
        name = re.split(r"[ ;<>=!~\[]", requirement, maxsplit=1)[0].lower()
        if name in BASE_FORBIDDEN and "extra ==" not in requirement:
            problems.append(f"{path.name}: base requirement {requirement!r}")
    extras = set(metadata.get_all("Provides-Extra") or [])
    problems += [
        f"{path.name}: no [{extra}] extra"
        for extra in ("codegen", "http", "rabbitmq")
        if extra not in extras
    ]
    return problems


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as sdist:
        names = sdist.getnames()
    return [f"{path.name}: holds {name}" for name in names if SDIST_FORBIDDEN.search(name)]


def main(argv: list[str]) -> int:
    dist = Path(argv[1] if len(argv) > 1 else "dist")
    expected = version()
    wheels = sorted(dist.glob(f"streamtools-{expected}-*.whl"))
    sdists = sorted(dist.glob(f"streamtools-{expected}.tar.gz"))
    problems = []
    if len(wheels) != 1 or len(sdists) != 1:
        problems.append(f"{dist}: expected one wheel and one sdist of {expected}")
    for wheel in wheels:
        problems += check_wheel(wheel, expected)
    for sdist in sdists:
        problems += check_sdist(sdist)
    for problem in problems:
        print(f"dist: {problem}", file=sys.stderr)
    if not problems:
        print(f"dist: {', '.join(p.name for p in [*sdists, *wheels])} ok")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
