from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench import floor


def test_both_echo_servers_are_measured_and_reported(capsys: pytest.CaptureFixture[str]) -> None:
    assert floor.main(["--seconds", "0.3", "--rounds", "1", "--concurrency", "4"]) == 0
    rows = {m.group(1): (float(m.group(2).replace(",", "")), float(m.group(3)))
            for m in re.finditer(r"^\| (grpc[^|]*) \| ([\d,]+) \| (\d+) \|", capsys.readouterr().out, re.M)}
    assert set(rows) == set(floor.KINDS)
    assert all(rate > 0 and cpu > 0 for rate, cpu in rows.values())  # calls answered, CPU read from /proc


@pytest.mark.parametrize("kind", floor.KINDS)
def test_an_echo_server_picks_a_free_port_and_ends_with_its_parent(kind: str) -> None:
    with subprocess.Popen([sys.executable, "-m", "bench.floor", "--serve", kind], cwd=floor.ROOT,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as server:
        assert server.stdout is not None and server.stdin is not None
        port = int(server.stdout.readline())
        assert port > 0
        server.stdin.close()  # what the parent's death does
        assert server.wait(timeout=10) == 0
