"""A py-spy profile of serving processes under load, summarised as top self and inclusive frames.

`py-spy record --format raw --function` writes collapsed stacks, one line per distinct stack:
`outer (file.py:10);inner (file.py:42) <samples>`. Self time is the last frame of a stack,
inclusive time every distinct frame in it. py-spy leaves out idle samples (threads waiting in
epoll or a lock), so the shares are of the time the process was busy.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from bench.stack import log

PY_SPY = "py-spy==0.4.3"
# Frames every busy sample of a thread passes through (interpreter start-up, the event loop's and the
# thread pool's own loops): left out of the inclusive list, where they would fill the top rows.
PLUMBING = ("(<frozen runpy>", "(asyncio/runners.py", "(asyncio/base_events.py", "(asyncio/events.py",
            "(threading.py", "(concurrent/futures/thread.py", "<module> (")


def find_py_spy(install_dir: Path) -> str:
    """py-spy beside this Python, on PATH, or installed from PyPI into install_dir (once)."""
    for candidate in (Path(sys.executable).parent / "py-spy", install_dir / "bin" / "py-spy"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("py-spy")
    if found:
        return found
    log(f"installing {PY_SPY} into {install_dir}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(install_dir), PY_SPY], check=True)
    return str(install_dir / "bin" / "py-spy")


def parse_raw(text: str) -> Counter[tuple[str, ...]]:
    """Collapsed stacks -> samples per stack (outermost frame first)."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        stack, _, count = line.strip().rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


Ranked = list[tuple[str, int]]


def top_frames(stacks: Mapping[tuple[str, ...], int], n: int = 12) -> tuple[int, Ranked, Ranked]:
    """(total samples, top self frames, top inclusive frames), counts in samples."""
    total = sum(stacks.values())
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        if not stack:
            continue
        own[stack[-1]] += count
        for frame in set(stack):  # a recursive frame counts once per sample
            if not any(mark in frame for mark in PLUMBING):
                inclusive[frame] += count
    return total, own.most_common(n), inclusive.most_common(n)


def excerpt(name: str, stacks: Mapping[tuple[str, ...], int], n: int = 12) -> str:
    total, own, inclusive = top_frames(stacks, n)
    if not total:
        return f"#### {name}\n\nno busy samples"
    lines = [f"#### {name} ({total:,} busy samples)", "", "| self % | frame | | inclusive % (without event-loop "
             "and thread plumbing) | frame |",
             "|---:|---|---|---:|---|"]
    for i in range(max(len(own), len(inclusive))):
        a = f"{100 * own[i][1] / total:.1f} | `{own[i][0]}`" if i < len(own) else " | "
        b = f"{100 * inclusive[i][1] / total:.1f} | `{inclusive[i][0]}`" if i < len(inclusive) else " | "
        lines.append(f"| {a} | | {b} |")
    return "\n".join(lines)


def record(py_spy: str, pids: Mapping[str, int], seconds: float, workdir: Path) -> dict[str, Counter[tuple[str, ...]]]:
    """Sample each named pid for `seconds`, all at once; the parsed stacks per name."""
    running = {}
    for name, pid in pids.items():
        out = workdir / f"profile-{pid}.txt"
        argv = [py_spy, "record", "--format", "raw", "--function", "--nonblocking", "--rate", "200",
                "--duration", str(max(1, round(seconds))), "--pid", str(pid), "--output", str(out)]
        running[name] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), out)
    stacks = {}
    for name, (process, out) in running.items():
        _, err = process.communicate(timeout=seconds + 60)
        if process.returncode != 0 or not out.exists():
            log(f"py-spy on {name} failed: {err.strip()[-500:]}")
            continue
        stacks[name] = parse_raw(out.read_text())
    return stacks
