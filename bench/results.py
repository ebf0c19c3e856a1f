"""What one benchmark run measures: plain dataclasses, filled by the drivers and read by the report."""

from __future__ import annotations

from dataclasses import dataclass, field

# The systems perf_analyzer drives, in the order the report shows them.
GATEWAY = "gateway"
STREAMING = "gateway streaming"
DIRECT = "model service direct"
PYTRITON = "PyTriton"
SYSTEMS = (GATEWAY, STREAMING, DIRECT, PYTRITON)


@dataclass
class ProcessUsage:
    """One serving process (or several with the same label, summed) over one load level."""

    cpu_s: float  # utime + stime consumed during the level
    rss_mib: float  # VmRSS when the level ended


@dataclass
class LoadRow:
    """One concurrency level of perf_analyzer against one system and model (times in ms)."""

    concurrency: int
    throughput: float  # inferences (= requests, batch 1) per second over the measured windows
    p50_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    queue_ms: float  # server queue (ModelStatistics)
    compute_ms: float  # server compute input + infer + output
    system: str = GATEWAY
    model: str = ""
    avg_batch: float | None = None  # inference count / execution count on the server
    batch_sizes: dict[int, int] = field(default_factory=dict)  # executions per batch size
    server_ms: float | None = None  # the server's own average request latency
    overhead_ms: float | None = None  # server_ms minus queue and compute
    # CPU accounting: the same span (the whole perf_analyzer run, its warm-up included) for both.
    requests: int = 0  # requests the server completed during the span
    count_source: str = ""  # where `requests` comes from
    span_s: float = 0.0
    usage: dict[str, ProcessUsage] = field(default_factory=dict)  # process label -> usage
    client_cpu_s: float | None = None  # perf_analyzer's own CPU (not a serving process)
    # From perf_analyzer's per-request export of the measured windows.
    measured: int = 0
    max_ms: float | None = None
    stalls: int = 0  # measured requests slower than the stall threshold

    @property
    def cpu_s(self) -> float:
        return sum(u.cpu_s for u in self.usage.values())

    @property
    def cpu_per_1k(self) -> float | None:
        """CPU seconds of all serving processes together per 1,000 requests."""
        return cpu_per_1k(self.cpu_s, self.requests) if self.usage else None

    @property
    def rss_mib(self) -> float:
        return sum(u.rss_mib for u in self.usage.values())


def cpu_per_1k(cpu_s: float, requests: int) -> float | None:
    return 1000.0 * cpu_s / requests if requests > 0 else None


@dataclass
class OrtRow:
    """Raw ONNX Runtime in-process at one batch size (times in ms)."""

    batch: int
    calls: int
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    model: str = ""


@dataclass
class LevelFailure:
    """A level perf_analyzer could not measure (kept so the report says so instead of a gap)."""

    system: str
    model: str
    concurrency: int
    reason: str


@dataclass
class TranslatorResult:
    """The translator served at N clients against the same search in-process (times in ms)."""

    sentences: int
    clients: int
    beam_size: int
    served_per_s: float
    served_p50_ms: float
    served_p99_ms: float
    single_per_s: float  # in-process, one sentence per call
    single_p50_ms: float
    single_p99_ms: float
    batch_per_s: float  # in-process, all sentences in one call (sorted batches)
    batch_size: int
    served_bleu: float
    batch_bleu: float
    single_bleu: float
    identical_share: float  # served == in-process all-at-once, per sentence
    short_count: int  # sentences in the shortest quarter (by source tokens)
    short_served_p50_ms: float
    short_single_p50_ms: float
    errors: int = 0  # served requests that failed
    bleu_signature: str = ""
    examples: list[tuple[str, str, str]] = field(default_factory=list)  # (German, served, in-process) that differ


@dataclass
class Run:
    """Everything one run produced."""

    meta: dict[str, str]  # label -> value, rendered in this order
    load: list[LoadRow] = field(default_factory=list)
    failures: list[LevelFailure] = field(default_factory=list)
    ort: list[OrtRow] = field(default_factory=list)
    translator: TranslatorResult | None = None
    profile: str = ""  # markdown excerpt of a py-spy profile, when recorded
    translator_profile: str = ""  # the same for the translator's model service under the served run
    section: str = ""  # extra markdown shown after the targets (the GPU check's results)
    stall_ms: float = 250.0
    notes: list[str] = field(default_factory=list)  # what was skipped and why

    def rows(self, system: str, model: str) -> list[LoadRow]:
        return sorted((r for r in self.load if r.system == system and r.model == model), key=lambda r: r.concurrency)

    def row(self, system: str, model: str, concurrency: int) -> LoadRow | None:
        return next((r for r in self.rows(system, model) if r.concurrency == concurrency), None)

    def models(self) -> list[str]:
        seen = dict.fromkeys([r.model for r in self.ort] + [r.model for r in self.load])
        return list(seen)
