"""python -m bench.ab --base REV: this checkout's gateway against another commit's, in alternation.

A page of `make bench` compares systems within one run; two pages written on different days do
not compare at all on a shared machine (the same commit measured an hour apart differed by half).
To judge a change of the serving path, this runs the stack of commit REV (a temporary git
worktree) and of this checkout in turns, round after round, with the same repository, the same
perf_analyzer load and the same interpreter, and prints the median of each side per level and
their ratio. Both stacks run with the packages on PYTHONPATH (no editable install), so each
imports its own code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from bench.perf import PerfSettings, Target, find_perf_analyzer, input_data, measure
from bench.results import LoadRow
from bench.serving import key_value
from bench.stack import ROOT, log, perf_repository, running_stack


def worktree(rev: str, into: Path) -> Path:
    """REV checked out beside this checkout, its protobuf code generated as its Makefile would."""
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(into), rev], cwd=ROOT, check=True,
                   capture_output=True)
    subprocess.run(["sh", "protos/generate.sh"], cwd=into, check=True, env={**os.environ, "PYTHON": sys.executable})
    return into


def side_env(tree: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    site = sysconfig.get_paths()["purelib"]  # this environment's packages, without its .pth files
    return {**os.environ, **(extra or {}), "PYTHONPATH": os.pathsep.join([str(tree), site])}


def by_process(rows: list[LoadRow]) -> str:
    """Median CPU seconds per 1,000 requests of each serving process over the rounds (a change
    to one process shows there even when the others' noise swamps the total)."""
    shares: dict[str, list[float]] = {}
    for r in rows:
        if r.requests <= 0:
            continue
        for label, usage in r.usage.items():
            shares.setdefault(label, []).append(usage.cpu_s / r.requests * 1000)
    return " · ".join(f"{label} {statistics.median(v):.3f}" for label, v in sorted(shares.items()))


def table(rows: dict[str, list[LoadRow]], levels: list[int], base: str) -> str:
    lines = ["| c | side | infer/s (median) | p50 ms | p99 ms | CPU s / 1k | CPU s / 1k by process | rounds |",
             "|---|---|---|---|---|---|---|---|"]
    medians: dict[tuple[str, int], float] = {}
    for c in levels:
        for side, measured in rows.items():
            at = [r for r in measured if r.concurrency == c]
            if not at:
                continue
            medians[side, c] = statistics.median(r.throughput for r in at)
            cpu = [r.cpu_per_1k for r in at if r.cpu_per_1k is not None]
            lines.append(f"| {c} | {side} | {medians[side, c]:,.1f} | {statistics.median(r.p50_ms for r in at):.2f} | "
                         f"{statistics.median(r.p99_ms for r in at):.2f} | "
                         f"{statistics.median(cpu) if cpu else float('nan'):.3f} | {by_process(at)} | "
                         f"{', '.join(f'{r.throughput:,.0f}' for r in at)} |")
    lines.append("")
    for c in levels:
        for side in rows:
            if side != base and (side, c) in medians and (base, c) in medians:
                lines.append(f"- c={c}: {side} ×{medians[side, c] / medians[base, c]:.2f} of {base}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare with (e.g. HEAD~3, a hash)")
    parser.add_argument("--model", default="mnist_mlp", help="model of the repository to load (default mnist_mlp)")
    parser.add_argument("--concurrency", default="1,16,64", help="perf_analyzer levels, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each side, alternating who goes first")
    parser.add_argument("--window-ms", type=int, default=2000, help="perf_analyzer measurement window")
    parser.add_argument("--stability", type=float, default=20.0, help="perf_analyzer stability percentage")
    parser.add_argument("--perf-analyzer", help="the perf_analyzer binary (default: beside this Python)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", type=key_value,
                        help="an environment variable for this checkout's stack only, e.g. "
                        "TENSORGATE_MODEL_INLINE_BATCH_MAX_US=1000 (with --base HEAD: a setting against its "
                        "default on the same code); repeat for more")
    args = parser.parse_args(argv)
    extra = dict(args.env)
    levels = [int(c) for c in args.concurrency.split(",")]
    python = getattr(sys, "_base_executable", sys.executable)
    with tempfile.TemporaryDirectory(prefix="tensorgate-ab-") as tmp_name:
        tmp = Path(tmp_name)
        base_tree = worktree(args.base, tmp / "base")
        try:
            repo = perf_repository(ROOT / "models", tmp / "repo")
            settings = PerfSettings(find_perf_analyzer(args.perf_analyzer), tmp,
                                    input_data={args.model: input_data(repo / args.model, tmp / "input.json")})
            label = "this checkout" + (f" ({' '.join(f'{k}={v}' for k, v in extra.items())})" if extra else "")
            sides = [(args.base, base_tree, {}), (label, ROOT, extra)]
            rows: dict[str, list[LoadRow]] = {name: [] for name, _, _ in sides}
            for turn in range(args.rounds):
                for name, tree, env in (sides if turn % 2 == 0 else sides[::-1]):
                    log(f"round {turn + 1}/{args.rounds}: {name}")
                    with running_stack([args.model], repo, 120.0, side_env(tree, env), tree, python) as stack:
                        target = Target(name, stack.url, stack.processes(), args.window_ms, args.stability)
                        rows[name] += [r for r in measure(target, args.model, levels, settings) if isinstance(r, LoadRow)]
            print(f"\n{args.model}, gateway unary, {args.rounds} alternating rounds, "
                  f"`python -m bench.ab --base {args.base} --concurrency {args.concurrency} --rounds {args.rounds}"
                  + "".join(f" --env {k}={v}" for k, v in extra.items()) + "`:\n")
            print(table(rows, levels, args.base))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
