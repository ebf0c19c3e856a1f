"""bench.procstat's /proc parsing and CPU accounting, on literal samples and a fake /proc tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.procstat import ProcessGroup, Reading, descendants, label, parse_rss_kib, parse_stat_cpu, sample, usage
from bench.results import LoadRow, cpu_per_1k

# /proc/<pid>/stat of a process whose name holds a space and a ')' (fields 14, 15: utime 250, stime 50).
STAT = "4242 (python x) y) S 1 4242 4242 0 -1 4194560 9000 0 0 0 250 50 0 0 20 0 7 0 12345 1000000 3000 18446744073709551615"
STATUS = "Name:\tpython\nState:\tS (sleeping)\nVmPeak:\t  300000 kB\nVmRSS:\t  131072 kB\nThreads:\t7\n"


def test_parse_stat_counts_fields_after_the_last_parenthesis() -> None:
    assert parse_stat_cpu(STAT, ticks=100) == pytest.approx(3.0)


def test_parse_rss() -> None:
    assert parse_rss_kib(STATUS) == 131072
    assert parse_rss_kib("Name:\tkthreadd\nState:\tS\n") == 0


@pytest.mark.parametrize(("argv", "expected"), [
    (["/x/.venv/bin/python", "-m", "services.gateway", "--port", "1"], "gateway"),
    (["/x/python", "-m", "services.modelservice", "--name", "mnist_cnn", "--port", "2"], "model service mnist_cnn"),
    (["/usr/bin/redis-server", "127.0.0.1:6390"], "redis-server"),
    (["/ws/tritonserver/bin/tritonserver", "--grpc-port", "1"], "tritonserver"),
    (["/ws/backends/python/triton_python_backend_stub", "/tmp/m.py", "shm", "1", "2", "3", "/b", "336",
      "mnist_mlp_0_0", "DEFAULT"], "backend stub mnist_mlp_0_0"),
    (["/x/.bench/pytriton/bin/python", "-m", "bench.pytriton_server", "--model", "{}"], "PyTriton (bound functions)"),
    ([], "?"),
])
def test_labels(argv: list[str], expected: str) -> None:
    assert label(argv) == expected


def test_usage_over_one_span() -> None:
    before = {10: Reading("gateway", 5.0, 1024), 11: Reading("redis-server", 1.0, 2048),
              12: Reading("model service m", 2.0, 4096), 13: Reading("backend stub a", 9.0, 1024)}
    after = {10: Reading("gateway", 5.6, 2048), 11: Reading("redis-server", 1.1, 2048),
             12: Reading("model service m", 2.3, 8192),
             14: Reading("backend stub a", 0.25, 1024)}  # 13 ended, 14 started during the span: from zero
    spent = usage(before, after)
    assert spent["gateway"].cpu_s == pytest.approx(0.6) and spent["gateway"].rss_mib == pytest.approx(2.0)
    assert spent["model service m"].cpu_s == pytest.approx(0.3) and spent["model service m"].rss_mib == 8.0
    assert spent["backend stub a"].cpu_s == pytest.approx(0.25)
    row = LoadRow(16, 2000.0, 1, 1, 1, 1, 0, 0, requests=2000, usage=spent)
    assert row.cpu_s == pytest.approx(1.25)
    assert row.cpu_per_1k == pytest.approx(0.625)  # 1.25 CPU s over 2,000 requests
    assert cpu_per_1k(1.0, 0) is None


def test_usage_never_goes_negative_on_a_reused_pid() -> None:
    before = {10: Reading("gateway", 50.0, 1)}
    after = {10: Reading("redis-server", 0.5, 1)}  # the pid now belongs to another process
    assert usage(before, after)["redis-server"].cpu_s == pytest.approx(0.5)
    assert usage(before, after)["gateway"].cpu_s == 0.0


def _fake_proc(root: Path, pid: int, children: list[int], argv: list[str], utime: int) -> None:
    task = root / str(pid) / "task" / str(pid)
    task.mkdir(parents=True)
    (task / "children").write_text(" ".join(map(str, children)) + (" " if children else ""))
    (root / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (root / str(pid) / "stat").write_text(f"{pid} (p) S 1 1 1 0 -1 0 0 0 0 0 {utime} 0 0 0 20 0 1 0 1 1 1 1")
    (root / str(pid) / "status").write_text("VmRSS:\t 1024 kB\n")


def test_descendants_and_group_sample(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 1, [2, 3], ["python", "-m", "services.stack"], 0)
    _fake_proc(tmp_path, 2, [], ["redis-server"], 100)
    _fake_proc(tmp_path, 3, [4], ["python", "-m", "services.gateway"], 200)
    _fake_proc(tmp_path, 4, [], ["helper"], 300)
    assert sorted(descendants(1, tmp_path)) == [2, 3, 4]
    group = ProcessGroup(1, include_root=False, proc=tmp_path)
    readings = group.sample()
    assert sorted(readings) == [2, 3, 4]
    ticks = os.sysconf("SC_CLK_TCK")
    assert readings[3].label == "gateway" and readings[3].cpu_s == pytest.approx(200 / ticks)
    assert 1 in ProcessGroup(1, include_root=True, proc=tmp_path).pids()
    assert sample([99], tmp_path) == {}  # gone: skipped
