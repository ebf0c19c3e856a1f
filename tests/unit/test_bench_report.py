"""bench.targets' verdicts and bench.report's page on a literal Run: no servers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bench.plot import plot_latency
from bench.report import PROFILE_END, PROFILE_START, render_markdown
from bench.results import (
    DIRECT,
    GATEWAY,
    PYTRITON,
    STREAMING,
    LevelFailure,
    LoadRow,
    OrtRow,
    ProcessUsage,
    Run,
    TranslatorResult,
)
from bench.targets import verdicts
from bench.translator import TODAYS_PATH, TranslatorFigures


def _row(system: str, model: str, c: int, throughput: float, p50: float, p99: float, cpu_s: float = 1.0,
         requests: int = 2000) -> LoadRow:
    usage = {"gateway": ProcessUsage(cpu_s * 0.6, 80.0), "redis-server": ProcessUsage(cpu_s * 0.4, 12.0)}
    return LoadRow(c, throughput, p50, p50 * 1.2, p99, p50 * 1.1, 0.5, 0.2, system=system, model=model,
                   avg_batch=c / 2, requests=requests, count_source="ModelStatistics success count", usage=usage,
                   client_cpu_s=0.1, measured=1000, max_ms=p99 * 2)


def _translator(**kw: object) -> TranslatorFigures:
    base = TranslatorFigures(sentences=1000, clients=16, beam_size=5, served_per_s=200.0, served_p50_ms=60.0,
                            served_p99_ms=150.0, single_per_s=120.0, single_p50_ms=8.0, single_p99_ms=20.0,
                            batch_per_s=90.0, batch_size=32, served_bleu=9.77, batch_bleu=9.77, single_bleu=9.77,
                            identical_share=1.0, short_count=250, short_served_p50_ms=7.0, short_single_p50_ms=7.5,
                            bleu_signature="BLEU|nrefs:1", examples=[("Ein Satz.", "A sentence.", "One sentence.")],
                             todays_per_s=90.0, todays_bleu=9.77, todays_identical_share=1.0, todays_note="")
    return replace(base, **kw)  # type: ignore[arg-type]


def _run() -> Run:
    load = []
    for model, fast in (("mnist_mlp", 3000.0), ("mnist_cnn", 2200.0)):
        for c, t, p50, p99 in ((1, 900.0, 1.0, 2.0), (16, fast * 0.8, 4.0, 8.0), (64, fast, 12.0, 30.0)):
            load.append(_row(GATEWAY, model, c, t, p50, p99, cpu_s=1.2 if c == 16 else 2.0))
            load.append(_row(STREAMING, model, c, t * 1.1, p50 * 0.9, p99))
            load.append(_row(DIRECT, model, c, t * 1.5, p50 * 0.5, p99 * 0.5))
            load.append(_row(PYTRITON, model, c, t / 6, p50 * 2, p99 * 20))
    load[-1].stalls = 12  # PyTriton mnist_cnn c=64
    load[0].server_ms, load[0].overhead_ms = 0.8, 0.2  # gateway mnist_mlp c=1: avg 1.1 ms
    load[0].batch_sizes = {1: 900, 2: 3}
    ort = [OrtRow(b, 1000, r, 0.07 * b ** 0.3, 0.1 * b ** 0.3, 0.08, model)
           for model in ("mnist_mlp", "mnist_cnn") for b, r in ((1, 13000.0), (16, 100000.0), (64, 150000.0))]
    return Run(meta={"Command": "`python -m bench`", "Machine": "2 CPUs"}, load=load, ort=ort,
               translator=_translator(), failures=[LevelFailure(PYTRITON, "mnist_cnn", 4, "Failed to obtain stable")])


def _verdict(run: Run, start: str) -> tuple[str, bool | None]:
    v = next(v for v in verdicts(run) if v.target.startswith(start))
    return v.figure, v.met


def test_verdicts_met() -> None:
    run = _run()
    # 1.2 CPU s over 2,000 requests = 0.6 s per 1,000
    assert _verdict(run, "CPU per 1,000 requests") == ("0.600 s", True)
    assert _verdict(run, "Throughput at c=64, unary, mnist_mlp") == ("3,000 infer/s", True)
    assert _verdict(run, "Throughput at c=64, unary, mnist_cnn")[1] is True
    assert _verdict(run, "Streaming at least as fast as unary at c=64, mnist_mlp")[1] is True
    assert _verdict(run, "Latency at c=1, unary, mnist_cnn") == ("1.00 ms", True)
    figure, met = _verdict(run, "Against PyTriton, mnist_mlp: ≥ 5×")
    assert met is True and figure.startswith("×6.00")
    assert _verdict(run, "Against PyTriton, mnist_mlp: lower p50")[1] is True
    assert _verdict(run, "Translator at 16 clients")[1] is True  # 200 / 90 = ×2.22 today's search
    assert _verdict(run, "Translator: same test BLEU")[1] is True
    assert _verdict(run, "Translator: ≥ 99%")[1] is True
    assert _verdict(run, "Translator: p50 of the shortest quarter")[1] is True


def test_verdicts_not_met_show_the_figure() -> None:
    run = _run()
    slow = run.row(GATEWAY, "mnist_mlp", 64)
    assert slow is not None
    slow.throughput, slow.p50_ms = 2400.0, 1.0  # under 2,500; and faster than PyTriton still
    run.row(GATEWAY, "mnist_mlp", 1).p50_ms = 1.6  # type: ignore[union-attr]
    run.row(STREAMING, "mnist_cnn", 64).throughput = 100.0  # type: ignore[union-attr]
    run.row(PYTRITON, "mnist_cnn", 16).p99_ms = 1.0  # type: ignore[union-attr]
    run.translator = _translator(served_bleu=9.5, identical_share=0.98, short_served_p50_ms=9.0, served_per_s=150.0)
    assert _verdict(run, "Throughput at c=64, unary, mnist_mlp") == ("2,400 infer/s", False)
    assert _verdict(run, "Latency at c=1, unary, mnist_mlp") == ("1.60 ms", False)
    assert _verdict(run, "Streaming at least as fast as unary at c=64, mnist_cnn")[1] is False
    figure, met = _verdict(run, "Against PyTriton, mnist_cnn: lower p50")
    assert met is False and "c=16" in figure
    assert _verdict(run, "Translator at 16 clients") == (
        "×1.67 (150.0 vs 90.0 sentences/s; 90.0 sentences/s the new search all at once)", False)
    assert _verdict(run, "Translator: same test BLEU") == ("9.50 vs 9.77", False)
    assert _verdict(run, "Translator: ≥ 99%")[1] is False
    assert _verdict(run, "Translator: p50 of the shortest quarter")[1] is False


def test_verdicts_not_measured() -> None:
    run = Run(meta={})
    assert all(v.met is None and v.figure == "—" for v in verdicts(run))
    partial = _run()
    partial.load = [r for r in partial.load if not (r.system == PYTRITON and r.concurrency == 64)]
    assert _verdict(partial, "Against PyTriton, mnist_mlp: lower p50")[1] is None


def test_render_markdown() -> None:
    run = _run()
    run.section = "## GPU check\n\n| a | b |"
    text = render_markdown(run, "benchmarks-latency.png")
    lines = text.splitlines()
    assert lines[0].startswith("# ") and "- Command: `python -m bench`" in lines
    assert "| CPU per 1,000 requests, all serving processes, mnist_mlp unary at c=16: ≤ 0.7 s | 0.600 s | met |" in lines
    assert "## GPU check" in lines
    # raw ORT rows and the best-batch summary
    assert "| 64 | 1000 | 150,000 | 0.244 | 0.348 |" in lines
    assert "Best: 150,000 rows/s at batch 64; batch 1 takes 0.070 ms (p50), 0.100 ms (p99)." in lines
    # a load row: system, c, infer/s, p50, p99, queue, compute, avg batch, CPU s / 1k, requests, RSS
    assert "| gateway | 16 | 2,400.0 | 4.00 | 8.00 | 0.50 | 0.200 | 8.00 | 0.600 | 2,000 | 92 |" in lines
    assert "![p50 and p99 latency against throughput, one line per system and model](benchmarks-latency.png)" in lines
    assert "- PyTriton mnist_cnn c=4: Failed to obtain stable" in lines
    assert "| gateway | 1 | 1.10 | 0.30 | 0.20 | 0.50 | 0.200 |" in lines  # client avg, outside, handler, queue, compute
    assert "- gateway c=1: 1×900, 2×3" in lines
    assert any(line.startswith("Requests counted over each level (the CPU span): gateway: ModelStatistics success")
               for line in lines)
    ratio = next(line for line in lines if line.startswith("- mnist_mlp: gateway unary ÷ PyTriton"))
    assert "c=16: throughput ×6.00, p50 ×0.50, p99 ×0.05" in ratio
    assert any(line.startswith("- mnist_mlp: gateway unary at c=64 ÷ raw ORT best (batch 64): 3,000 / 150,000")
               for line in lines)
    # per-process CPU per 1k requests and RSS; perf_analyzer's own CPU apart
    assert "| gateway | mnist_mlp | 16 | 0.360 s · 80 MiB | 0.240 s · 12 MiB | 0.600 s · 92 MiB | 0.050 s |" in lines
    assert any("12 of 1,000 measured requests (1.20%) took ≥ 250 ms" in line for line in lines)
    assert "| gateway, 16 clients, one sentence per request | 200.0 | 60.0 | 150.0 | 9.77 |" in lines
    assert "- differs: “Ein Satz.” → served “A sentence.”, in-process “One sentence.”" in lines
    start, end = lines.index(PROFILE_START), lines.index(PROFILE_END)
    assert start < end and "paste one here" in " ".join(lines[start:end])
    assert text.endswith("\n")


def test_todays_search_against_the_new_one_and_when_it_could_not_be_timed() -> None:
    run = _run()
    run.translator = _translator(batch_per_s=150.0, todays_per_s=80.0, todays_identical_share=0.998,
                                 todays_examples=[("Ja.", "Yes.", "Yeah.")])
    figure, met = _verdict(run, "Translator at 16 clients")
    assert met is True and figure.startswith("×2.50 (200.0 vs 80.0")  # today's, not the new 150
    lines = render_markdown(run).splitlines()
    assert "| in-process, today's search (61381cc), all at once (batches of 32) | 80.0 | — | — | 9.77 |" in lines
    assert any(line.startswith("- Served ÷ today's search all at once: ×2.50; the new search ÷ today's, both all "
                               "at once: ×1.88; today's translations identical to the new search's: 99.8%")
               for line in lines)
    assert "- today's differs: “Ja.” → new “Yes.”, today's “Yeah.”" in lines
    run.translator = _translator(todays_per_s=None, todays_note=f"{TODAYS_PATH} at 61381cc is not in "
                                                                "this checkout (a shallow clone)")
    figure, met = _verdict(run, "Translator at 16 clients")
    assert met is None and "a shallow clone" in figure and "×2.22 against 90.0" in figure
    assert any("today's search (61381cc)" in line and f"not timed ({TODAYS_PATH} at 61381cc is not in this "
               "checkout (a shallow clone))" in line for line in render_markdown(run).splitlines())
    run.translator = replace(_translator(), todays_per_s=None)  # a plain figure set: not measured, says so
    assert _verdict(run, "Translator at 16 clients")[1] is None


def test_render_markdown_of_an_empty_run() -> None:
    text = render_markdown(Run(meta={"Command": "`x`"}))
    assert "not measured" in text and "Not measured in this run." in text and "## Ratios" not in text


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    assert plot_latency(_run(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_latency(Run(meta={}), tmp_path / "none.png")


@pytest.mark.parametrize("share", [0.99, 1.0])
def test_identical_share_boundary(share: float) -> None:
    run = _run()
    run.translator = _translator(identical_share=share)
    assert _verdict(run, "Translator: ≥ 99%")[1] is True


def test_the_translator_profile_follows_the_serving_one_in_the_excerpt() -> None:
    run = _run()
    run.profile = "#### gateway (10 busy samples)"
    run.translator_profile = "#### model service translator_de_en (20 busy samples)"
    lines = render_markdown(run).splitlines()
    start, end = lines.index(PROFILE_START), lines.index(PROFILE_END)
    inside = lines[start:end]
    assert inside.index("#### gateway (10 busy samples)") < inside.index(
        "#### model service translator_de_en (20 busy samples)")
