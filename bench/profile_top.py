"""The top costs in a py-spy profile (``py-spy record -f raw``: one collapsed stack a line).

    python bench/profile_top.py bench/profiles/wide-server.txt [--top 15]

For each file: the samples, then the functions with the largest share of samples, counted
inclusively (a function anywhere on the stack, once per stack) and by self (the frame
that was running), and the share of each area (the package that owns the innermost
frame of interest: SQLite, SQLAlchemy, pydantic, Prefect's engine, events, logging...).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

# An area is the first of these found in a stack, from the innermost frame outwards.
AREAS = [
    ("SQLite / aiosqlite", re.compile(r"aiosqlite|sqlite3")),
    ("SQLAlchemy", re.compile(r"sqlalchemy")),
    ("pydantic", re.compile(r"pydantic")),
    ("JSON", re.compile(r"\bjson\b|orjson")),
    ("openai SDK / httpx / httpcore", re.compile(r"openai|httpx|httpcore|h11|anyio/streams")),
    ("websockets", re.compile(r"websockets")),
    ("logging", re.compile(r"logging")),
    ("events", re.compile(r"prefect/(server/)?events")),
    ("Prefect task engine", re.compile(r"prefect/task_engine|prefect/tasks\.py|prefect/_internal/concurrency")),
    ("Prefect results / cache", re.compile(r"prefect/results|prefect/cache_policies|prefect/filesystems")),
    ("Prefect server API", re.compile(r"prefect/server/(api|models|orchestration)")),
    ("Prefect server services", re.compile(r"prefect/server/services|docket")),
    ("Orchestra", re.compile(r"\((flows|agents|core|ledger|orchestra|blocks)/")),
    ("asyncio", re.compile(r"asyncio")),
]
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def frames(stack: str) -> list[str]:
    out = []
    for raw in stack.split(";"):
        m = _FRAME.match(raw.strip())
        out.append(f"{m['func']} ({m['file']})" if m else raw.strip())
    return out


def area(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, pattern in AREAS:
            if pattern.search(frame):
                return name
    return "other"


def summarize(path: Path, top: int = 15) -> str:
    inclusive: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        fs = frames(stack)
        total += n
        for f in set(fs):
            inclusive[f] += n
        if fs:
            self_[fs[-1]] += n
        areas[area(fs)] += n
    if not total:
        return f"## {path.name}\n\nno samples\n"
    out = [f"## {path.name}: {total} samples ({total / 100:.1f} CPU-s at 100 Hz)", "",
           "| area (innermost frame) | share |", "| --- | ---: |"]
    out += [f"| {a} | {n / total:.0%} |" for a, n in areas.most_common()]
    out += ["", "| function (inclusive) | share |", "| --- | ---: |"]
    out += [f"| `{f}` | {n / total:.0%} |" for f, n in inclusive.most_common(top)]
    out += ["", "| function (self) | share |", "| --- | ---: |"]
    out += [f"| `{f}` | {n / total:.0%} |" for f, n in self_.most_common(top)]
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    for path in args.files:
        print(summarize(path, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
