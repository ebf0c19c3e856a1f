"""The targets of issue 10 and whether a run meets them, computed from its numbers.

Each verdict is met (True), not met (False) or not measured (None: a part was skipped, a level
is missing); the figure it was judged on is always shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.results import GATEWAY, PYTRITON, STREAMING, LoadRow, Run, TranslatorResult
from bench.translator import TODAYS_COMMIT, TranslatorFigures

CPU_MODEL, CPU_CONCURRENCY, CPU_PER_1K_MAX = "mnist_mlp", 16, 0.7
THROUGHPUT_CONCURRENCY = 64
THROUGHPUT_MIN = {"mnist_mlp": 2500.0, "mnist_cnn": 2000.0}
LATENCY_CONCURRENCY, P50_MAX_MS = 1, 1.5
TRITON_CONCURRENCY, TRITON_FACTOR = 16, 5.0
TRANSLATOR_FACTOR, BLEU_TOLERANCE, IDENTICAL_MIN = 2.0, 0.1, 0.99


@dataclass
class Verdict:
    target: str
    figure: str
    met: bool | None

    @property
    def word(self) -> str:
        return {True: "met", False: "**NOT MET**", None: "not measured"}[self.met]


def _row_verdict(target: str, row: LoadRow | None, value: Callable[[LoadRow], float | None],
                 ok: Callable[[float], bool], shown: Callable[[float], str]) -> Verdict:
    figure = value(row) if row is not None else None
    if figure is None:
        return Verdict(target, "—", None)
    return Verdict(target, shown(figure), ok(figure))


def at_least(minimum: float) -> Callable[[float], bool]:
    return lambda value: value >= minimum


def load_verdicts(run: Run) -> list[Verdict]:
    out = [_row_verdict(
        f"CPU per 1,000 requests, all serving processes, {CPU_MODEL} unary at c={CPU_CONCURRENCY}: "
        f"≤ {CPU_PER_1K_MAX} s", run.row(GATEWAY, CPU_MODEL, CPU_CONCURRENCY), lambda r: r.cpu_per_1k,
        lambda v: v <= CPU_PER_1K_MAX, lambda v: f"{v:.3f} s")]
    c = THROUGHPUT_CONCURRENCY
    for model, minimum in THROUGHPUT_MIN.items():
        out.append(_row_verdict(f"Throughput at c={c}, unary, {model}: ≥ {minimum:,.0f} infer/s",
                                run.row(GATEWAY, model, c), lambda r: r.throughput, at_least(minimum),
                                lambda v: f"{v:,.0f} infer/s"))
    for model in THROUGHPUT_MIN:
        unary, stream = run.row(GATEWAY, model, c), run.row(STREAMING, model, c)
        target = f"Streaming at least as fast as unary at c={c}, {model}"
        if unary is None or stream is None:
            out.append(Verdict(target, "—", None))
        else:
            out.append(Verdict(target, f"{stream.throughput:,.0f} vs {unary.throughput:,.0f} infer/s "
                               f"(×{stream.throughput / unary.throughput:.2f})", stream.throughput >= unary.throughput))
    for model in THROUGHPUT_MIN:
        out.append(_row_verdict(f"Latency at c={LATENCY_CONCURRENCY}, unary, {model}: p50 ≤ {P50_MAX_MS} ms",
                                run.row(GATEWAY, model, LATENCY_CONCURRENCY), lambda r: r.p50_ms,
                                lambda v: v <= P50_MAX_MS, lambda v: f"{v:.2f} ms"))
    return out


def triton_verdicts(run: Run) -> list[Verdict]:
    out = []
    for model in THROUGHPUT_MIN:
        ours, theirs = run.row(GATEWAY, model, TRITON_CONCURRENCY), run.row(PYTRITON, model, TRITON_CONCURRENCY)
        target = f"Against PyTriton, {model}: ≥ {TRITON_FACTOR:g}× throughput at c={TRITON_CONCURRENCY}"
        if ours is None or theirs is None or theirs.throughput <= 0:
            out.append(Verdict(target, "—", None))
        else:
            ratio = ours.throughput / theirs.throughput
            out.append(Verdict(target, f"×{ratio:.2f} ({ours.throughput:,.0f} vs {theirs.throughput:,.0f} infer/s)",
                               ratio >= TRITON_FACTOR))
        pairs = [(r, run.row(PYTRITON, model, r.concurrency)) for r in run.rows(GATEWAY, model)]
        both = [(a, b) for a, b in pairs if b is not None]
        target = f"Against PyTriton, {model}: lower p50 and p99 at every concurrency"
        if not both:
            out.append(Verdict(target, "—", None))
            continue
        worse = [f"c={a.concurrency} (p50 {a.p50_ms:.2f} vs {b.p50_ms:.2f}, p99 {a.p99_ms:.2f} vs {b.p99_ms:.2f} ms)"
                 for a, b in both if not (a.p50_ms < b.p50_ms and a.p99_ms < b.p99_ms)]
        missing = [str(a.concurrency) for a, b in pairs if b is None]
        if worse:
            out.append(Verdict(target, "not lower at " + "; ".join(worse), False))
        elif missing:
            out.append(Verdict(target, f"lower where measured; PyTriton has no figure at c={', '.join(missing)}", None))
        else:
            out.append(Verdict(target, "lower at c=" + ", ".join(str(a.concurrency) for a, _ in both), True))
    return out


def translator_verdicts(run: Run) -> list[Verdict]:
    t = run.translator
    names = [f"Translator at 16 clients, beam 5: ≥ {TRANSLATOR_FACTOR:g}× the in-process all-at-once throughput "
             f"of today's search ({TODAYS_COMMIT})",
             f"Translator: same test BLEU as in-process all-at-once (±{BLEU_TOLERANCE})",
             f"Translator: ≥ {IDENTICAL_MIN:.0%} identical translations",
             "Translator: p50 of the shortest quarter no worse than one-at-a-time in-process"]
    if t is None:
        return [Verdict(name, "—", None) for name in names]
    return [
        _throughput_verdict(names[0] + (f" (measured at {t.clients} clients, beam {t.beam_size})"
                                        if (t.clients, t.beam_size) != (16, 5) else ""), t),
        Verdict(names[1], f"{t.served_bleu:.2f} vs {t.batch_bleu:.2f}",
                abs(t.served_bleu - t.batch_bleu) <= BLEU_TOLERANCE + 1e-9),
        Verdict(names[2], f"{t.identical_share:.1%} of {t.sentences}", t.identical_share >= IDENTICAL_MIN),
        Verdict(names[3], f"{t.short_served_p50_ms:.1f} vs {t.short_single_p50_ms:.1f} ms ({t.short_count} sentences)",
                t.short_served_p50_ms <= t.short_single_p50_ms),
    ]


def _throughput_verdict(name: str, t: TranslatorResult) -> Verdict:
    """Served against today's search all at once; without that figure (no git history, say),
    not measured, with the ratio to the new all-at-once search for information."""
    new = f"{t.batch_per_s:.1f} sentences/s the new search all at once"
    today = t.todays_per_s if isinstance(t, TranslatorFigures) else None
    if today is None or today <= 0:
        why = t.todays_note if isinstance(t, TranslatorFigures) and t.todays_note else "not timed in this run"
        return Verdict(name, f"today's search: {why}; served {t.served_per_s:.1f} sentences/s, "
                             f"×{_ratio(t.served_per_s, t.batch_per_s)} against {new}", None)
    ratio = t.served_per_s / today
    return Verdict(name, f"×{ratio:.2f} ({t.served_per_s:.1f} vs {today:.1f} sentences/s; {new})",
                   ratio >= TRANSLATOR_FACTOR)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "—"


def verdicts(run: Run) -> list[Verdict]:
    return load_verdicts(run) + triton_verdicts(run) + translator_verdicts(run)
