"""bench.serving's parsing and rendering, on literal samples: no servers, no perf_analyzer."""

from __future__ import annotations

import pytest

from bench.serving import (
    GatewayRow,
    OrtRow,
    Report,
    parse_perf_csv,
    parse_server_counts,
    parse_server_latency,
    ratios,
    render_markdown,
)

# The header perf_analyzer 2.41 writes with -f (latencies in microseconds), two levels.
CSV = """\
Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency
1,250.5,10,1500,2200,20,180,10,5,3900,4500,5000,6100
8,900,12,4000,3000,60,400,30,6,8100,9900,11000,15000
"""

STDOUT = """\
Request concurrency: 8
  Client:
    Request count: 2700
  Server:
    Inference count: 2700
    Execution count: 600
    Successful request count: 2700
    Avg request latency: 5416 usec (overhead 1507 usec + queue 3479 usec + compute input 21 usec + compute infer 349 usec + compute output 58 usec)
"""


def test_parse_perf_csv_converts_microseconds_to_ms() -> None:
    rows = parse_perf_csv(CSV)
    assert [r.concurrency for r in rows] == [1, 8]
    first = rows[0]
    assert first.throughput == pytest.approx(250.5)
    assert (first.p50_ms, first.p95_ms, first.p99_ms) == pytest.approx((3.9, 5.0, 6.1))
    assert first.queue_ms == pytest.approx(2.2)
    assert first.compute_ms == pytest.approx(0.21)  # input + infer + output
    # no "Avg latency" column without --verbose-csv: the breakdown columns add up to it
    assert first.avg_ms == pytest.approx((10 + 1500 + 2200 + 20 + 180 + 10 + 5) / 1000)
    assert first.avg_batch is None


def test_parse_perf_csv_prefers_avg_latency_and_stops_at_blank_line() -> None:
    text = ("Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
            "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,"
            "Avg latency,request/response,response wait\n"
            "32,1000,1,2,3,4,5,6,7,8,9,10,11,12345,13,14\n"
            "\n"
            "Concurrency,some metrics block\n1,2\n")
    (row,) = parse_perf_csv(text)
    assert row.avg_ms == pytest.approx(12.345)
    assert row.compute_ms == pytest.approx(0.015)


def test_parse_perf_csv_rejects_other_text() -> None:
    with pytest.raises(ValueError):
        parse_perf_csv("not,a,perf_analyzer,csv\n1,2,3,4\n")


def test_parse_server_section() -> None:
    assert parse_server_counts(STDOUT) == (2700, 600)
    assert parse_server_latency(STDOUT) == pytest.approx((5.416, 1.507))
    assert parse_server_counts("Failed to obtain stable measurement.") is None
    assert parse_server_latency("Failed to obtain stable measurement.") is None


def _report() -> Report:
    gateway = parse_perf_csv(CSV)
    gateway[0].avg_batch, gateway[1].avg_batch = 1.0, 4.5
    gateway[1].batch_sizes = {1: 10, 4: 200, 8: 300}
    gateway[0].server_ms, gateway[0].overhead_ms = 3.0, 0.5
    ort = [OrtRow(1, 5000, 10_000.0, 0.09, 0.2, 0.1), OrtRow(8, 3000, 48_000.0, 0.15, 0.4, 0.17),
           OrtRow(1, 200, 0.0, 0.35, 0.9, 0.4, gap_ms=5.0)]
    return Report(gateway, ort, {"Command": "`python -m bench.serving`", "Date": "2026-01-01 00:00 UTC"},
                  max_queue_delay_ms=2.0, preferred_batch_sizes=(16, 32, 64))


def test_ratios_pair_concurrency_with_batch_size() -> None:
    report = _report()
    assert ratios(report.gateway, report.ort) == [
        (1, 250.5, 10_000.0, pytest.approx(0.02505)), (8, 900.0, 48_000.0, pytest.approx(0.01875))]
    assert ratios(report.gateway, [OrtRow(32, 1, 1.0, 1, 1, 1)]) == []
    assert ratios(report.gateway, [OrtRow(1, 200, 0.0, 1, 1, 1, gap_ms=5.0)]) == []  # paced rows have no throughput


def test_render_markdown_tables_and_ratio_line() -> None:
    text = render_markdown(_report())
    lines = text.splitlines()
    assert lines[0].startswith("# ")
    assert "- Command: `python -m bench.serving`" in lines
    assert "- Date: 2026-01-01 00:00 UTC" in lines
    # gateway rows: concurrency, infer/s, p50, p95, p99, avg, queue, compute, avg batch
    assert "| 1 | 250.5 | 3.90 | 5.00 | 6.10 | 3.93 | 2.20 | 0.210 | 1.00 |" in lines
    assert "| 8 | 900.0 | 8.10 | 11.00 | 15.00 | 7.51 | 3.00 | 0.490 | 4.50 |" in lines
    # raw ORT rows: batch, calls, rows/s, p50, p99; the paced row has no throughput
    assert "| 1 | 5000 | 10,000 | 0.090 | 0.200 |" in lines
    assert "| 8 | 3000 | 48,000 | 0.150 | 0.400 |" in lines
    assert "| 1, 5 ms idle between calls | 200 | — | 0.350 | 0.900 |" in lines
    # breakdown only for rows with the server section: client avg - gateway latency, overhead, queue, compute
    assert "| 1 | 3.93 | 0.93 | 0.50 | 2.20 | 0.210 |" in lines
    assert not any(line.startswith("| 8 | 7.51 |") for line in lines)
    assert "- concurrency 8: 1×10, 4×200, 8×300" in lines
    ratio = next(line for line in lines if line.startswith("Gateway throughput ÷ raw ORT throughput"))
    assert "concurrency 1 / batch 1: 250.5 / 10,000 = **0.025**" in ratio
    assert "concurrency 8 / batch 8: 900.0 / 48,000 = **0.019**" in ratio
    assert "## Interpretation" in lines
    assert "every call starts cold" in text  # paced ORT p50 (0.35) > 2 × back-to-back p50 (0.09)
    assert text.endswith("\n")


def test_render_markdown_without_server_batch_counts() -> None:
    report = _report()
    for row in report.gateway:
        row.avg_batch, row.batch_sizes, row.server_ms, row.overhead_ms = None, {}, None, None
    text = render_markdown(report)
    assert "| 1 | 250.5 | 3.90 | 5.00 | 6.10 | 3.93 | 2.20 | 0.210 | n/a |" in text.splitlines()
    assert "Executions per batch size" not in text
    assert "by whose clock" not in text


def test_gateway_row_defaults() -> None:
    row = GatewayRow(1, 1.0, 1, 1, 1, 1, 0, 0)
    assert row.avg_batch is None and row.batch_sizes == {}
