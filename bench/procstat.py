"""CPU time and resident memory of serving processes, read from /proc (no psutil).

A `Sample` maps each pid to its label and its CPU seconds (utime + stime of all its threads). Two
samples taken around one load level give each process's CPU over exactly that span; processes that
appear or vanish in between count from zero or to their last reading.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.results import ProcessUsage

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_stat_cpu(text: str, ticks: int = CLOCK_TICKS) -> float:
    """utime + stime in seconds from the text of /proc/<pid>/stat.

    The command name (field 2) is in parentheses and may hold spaces or ')', so the fields are
    counted from the last ')': state is then field 3, utime 14 and stime 15 (man 5 proc)."""
    rest = text[text.rindex(")") + 2:].split()
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / ticks


def parse_rss_kib(text: str) -> int:
    """VmRSS in KiB from the text of /proc/<pid>/status (0 for a kernel thread or a zombie)."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def label(argv: Sequence[str]) -> str:
    """A short, stable name for a serving process from its command line."""
    if not argv:
        return "?"
    joined = " ".join(argv)
    base = os.path.basename(argv[0])
    if "services.gateway" in argv:
        return "gateway"
    if "services.modelservice" in argv:
        name = argv[argv.index("--name") + 1] if "--name" in argv[:-1] else "?"
        return f"model service {name}"
    if base.startswith("redis-server"):
        return "redis-server"
    if base == "tritonserver":
        return "tritonserver"
    if base == "triton_python_backend_stub":
        return f"backend stub {argv[-2]}" if len(argv) >= 3 else "backend stub"
    if "bench.pytriton_server" in argv:
        return "PyTriton (bound functions)"
    if "multiprocessing" in joined:
        return "PyTriton helpers"
    return base


def children(pid: int, proc: Path = PROC) -> list[int]:
    """Direct children of pid, from /proc/<pid>/task/*/children."""
    found: list[int] = []
    for task in (proc / str(pid) / "task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def descendants(pid: int, proc: Path = PROC) -> list[int]:
    """Every process below pid (children, grandchildren, ...), pid itself excluded."""
    out, todo = [], [pid]
    while todo:
        for child in children(todo.pop(), proc):
            if child not in out:
                out.append(child)
                todo.append(child)
    return out


def argv_of(pid: int, proc: Path = PROC) -> list[str]:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


@dataclass
class Reading:
    label: str
    cpu_s: float
    rss_kib: int


Sample = dict[int, Reading]


def sample(pids: Iterable[int], proc: Path = PROC) -> Sample:
    """CPU seconds and RSS of each pid that is still there."""
    out: Sample = {}
    for pid in pids:
        try:
            stat = (proc / str(pid) / "stat").read_text()
            status = (proc / str(pid) / "status").read_text()
        except OSError:
            continue
        out[pid] = Reading(label(argv_of(pid, proc)), parse_stat_cpu(stat), parse_rss_kib(status))
    return out


def usage(before: Sample, after: Sample) -> dict[str, ProcessUsage]:
    """CPU seconds spent between two samples and RSS at the second, summed per label.

    A pid only in `after` (or reused by another process) started during the span and counts from
    zero; a pid only in `before` ended during it and its CPU after that reading is lost (it shows as
    zero: serving processes do not end mid-level unless something broke)."""
    out: dict[str, ProcessUsage] = {}
    for pid, now in after.items():
        then = before.get(pid)
        spent = now.cpu_s - (then.cpu_s if then is not None and then.label == now.label else 0.0)
        entry = out.setdefault(now.label, ProcessUsage(0.0, 0.0))
        entry.cpu_s += max(0.0, spent)
        entry.rss_mib += now.rss_kib / 1024
    for pid, then in before.items():
        if pid not in after or after[pid].label != then.label:
            out.setdefault(then.label, ProcessUsage(0.0, 0.0))
    return out


class ProcessGroup:
    """The serving processes under one root pid; `include_root` when the root serves too."""

    def __init__(self, root: int, include_root: bool = False, proc: Path = PROC) -> None:
        self.root = root
        self.include_root = include_root
        self.proc = proc

    def pids(self) -> list[int]:
        found = descendants(self.root, self.proc)
        return [self.root, *found] if self.include_root else found

    def sample(self) -> Sample:
        return sample(self.pids(), self.proc)
