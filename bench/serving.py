"""python -m bench (or python -m bench.serving): tensorgate side by side with raw ONNX Runtime and PyTriton.

In one run on one machine: raw ONNX Runtime in-process (the limit); the gateway (unary and
streaming) and a model service's own port under perf_analyzer at a few concurrency levels, with
the CPU and memory of every serving process; Triton through PyTriton serving the same ONNX files;
the translator served at 16 clients against the same search in-process. Writes docs/benchmarks.md
(targets, tables, ratios) and a latency-throughput plot beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import parts, perf
from bench.machine import machine_line, versions_line
from bench.perf import PerfSettings, find_perf_analyzer
from bench.plot import plot_latency
from bench.raw_ort import service_threads
from bench.report import render_markdown
from bench.results import Run
from bench.stack import ROOT, log

QUICK = {"window_ms": 1000, "max_trials": 4, "triton_window_ms": 2000, "ort_seconds": 1.0, "ort_warmup": 20}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(prog="python -m bench", description=doc.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--models", nargs="+", default=["mnist_mlp", "mnist_cnn"], help="image models to load-test (one FP32 input each)")
    a("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64], help="perf_analyzer concurrency levels")
    a("--paths", nargs="+", choices=sorted(parts.PATHS), default=["unary", "streaming", "direct"],
      help="tensorgate paths to load: the gateway unary, the gateway streaming, a model service's own port")
    a("--skip-ort", action="store_true", help="skip raw ONNX Runtime in-process")
    a("--skip-gateway", action="store_true", help="skip the tensorgate stack under perf_analyzer (every path)")
    a("--skip-triton", action="store_true", help="skip the PyTriton peer")
    a("--skip-translator", action="store_true", help="skip the translator part")
    a("--quick", action="store_true", help="short windows and fewer trials (and 128 translator sentences unless "
      "--translator-sentences says otherwise), to iterate; not for the published page")
    a("--device", choices=["cpu", "cuda"], default="cpu",
      help="execution provider for the model services (TENSORGATE_MODEL_DEVICE), raw ORT and the in-process translator")
    a("--window-ms", type=int, default=2000, help="perf_analyzer measurement window for tensorgate (ms)")
    a("--stability", type=float, default=20.0,
      help="perf_analyzer stability percentage; a level that fails is retried once at twice this")
    a("--max-trials", type=int, default=6, help="perf_analyzer windows per level before giving up")
    a("--level-timeout", type=float, default=180.0, help="seconds one perf_analyzer run may take")
    a("--triton-window-ms", type=int, default=5000,
      help="measurement window for PyTriton (longer: 1-10%% of its requests stall ~500 ms from c=4 up)")
    a("--triton-stability", type=float, default=50.0, help="stability percentage for PyTriton (looser, same reason)")
    a("--stall-ms", type=float, default=250.0, help="a measured request at least this slow counts as a stall")
    a("--ort-seconds", type=float, default=3.0, help="seconds of back-to-back raw ORT calls per batch size")
    a("--ort-warmup", type=int, default=50, help="untimed raw ORT calls before each batch size")
    a("--ort-batches", type=int, nargs="+", help="raw ORT batch sizes (default: the concurrency levels)")
    a("--translator-sentences", type=int, help="use only the first N test sentences (default: all 1,000)")
    a("--translator-clients", type=int, default=16, help="concurrent clients sending translations")
    a("--beam-size", type=int, default=5, help="beam size of every translator path")
    a("--translator-parameter", action="append", default=[], metavar="KEY=VALUE", type=key_value,
      help="a config parameter of the translator set over its config.pbtxt for this run, on every path "
      "(e.g. short_lane=priority; repeat for more); the shipped config stays as it is")
    a("--data-dir", default=str(ROOT / "data" / "ding"), help="Ding cache (make data-ding; fetched when missing)")
    a("--profile", action="store_true", help="also record py-spy profiles of the gateway and the first model's "
      "service at c=16 unary and put the top frames on the page")
    a("--profile-seconds", type=float, default=5.0, help="length of the py-spy recording")
    a("--triton-venv", default=str(ROOT / ".bench" / "pytriton"), help="PyTriton's virtualenv (built on first use)")
    a("--triton-base-python", default="/usr/bin/python3.11",
      help="Debian's python3.11 to build it from (PyTriton's stub links the system libpython3.11)")
    a("--perf-analyzer", help="perf_analyzer binary (default: the one beside this Python, else on PATH)")
    a("--model-repository", default=str(ROOT / "models"), help="the model repository")
    a("--ready-timeout", type=float, default=120.0, help="seconds a server may take to come up")
    a("--out", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown page to write; '-' for stdout only")
    a("--section", help="a markdown file to put on the page after the targets (bench/gpu_check.sh puts its CUDA "
      "checks there)")
    a("--plot", help="latency plot to write (default: beside --out, <stem>-latency.png)")
    a("--verbose", action="store_true", help="also print perf_analyzer's own output (to stderr)")
    args = p.parse_args(argv)
    for key, value in QUICK.items():
        if args.quick and p.get_default(key) == getattr(args, key):
            setattr(args, key, value)
    return args


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def settings_meta(args: argparse.Namespace, threads: tuple[int, int]) -> dict[str, str]:
    return {
        "perf_analyzer": f"gRPC, --async, batch size 1 per request, input data of 16 requests of uniform [0, 1) pixels (bench.perf.input_data), concurrency "
                         f"{' '.join(map(str, args.concurrency))}; tensorgate: windows of {args.window_ms} ms, "
                         f"stability {args.stability:g}% (a level that does not settle: one retry with windows twice as long at "
                         f"{2 * args.stability:g}%), at most "
                         f"{args.max_trials} windows per level; the direct path with `-x 1`",
        "ONNX Runtime": f"{args.device.upper()} execution provider; intra-op threads {threads[0]}, inter-op "
                        f"{threads[1]} (the model service's settings; a model line says where its config sets its own), spinning off; raw ORT: {args.ort_warmup} "
                        f"warm-up calls, then {args.ort_seconds:g} s of back-to-back calls per batch size",
        "tensorgate": "started by the benchmark: `python -m services.stack --no-prometheus --models ...` on free "
                      "ports (redis-server, one model service per model, the gateway), on this machine",
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    threads = service_threads()
    started, clock = dt.datetime.now(dt.timezone.utc), time.monotonic()
    command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    run = Run(meta={"Command": f"`{command.strip()}`", "Date": started.strftime("%Y-%m-%d %H:%M UTC"),
                    "Machine": machine_line(), "Versions": versions_line(), **settings_meta(args, threads)},
              stall_ms=args.stall_ms)
    images = not (args.skip_ort and args.skip_gateway and args.skip_triton)  # the image models are measured
    if images:
        parts.model_meta(args, run, threads)
    if args.section:
        run.section = Path(args.section).read_text()
    steps: list[tuple[str, bool, Callable[[PerfSettings], None]]] = [
        ("raw ORT", args.skip_ort, lambda _: parts.ort_part(args, run, threads)),
        ("the tensorgate stack", args.skip_gateway, lambda settings: parts.stack_part(args, run, settings)),
        ("PyTriton", args.skip_triton, lambda settings: parts.triton_part(args, run, settings, threads)),
        ("the translator", args.skip_translator, lambda _: parts.translator_part(args, run)),
    ]
    failed: list[str] = []
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="tensorgate-perf-") as workdir:
            settings = PerfSettings(find_perf_analyzer(args.perf_analyzer), Path(workdir), args.max_trials,
                                    args.level_timeout, args.stall_ms, args.verbose)
            settings.input_data = {m: perf.input_data(Path(args.model_repository) / m, Path(workdir) / f"{m}-input.json")
                                   for m in (args.models if images else [])}
            for name, skip, step in steps:
                if skip:
                    continue
                try:  # one broken part must not cost the others of a long run: the page says what failed
                    step(settings)
                except Exception as err:  # noqa: BLE001
                    log(f"{name} failed:\n{traceback.format_exc()}")
                    failed.append(f"{name} failed: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}")
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    skipped = [name for name, skip, _ in steps if skip]
    if skipped:
        run.notes.append(f"skipped by flag: {', '.join(skipped)}")
    run.notes += failed
    if args.quick:
        run.notes.append("--quick: short windows and few trials; figures are rough")
    run.meta["Duration"] = f"{(time.monotonic() - clock) / 60:.1f} min for the whole run"
    out = None if args.out == "-" else Path(args.out)
    plot = Path(args.plot) if args.plot else (out.with_name(f"{out.stem}-latency.png") if out else None)
    drawn = plot is not None and plot_latency(run, plot)
    plot_ref = None
    if drawn and plot is not None:
        plot_ref = plot.name if out is not None and plot.parent.resolve() == out.parent.resolve() else str(plot)
        log(f"wrote {plot}")
    text = render_markdown(run, plot_ref)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        log(f"wrote {out}")
    return 1 if failed else 0


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
