"""Write the README's Performance tables from a `make bench` run's JSON.

python -m benchmarks.readme [JSON] [--readme README.md] [--force]

Replaces what stands between the `<!-- bench:start -->` and `<!-- bench:end -->` markers of
the README with the run's machine, versions, the Targets table of issues #14 and #24 (per
event loop) and every case's ratio. Only a complete full run (`make bench`: every case, 7
rounds, both loops) is written unless `--force`: a quick or filtered run says too little.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.run import RESULTS

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _ratio(record: dict[str, Any]) -> str:
    if record.get("ratio") is None:
        return "-"
    return f"{record['ratio']:.2f}x ({record['ratio_min']:.2f}-{record['ratio_max']:.2f})"


def _value(record: dict[str, Any]) -> str:
    median = record["streamtools"].get("median")
    if median is None:
        return "-"
    unit = record.get("unit", "msg/s")
    if unit == "s":
        return f"{median * 1e6:,.0f} us"
    if unit == "MiB":
        return f"{median:.2f} MiB"
    return f"{median:,.0f} {unit}"


def render(run: dict[str, Any]) -> str:
    loops: list[str] = run.get("loops") or ["asyncio"]
    settings = run.get("settings", {})
    minutes = settings.get("seconds", 0) / 60
    versions = ", ".join(f"{k} {v}" for k, v in run["versions"].items())
    lines = [
        f"Full run of {run.get('date', '?')} (`make bench`: {run['rounds']} rounds, "
        f"{' and '.join(loops)}, {minutes:.0f} minutes): {run['machine']}; {versions}.",
        "",
        "The targets of issues #14 and #24 (median of the per-round ratios streamtools / raw, "
        "min-max over rounds; memory: MiB grown):",
        "",
        "| target | goal (issue) | " + " | ".join(loops) + " |",
        "|---|---|" + "---|" * len(loops),
    ]
    met = total = 0
    for target in run.get("targets", []):
        cells = []
        for loop in loops:
            outcome = target["loops"].get(loop)
            if outcome is None:
                cells.append("not run")
                continue
            total += 1
            if outcome["met"]:
                met += 1
            verdict = {True: "met", False: "**not met**", None: "failed"}[outcome["met"]]
            if outcome["median"] is None:
                cells.append(verdict)
            elif target["limit"]:
                cells.append(f"{verdict}: {outcome['median']:.2f} MiB")
            else:
                cells.append(
                    f"{verdict}: {outcome['median']:.2f}x "
                    f"({outcome['min']:.2f}-{outcome['max']:.2f})"
                )
        lines.append(f"| {target['target']} | {target['goal_text']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"{met} of {total} met.",
        "",
        "Every case (ratio > 1.00x: streamtools is better):",
    ]
    lines += [
        "",
        "| case | contender | streamtools ("
        + loops[0]
        + ") | "
        + " | ".join(f"ratio {loop}" for loop in loops)
        + " |",
        "|---|---|---|" + "---|" * len(loops),
    ]
    rows: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for record in run["cases"]:
        contender = (record.get("contender") or {}).get("name", "-")
        rows.setdefault((record["case"], contender), {})[record["loop"]] = record
    for (case, contender), by_loop in rows.items():
        first = by_loop.get(loops[0]) or next(iter(by_loop.values()))
        ratios = [
            _ratio(by_loop[loop]) if loop in by_loop and contender != "-" else "-" for loop in loops
        ]
        lines.append(f"| {case} | {contender} | {_value(first)} | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("json", nargs="?", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--force", action="store_true", help="write a quick or filtered run too")
    args = parser.parse_args()
    if not args.json.exists():
        print(f"{args.json}: no benchmark results; run make bench first", file=sys.stderr)
        return 1
    run = json.loads(args.json.read_text())
    settings = run.get("settings", {})
    if not args.force and (settings.get("quick") or settings.get("only") or run["rounds"] < 5):
        print(
            f"{args.json}: not a complete full run (quick, filtered or under 5 rounds); "
            "run make bench, or pass --force",
            file=sys.stderr,
        )
        return 1
    text = args.readme.read_text()
    if START not in text or END not in text:
        print(f"{args.readme}: no {START} ... {END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    args.readme.write_text(f"{head}{START}\n{render(run)}\n{END}{tail}")
    print(f"{args.readme}: Performance tables written from {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
