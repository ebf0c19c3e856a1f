"""bench.perf's parsing and perf_analyzer command lines, and the bench CLI, on literal samples: no servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.counters import Counters, requests_between
from bench.perf import (
    Target,
    export_latencies_ms,
    parse_perf_csv,
    parse_server_counts,
    parse_server_latency,
    perf_analyzer_argv,
)
from bench.procstat import ProcessGroup
from bench.results import DIRECT, GATEWAY, STREAMING, LoadRow
from bench.serving import QUICK, parse_args

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
    assert first.avg_batch is None and first.usage == {} and first.cpu_per_1k is None


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


def test_export_latencies_use_the_last_response() -> None:
    export = {"experiments": [{"experiment": {"mode": "concurrency", "value": 4}, "requests": [
        {"timestamp": 1_000_000_000, "response_timestamps": [1_002_500_000]},
        {"timestamp": 2_000_000_000, "response_timestamps": [2_000_100_000, 2_600_000_000]},
        {"timestamp": 3_000_000_000, "response_timestamps": []},  # never answered: not a latency
    ], "window_boundaries": []}], "version": "2.41"}
    assert export_latencies_ms(json.dumps(export)) == pytest.approx([2.5, 600.0])


def test_requests_between_prefers_the_success_count() -> None:
    before, after = Counters(100, 120, 30), Counters(1100, 1130, 200)
    assert requests_between(before, after) == (1000, "ModelStatistics success count")
    # a model service's own port counts executions (and their rows) but no successes
    direct_before, direct_after = Counters(0, 500, 500), Counters(0, 2500, 2500)
    count, source = requests_between(direct_before, direct_after)
    assert count == 2000 and "inference count" in source


def _target(system: str, **kw: object) -> Target:
    return Target(system, "127.0.0.1:9", ProcessGroup(1), 2000, 20.0, **kw)  # type: ignore[arg-type]


def test_perf_analyzer_argv_per_system(tmp_path: Path) -> None:
    csv, export = tmp_path / "a.csv", tmp_path / "a.json"
    unary = perf_analyzer_argv("pa", _target(GATEWAY), "mnist_mlp", 16, csv, export, 20.0, 6)
    assert unary[:3] == ["pa", "-m", "mnist_mlp"]
    assert "--async" in unary and "--streaming" not in unary and "-x" not in unary and "-H" not in unary
    assert unary[unary.index("--concurrency-range") + 1] == "16"
    assert unary[unary.index("-p") + 1] == "2000" and unary[unary.index("-s") + 1] == "20"
    assert unary[unary.index("--profile-export-file") + 1] == str(export)
    assert "--streaming" in perf_analyzer_argv("pa", _target(STREAMING, streaming=True), "m", 1, csv, export, 20, 6)
    direct = perf_analyzer_argv("pa", _target(DIRECT, version="1"), "m", 1, csv, export, 40, 6)
    assert direct[direct.index("-x") + 1] == "1" and direct[direct.index("-s") + 1] == "40"
    peer = perf_analyzer_argv("pa", _target("PyTriton", headers={"token-header": "abc"}), "m", 1, csv, export, 50, 6)
    assert peer[peer.index("-H") + 1] == "token-header:abc"


def test_cli_defaults_and_quick() -> None:
    args = parse_args([])
    assert args.models == ["mnist_mlp", "mnist_cnn"] and args.concurrency == [1, 4, 16, 64]
    assert args.paths == ["unary", "streaming", "direct"] and args.window_ms == 2000
    assert args.triton_window_ms == 5000 and args.triton_stability == 50
    quick = parse_args(["--quick"])
    assert all(getattr(quick, key) == value for key, value in QUICK.items())
    # --quick shortens only what was not set explicitly
    assert parse_args(["--quick", "--window-ms", "3000"]).window_ms == 3000


def test_load_row_defaults() -> None:
    row = LoadRow(1, 1.0, 1, 1, 1, 1, 0, 0)
    assert row.avg_batch is None and row.batch_sizes == {} and row.system == GATEWAY and row.requests == 0


def _mlp_copy(tmp_path: Path, extra: str = "") -> Path:
    import shutil

    repo = tmp_path / "models"
    shutil.copytree(Path(__file__).parents[2] / "models" / "mnist_mlp", repo / "mnist_mlp")
    if extra:
        with (repo / "mnist_mlp" / "config.pbtxt").open("a") as config:
            config.write(extra)
    return repo


THREADS_2_1 = ('parameters { key: "intra_op_thread_count" value: { string_value: "2" } }\n'
               'parameters { key: "inter_op_thread_count" value: { string_value: "1" } }\n')


def test_pytriton_model_entry_takes_the_models_own_threads_as_the_service_does(tmp_path: Path) -> None:
    from bench.stack import perf_repository
    from bench.triton import model_entry

    def entry(name: str, extra: str = "") -> dict[str, object]:
        served = perf_repository(_mlp_copy(tmp_path / name, extra), tmp_path / name / "served")
        return model_entry(served, "mnist_mlp", (1, 1))

    shipped = entry("a")
    assert shipped["threads"] == [1, 1] and shipped["max_batch_size"] == 64
    assert entry("b", THREADS_2_1)["threads"] == [2, 1]


def test_model_meta_says_where_a_config_sets_its_own_threads(tmp_path: Path) -> None:
    from bench import parts
    from bench.results import Run

    for extra, expected in (("", None), (THREADS_2_1, "ORT threads 2 / 1 from its config")):
        repo = _mlp_copy(tmp_path / str(bool(extra)), extra)
        args = parse_args(["--models", "mnist_mlp", "--model-repository", str(repo)])
        run = Run(meta={}, stall_ms=250.0)
        parts.model_meta(args, run, (1, 1))
        line = run.meta["Model mnist_mlp"]
        assert "max_batch_size 64" in line
        assert (expected in line) if expected else ("ORT threads" not in line)


def test_translator_parameters_on_the_command_line() -> None:
    args = parse_args(["--translator-parameter", "short_lane=priority", "--translator-parameter", "alpha=0.8"])
    assert dict(args.translator_parameter) == {"short_lane": "priority", "alpha": "0.8"}
    assert parse_args([]).translator_parameter == []
    with pytest.raises(SystemExit):
        parse_args(["--translator-parameter", "short_lane"])


def test_with_parameters_sets_them_over_a_copy_of_the_config(tmp_path: Path) -> None:
    from bench.stack import with_parameters
    from tensorgate.repository import load_spec

    shipped = Path(__file__).parents[2] / "models" / "mnist_mlp"
    copy = with_parameters(shipped, tmp_path, {"intra_op_thread_count": "2", "runner": "onnx"})
    spec, original = load_spec(copy), load_spec(shipped)
    assert spec.parameters == {**original.parameters, "intra_op_thread_count": "2", "runner": "onnx"}
    assert (copy / "1").is_symlink() and spec.model_file.resolve() == original.model_file.resolve()
    assert spec.max_batch_size == original.max_batch_size and "intra_op" not in (shipped / "config.pbtxt").read_text()


def test_a_translator_parameter_its_runner_does_not_read_is_refused_before_any_run(tmp_path: Path) -> None:
    from bench import parts
    from bench.results import Run

    args = parse_args(["--translator-parameter", "short_lanes=priority", "--data-dir", str(tmp_path / "no-data")])
    with pytest.raises(SystemExit, match=r"--translator-parameter: .* short_lanes not read by runner "
                                         r".translator. .*known: .*short_lane"):
        parts.translator_part(args, Run(meta={}, stall_ms=250.0))  # refused before the test data is read
    from bench.stack import with_parameters

    shipped = Path(__file__).parents[2] / "models" / "translator_de_en"
    parts.check_parameters(with_parameters(shipped, tmp_path / "copy", {"short_lane": "priority"}))  # no error
    with pytest.raises(SystemExit, match="--translator-parameter: .*unknown runner 'bogus'"):
        parts.check_parameters(with_parameters(shipped, tmp_path / "bogus", {"runner": "bogus"}))
