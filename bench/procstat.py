"""CPU and memory of processes, read from /proc (Linux), for the benchmarks.

    cpu_seconds(pid)            # user + system CPU of one process so far
    tree(pid)                   # pid and its descendants
    peak_rss(pid) / reset_peak(pid)   # VmHWM, and its reset (needs root or the owner)
    idle_rate(pids)             # CPU-seconds per second the processes spend doing nothing asked
    wait_idle(pids, rate)       # until they are back at that rate
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


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


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


def idle_rate(pids: list[int], seconds: float = 10.0) -> float:
    """CPU-seconds per second that ``pids`` spend when nobody asks them anything (a server's
    own loops: Prefect's services poll every few seconds), measured over ``seconds``."""
    c0, t0 = total_cpu(pids), time.monotonic()
    time.sleep(seconds)
    return (total_cpu(pids) - c0) / (time.monotonic() - t0)


def wait_idle(pids: list[int], rate: float = 0.0, *, window: float = 2.0, margin: float = 0.01,
              limit: float = 120.0) -> float:
    """Wait until ``pids`` together are back at their idle ``rate`` (within ``margin``
    CPU-seconds per second, over ``window`` seconds): a server finishing its backlog after
    the client returned. Returns the seconds waited."""
    t0 = time.monotonic()
    last, stamp = total_cpu(pids), time.monotonic()
    while time.monotonic() - t0 < limit:
        time.sleep(window)
        now, at = total_cpu(pids), time.monotonic()
        if (now - last) / (at - stamp) < rate + margin:
            break
        last, stamp = now, at
    return time.monotonic() - t0
