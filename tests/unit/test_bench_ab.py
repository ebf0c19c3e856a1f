"""bench.ab: the table of two sides measured in alternation, and the environment each runs with."""

from __future__ import annotations

import os
from pathlib import Path

from bench.ab import by_process, side_env, table
from bench.results import LoadRow, ProcessUsage


def row(side: str, c: int, throughput: float) -> LoadRow:
    return LoadRow(concurrency=c, throughput=throughput, p50_ms=2.0, p95_ms=3.0, p99_ms=4.0, avg_ms=2.0,
                   queue_ms=0.5, compute_ms=0.2, system=side, model="mnist_mlp")


def test_the_table_gives_medians_per_side_and_the_ratio() -> None:
    rows = {"abc123": [row("abc123", 16, t) for t in (1000, 1600, 1100)],
            "this checkout": [row("this checkout", 16, t) for t in (1200, 1000, 1320)]}
    text = table(rows, [16], "abc123")
    assert "| 16 | abc123 | 1,100.0 |" in text and "| 16 | this checkout | 1,200.0 |" in text
    assert "- c=16: this checkout ×1.09 of abc123" in text
    assert "1,000, 1,600, 1,100" in text  # every round shown, so the noise is visible


def test_each_process_gets_its_median_cpu_per_request() -> None:
    rounds = []
    for gateway_s, service_s in ((0.5, 0.3), (0.4, 0.2), (0.9, 0.25)):
        r = row("abc123", 16, 1000)
        r.requests = 1000
        r.usage = {"gateway": ProcessUsage(gateway_s, 70), "model service mnist_mlp": ProcessUsage(service_s, 110)}
        rounds.append(r)
    rounds.append(row("abc123", 16, 900))  # no requests counted: left out, not a division by zero
    assert by_process(rounds) == "gateway 0.500 · model service mnist_mlp 0.250"
    assert "gateway 0.500 · model service mnist_mlp 0.250" in table({"abc123": rounds}, [16], "abc123")


def test_each_side_imports_its_own_tree_first(tmp_path: Path) -> None:
    path = side_env(tmp_path)["PYTHONPATH"].split(":")
    assert path[0] == str(tmp_path) and path[1].endswith("site-packages")


def test_a_setting_against_its_default_on_the_same_code(tmp_path: Path) -> None:
    env = side_env(tmp_path, {"TENSORGATE_MODEL_INLINE_BATCH_MAX_US": "1000"})
    assert env["TENSORGATE_MODEL_INLINE_BATCH_MAX_US"] == "1000"
    assert env["PYTHONPATH"].split(":")[0] == str(tmp_path)  # an --env cannot move the side off its tree
    base = side_env(tmp_path)  # the other side: only what this shell has
    assert base.get("TENSORGATE_MODEL_INLINE_BATCH_MAX_US") == os.environ.get("TENSORGATE_MODEL_INLINE_BATCH_MAX_US")
    mine = "this checkout (TENSORGATE_MODEL_INLINE_BATCH_MAX_US=1000)"
    rows = {"HEAD": [row("HEAD", 16, t) for t in (1000, 1100, 900)], mine: [row(mine, 16, t) for t in (1500, 1400)]}
    assert f"- c=16: {mine} ×1.45 of HEAD" in table(rows, [16], "HEAD")


def test_env_takes_key_value_pairs() -> None:
    import pytest

    from bench.ab import main

    with pytest.raises(SystemExit):
        main(["--base", "HEAD", "--env", "NO_EQUALS_SIGN"])
