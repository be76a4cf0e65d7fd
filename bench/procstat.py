"""CPU and memory of processes, read from /proc (Linux), for the benchmarks.

    cpu_seconds(pid)            # user + system CPU of one process so far
    tree(pid)                   # pid and its descendants
    peak_rss(pid) / reset_peak(pid)   # VmHWM, and its reset (needs root or the owner)
    wait_idle(pids)             # until the processes spend < 10 ms of CPU a second
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15 of stat)


def tree(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                stack.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def total_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def peak_rss(pid: int) -> int:
    """Peak resident memory (VmHWM) in bytes, 0 when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak(pid: int) -> None:
    """Start measuring the peak again (Linux: `5` into clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def wait_idle(pids: list[int], *, quiet: float = 0.01, window: float = 1.0, limit: float = 60.0) -> float:
    """Wait until ``pids`` together use less than ``quiet`` CPU-seconds per ``window``
    (a server finishing its backlog after the client returned); seconds waited."""
    t0 = time.monotonic()
    last = total_cpu(pids)
    while time.monotonic() - t0 < limit:
        time.sleep(window)
        now = total_cpu(pids)
        if now - last < quiet:
            break
        last = now
    return time.monotonic() - t0
