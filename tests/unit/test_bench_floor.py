from __future__ import annotations

import re

import pytest

from bench import floor
from tests.support import free_port


def test_both_echo_servers_are_measured_and_reported(capsys: pytest.CaptureFixture[str]) -> None:
    assert floor.main(["--seconds", "0.3", "--rounds", "1", "--concurrency", "4", "--port", str(free_port())]) == 0
    rows = {m.group(1): (float(m.group(2).replace(",", "")), float(m.group(3)))
            for m in re.finditer(r"^\| (grpc[^|]*) \| ([\d,]+) \| (\d+) \|", capsys.readouterr().out, re.M)}
    assert set(rows) == set(floor.KINDS)
    assert all(rate > 0 and cpu > 0 for rate, cpu in rows.values())  # calls answered, CPU read from /proc
