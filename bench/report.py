"""docs/benchmarks.md from one Run: the targets, the tables, the ratios; every sentence computed."""

from __future__ import annotations

from collections.abc import Sequence

from bench.raw_ort import best
from bench.results import DIRECT, GATEWAY, PYTRITON, STREAMING, SYSTEMS, LoadRow, OrtRow, Run, TranslatorResult
from bench.targets import verdicts
from bench.translator import TranslatorFigures

PROFILE_START = "<!-- profile excerpt: paste py-spy output below this line -->"
PROFILE_END = "<!-- end of profile excerpt -->"


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def targets_table(run: Run) -> str:
    out = ["| target | figure | verdict |", "|---|---|---|"]
    out += [f"| {v.target} | {v.figure} | {v.word} |" for v in verdicts(run)]
    return "\n".join(out)


def ort_table(rows: Sequence[OrtRow]) -> str:
    out = ["| batch size | calls | throughput (rows/s) | p50 ms / call | p99 ms / call |", "|---:|---:|---:|---:|---:|"]
    out += [f"| {r.batch} | {r.calls} | {_f(r.rows_per_s, 0)} | {_f(r.p50_ms, 3)} | {_f(r.p99_ms, 3)} |" for r in rows]
    return "\n".join(out)


def ort_summary(rows: Sequence[OrtRow]) -> str:
    top, one = best(rows), next((r for r in rows if r.batch == 1), None)
    if top is None:
        return ""
    return (f"Best: {top.rows_per_s:,.0f} rows/s at batch {top.batch}"
            + (f"; batch 1 takes {one.p50_ms:.3f} ms (p50), {one.p99_ms:.3f} ms (p99)." if one else "."))


def load_table(rows: Sequence[LoadRow]) -> str:
    out = ["| system | concurrency | throughput (infer/s) | p50 ms | p99 ms | server queue ms | server compute ms "
           "| avg batch | CPU s / 1k requests | requests counted | RSS MiB |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r.system} | {r.concurrency} | {_f(r.throughput, 1)} | {_f(r.p50_ms)} | {_f(r.p99_ms)} "
                   f"| {_f(r.queue_ms)} | {_f(r.compute_ms, 3)} | {_f(r.avg_batch)} | {_f(r.cpu_per_1k, 3)} "
                   f"| {r.requests:,} | {_f(r.rss_mib, 0)} |")
    return "\n".join(out)


def process_table(rows: Sequence[LoadRow]) -> str:
    """CPU s / 1k requests and RSS per process, one column per process label of these rows."""
    labels = list(dict.fromkeys(label for r in rows for label in r.usage))
    if not labels:
        return ""
    out = ["| system | model | c | " + " | ".join(labels) + " | all serving | perf_analyzer (not counted) |",
           "|---|---|---:|" + "---:|" * (len(labels) + 2)]
    for r in rows:
        cells = []
        for label in labels:
            u = r.usage.get(label)
            per = 1000 * u.cpu_s / r.requests if u is not None and r.requests else None
            cells.append("—" if u is None else f"{_f(per, 3)} s · {u.rss_mib:,.0f} MiB")
        client = 1000 * r.client_cpu_s / r.requests if r.client_cpu_s is not None and r.requests else None
        out.append(f"| {r.system} | {r.model} | {r.concurrency} | " + " | ".join(cells)
                   + f" | {_f(r.cpu_per_1k, 3)} s · {r.rss_mib:,.0f} MiB | {_f(client, 3)} s |")
    return "\n".join(out)


def breakdown_table(rows: Sequence[LoadRow]) -> str:
    """Average client latency split by whose clock sees it; empty without perf_analyzer's server section."""
    rows = [r for r in rows if r.server_ms is not None and r.overhead_ms is not None]
    if not rows:
        return ""
    out = ["| system | c | client avg ms | outside the server's handler ms | handler, beyond queue and compute ms "
           "| server queue ms | server compute ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        assert r.server_ms is not None
        out.append(f"| {r.system} | {r.concurrency} | {_f(r.avg_ms)} | {_f(r.avg_ms - r.server_ms)} "
                   f"| {_f(r.overhead_ms)} | {_f(r.queue_ms)} | {_f(r.compute_ms, 3)} |")
    return "\n".join(out)


def batch_lines(rows: Sequence[LoadRow]) -> list[str]:
    return [f"- {r.system} c={r.concurrency}: " + ", ".join(f"{size}×{n}" for size, n in sorted(r.batch_sizes.items()))
            for r in rows if r.batch_sizes]


def _ratio(a: float, b: float) -> str:
    return f"×{a / b:.2f}" if b > 0 else "n/a"


def ratio_lines(run: Run, model: str) -> list[str]:
    lines = []
    top = best([r for r in run.ort if r.model == model])
    unary = run.rows(GATEWAY, model)
    if top and unary:
        hi = unary[-1]
        lines.append(f"gateway unary at c={hi.concurrency} ÷ raw ORT best (batch {top.batch}): {hi.throughput:,.0f} / "
                     f"{top.rows_per_s:,.0f} = **{hi.throughput / top.rows_per_s:.3f}**")
    for other, what in ((STREAMING, "streaming ÷ unary"), (DIRECT, "model service direct ÷ gateway unary"),
                        (PYTRITON, "gateway unary ÷ PyTriton")):
        parts = []
        for r in unary:
            o = run.row(other, model, r.concurrency)
            if o is None:
                continue
            a, b = (r, o) if other == PYTRITON else (o, r)
            parts.append(f"c={r.concurrency}: throughput {_ratio(a.throughput, b.throughput)}, p50 "
                         f"{_ratio(a.p50_ms, b.p50_ms)}, p99 {_ratio(a.p99_ms, b.p99_ms)}")
        if parts:
            lines.append(f"{what}: " + "; ".join(parts))
    return [f"- {model}: {line}" for line in lines]


def stall_lines(run: Run) -> list[str]:
    rows = [r for r in run.load if r.system == PYTRITON]
    out = []
    for r in rows:
        if r.measured:
            out.append(f"- {r.model} c={r.concurrency}: {r.stalls:,} of {r.measured:,} measured requests "
                       f"({100 * r.stalls / r.measured:.2f}%) took ≥ {run.stall_ms:g} ms; slowest {_f(r.max_ms, 0)} ms, "
                       f"p99 {r.p99_ms:.1f} ms, p50 {r.p50_ms:.2f} ms")
    ours = [r for r in run.load if r.system != PYTRITON and r.stalls]
    if rows and not ours and any(r.system != PYTRITON and r.measured for r in run.load):
        out.append(f"- tensorgate (every path, every level): no measured request took ≥ {run.stall_ms:g} ms")
    for r in ours:
        out.append(f"- {r.system} {r.model} c={r.concurrency}: {r.stalls:,} of {r.measured:,} took ≥ {run.stall_ms:g} ms")
    return out


def translator_section(run: Run) -> list[str]:
    t = run.translator
    if t is None:
        return ["Not measured in this run."]
    rows = [
        "| path | sentences/s | p50 ms | p99 ms | test BLEU |", "|---|---:|---:|---:|---:|",
        f"| gateway, {t.clients} clients, one sentence per request | {t.served_per_s:.1f} | {t.served_p50_ms:.1f} "
        f"| {t.served_p99_ms:.1f} | {t.served_bleu:.2f} |",
        f"| in-process, one sentence per call | {t.single_per_s:.1f} | {t.single_p50_ms:.1f} | {t.single_p99_ms:.1f} "
        f"| {t.single_bleu:.2f} |",
        f"| in-process, all at once (sorted batches of {t.batch_size}) | {t.batch_per_s:.1f} | — | — "
        f"| {t.batch_bleu:.2f} |",
        *_todays_rows(t),
    ]
    lines = [f"{t.sentences:,} sentences of the Ding test split, beam {t.beam_size}, the model config's alpha and "
             "output limit on every path.", "", *rows, "",
             *_todays_lines(t),
             f"- Served ÷ in-process all at once: {_ratio(t.served_per_s, t.batch_per_s)}; served ÷ one at a time: "
             f"{_ratio(t.served_per_s, t.single_per_s)}.",
             f"- Identical to the in-process all-at-once translation: {t.identical_share:.1%}"
             + (f"; {t.errors} served requests failed" if t.errors else "") + ".",
             f"- Shortest quarter by source tokens ({t.short_count} sentences): p50 served {t.short_served_p50_ms:.1f} ms, "
             f"one at a time in-process {t.short_single_p50_ms:.1f} ms.",
             f"- BLEU: {t.bleu_signature}."]
    for de, ours, theirs in t.examples:
        lines.append(f"- differs: “{de}” → served “{ours}”, in-process “{theirs}”")
    return lines


def _todays_rows(t: TranslatorResult) -> list[str]:
    if not isinstance(t, TranslatorFigures):
        return []
    label = f"in-process, today's search ({t.todays_commit}), all at once (batches of {t.batch_size})"
    if t.todays_per_s is None:
        return [f"| {label}: not timed ({t.todays_note}) | — | — | — | — |"]
    return [f"| {label} | {t.todays_per_s:.1f} | — | — | {_f(t.todays_bleu)} |"]


def _todays_lines(t: TranslatorResult) -> list[str]:
    if not isinstance(t, TranslatorFigures) or t.todays_per_s is None:
        return []
    lines = [f"- Served ÷ today's search all at once: {_ratio(t.served_per_s, t.todays_per_s)}; the new search "
             f"÷ today's, both all at once: {_ratio(t.batch_per_s, t.todays_per_s)}; today's translations identical "
             f"to the new search's: {_f((t.todays_identical_share or 0.0) * 100, 1)}%."]
    for de, new, old in t.todays_examples:
        lines.append(f"- today's differs: “{de}” → new “{new}”, today's “{old}”")
    return lines


def profile_section(run: Run) -> list[str]:
    body = run.profile or ("No profile was recorded in this run (`python -m bench --profile` records one with "
                           "py-spy); paste one here.")
    tail = ["", run.translator_profile] if run.translator_profile else []
    return [PROFILE_START, "", body, *tail, "", PROFILE_END]


def render_markdown(run: Run, plot_name: str | None = None) -> str:
    meta = "\n".join(f"- {label}: {value}" for label, value in run.meta.items())
    parts = ["# Serving benchmark: tensorgate against raw ONNX Runtime and PyTriton", "",
             "Written by `make bench` (`python -m bench`); rerun it to refresh this page. Every figure comes from one "
             "run on one machine, every system measured side by side in that run: compare them as ratios within this "
             "page, not with other runs.", "", meta, "", "## Targets", "", targets_table(run), ""]
    if run.notes:
        parts += ["Notes on this run:", "", *[f"- {n}" for n in run.notes], ""]
    if run.section:
        parts += [run.section.strip(), ""]
    parts += ["## Raw ONNX Runtime, in-process (the limit)", ""]
    for model in run.models():
        ort_rows = [r for r in run.ort if r.model == model]
        if ort_rows:
            parts += [f"### {model}", "", ort_table(ort_rows), "", ort_summary(ort_rows), ""]
    parts += ["## Under load: perf_analyzer over gRPC, batch size 1 per request", "",
              "Throughput and latencies are perf_analyzer's over its measured windows. Server queue and compute are "
              "ModelStatistics (each request charged its whole batch's compute, as Triton does). CPU s / 1k requests: "
              "utime + stime of every serving process (/proc), summed, over the whole perf_analyzer run including "
              "its warm-up, divided by the requests the server completed in that same span. RSS: VmRSS of the "
              "serving processes when the level ended.", ""]
    for model in run.models():
        rows = [r for system in SYSTEMS for r in run.rows(system, model)]
        if rows:
            parts += [f"### {model}", "", load_table(rows), ""]
            breakdown = breakdown_table(rows)
            if breakdown:
                parts += ["Average latency by whose clock sees it (perf_analyzer's server section):", "", breakdown, ""]
            batches = batch_lines([r for r in rows if r.system == GATEWAY])
            if batches:
                parts += ["Executions per batch size through the gateway (size×count, ModelStatistics over the "
                          "whole level):", "", *batches, ""]
    sources = dict.fromkeys(f"{r.system}: {r.count_source}" for r in run.load if r.count_source)
    if sources:
        parts += ["Requests counted over each level (the CPU span): " + "; ".join(sources) + ".", ""]
    if plot_name:
        parts += [f"![p50 and p99 latency against throughput, one line per system and model]({plot_name})", ""]
    if run.failures:
        parts += ["Levels perf_analyzer could not measure:", ""]
        parts += [f"- {f.system} {f.model} c={f.concurrency}: {f.reason}" for f in run.failures] + [""]
    ratios = [line for model in run.models() for line in ratio_lines(run, model)]
    if ratios:
        parts += ["## Ratios", "", *ratios, ""]
    models = run.models()
    table = process_table(sorted(run.load, key=lambda r: (SYSTEMS.index(r.system), models.index(r.model),
                                                          r.concurrency)))
    if table:
        parts += ["## CPU and memory per process", "",
                  "Per process: CPU seconds per 1,000 requests · VmRSS at the end of the level.", "", table, ""]
    stalls = stall_lines(run)
    if stalls:
        parts += [f"## Stalls (requests ≥ {run.stall_ms:g} ms)", "",
                  "From perf_analyzer's per-request export of the measured windows.", "", *stalls, ""]
    parts += ["## Translator", "", *translator_section(run), "",
              "## Profile", "", *profile_section(run), ""]
    return "\n".join(parts)
