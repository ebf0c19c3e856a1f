"""The translator served through the gateway against the same search in-process.

Sentences: the held-out Ding test split the training job scores on (training.data.ding: fetched with
`apt-get download` when missing). Served: N client threads, each sending one sentence per ModelInfer
(beam 5) and the next as soon as the answer is in. In-process: the runner's Translator
(services/modelservice/runners/translator/translator.py) over the same model folder with the model
service's session options, once one sentence per call and once all sentences in one call (sorted
batches of 32), with the model config's alpha and output limit, as the service uses. "Today's
search" is the same all-at-once call on TODAYS_PATH as it was at TODAYS_COMMIT (before the
continuous scheduler: padded batches decoded to their longest sentence's end), taken from git into a
temporary module; the throughput target compares the served translator with it.
"""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from bench.raw_ort import session_options
from bench.results import TranslatorResult
from bench.stack import log

TODAYS_COMMIT = "61381cc"  # the search before the continuous scheduler
TODAYS_PATH = "services/translation.py"  # where it lived then (a path at TODAYS_COMMIT, not today)
REPO = Path(__file__).resolve().parents[1]


class Unavailable(RuntimeError):
    """An old version of a file cannot be had (no git, a shallow clone, a missing commit)."""


def module_at_commit(path: str, commit: str, name: str, repo: Path = REPO) -> ModuleType:
    """`git show commit:path` imported as module `name` (from a temporary file; the module
    imports what the old file imported, not the tree's other modules)."""
    try:
        source = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], check=True,
                                capture_output=True, text=True, timeout=30).stdout
    except FileNotFoundError as err:
        raise Unavailable("git is not installed") from err
    except subprocess.CalledProcessError as err:
        shallow = (repo / ".git" / "shallow").exists()
        raise Unavailable(f"{path} at {commit} is not in this checkout"
                          + (" (a shallow clone)" if shallow else "") + f": {err.stderr.strip()}") from err
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / f"{name}.py"
        file.write_text(source)
        spec = importlib.util.spec_from_file_location(name, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is made
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return module


def with_session_options(translator: Any, options: Any, providers: Sequence[str]) -> None:
    """Rebuild a Translator's two ONNX sessions with `options`: the old Translator takes a
    thread count only, and its pool threads would spin."""
    import onnxruntime as ort

    for attr, key in (("encoder", "encoder"), ("decoder", "decoder_step")):
        file = translator.model_dir / translator.manifest[key]["file"]
        setattr(translator.model, attr, ort.InferenceSession(str(file), sess_options=options,
                                                             providers=list(providers)))


def test_pairs(data_dir: Path, limit: int | None = None) -> list[tuple[str, str]]:
    """(German, English reference) of the test split, in the split's order; the first `limit`."""
    from training.data.ding import load_ding

    pairs = list(load_ding(data_dir).test)
    return pairs[:limit] if limit else pairs


@dataclass
class Timed:
    outputs: list[str]
    latencies_ms: list[float]  # per sentence (for a single call over all: empty)
    seconds: float
    errors: int = 0
    todays: Todays | None = None  # all at once: today's search over the same sentences, same run


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def shortest_quarter(lengths: Sequence[int]) -> list[int]:
    """Indices of the shortest quarter by source length (ties in input order), at least one."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return order[:max(1, len(order) // 4)]


def identical_share(a: Sequence[str], b: Sequence[str]) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a) if a else 0.0


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
    """Corpus BLEU (sacreBLEU, 13a) as the training job scores it, and its signature."""
    import sacrebleu

    metric = sacrebleu.metrics.BLEU()
    return float(metric.corpus_score(list(hypotheses), [list(references)]).score), f"BLEU|{metric.get_signature()}"


@dataclass
class Todays:
    """Today's search, all at once: its pass, or why there is none."""

    timed: Timed | None
    note: str = ""


class InProcess:
    """The runner's Translator (or `module`'s, an older version of it) with the model
    config's search settings."""

    def __init__(self, model_dir: Path, threads: tuple[int, int],
                 providers: Sequence[str] = ("CPUExecutionProvider",), module: ModuleType | None = None,
                 todays: bool = True) -> None:
        """`todays`: all_at_once also times today's search (TODAYS_COMMIT) in the same run."""
        from services.modelservice.runners.base import model_threads
        from services.modelservice.runners.translator import translator as current
        from tensorgate.repository import load_spec

        module = module or current
        Translator = module.Translator
        spec = load_spec(model_dir)
        threads = model_threads(spec.parameters, threads)  # its config's, where it sets them, as the service
        self.model_dir, self.threads, self.providers = model_dir, threads, tuple(providers)
        self.todays = todays
        accepted = inspect.signature(Translator).parameters
        if "int8" in accepted:  # the service's own options, and its decoder precision from the config
            self.translator = Translator(spec.path, list(providers), session_options=session_options(*threads),
                                         int8=spec.parameters.get("decoder_precision") == "int8")
        elif "session_options" in accepted:
            self.translator = Translator(spec.path, list(providers), session_options=session_options(*threads))
        elif module.__name__ != current.__name__:  # an old version, loaded for comparison
            self.translator = Translator(spec.path, list(providers), threads[0])
            with_session_options(self.translator, session_options(*threads), providers)
        else:  # a Translator that takes a thread count only (ORT's spinning stays on, as in that service)
            self.translator = Translator(spec.path, list(providers), threads[0])
        self.alpha = float(spec.parameters.get("alpha", self.translator.default_alpha))
        self.max_output_len = int(spec.parameters.get("max_output_len", self.translator.max_target_len))
        self.batch_size = spec.max_batch_size or 32

    def source_lengths(self, sentences: Sequence[str]) -> list[int]:
        return [len(self.translator.tokenizer.EncodeAsIds(s)) for s in sentences]

    def _translate(self, sentences: Sequence[str], beam: int) -> list[str]:
        results = self.translator.translate(list(sentences), beam_size=beam, alpha=self.alpha,
                                            max_output_len=self.max_output_len, batch_size=self.batch_size)
        return [text for text, _ in results]

    def one_at_a_time(self, sentences: Sequence[str], beam: int) -> Timed:
        self._translate(sentences[:2], beam)  # warm-up: sessions and caches
        outputs, latencies = [], []
        started = time.perf_counter()
        for sentence in sentences:
            t0 = time.perf_counter()
            outputs += self._translate([sentence], beam)
            latencies.append((time.perf_counter() - t0) * 1e3)
        return Timed(outputs, latencies, time.perf_counter() - started)

    def all_at_once(self, sentences: Sequence[str], beam: int) -> Timed:
        todays = self.todays_search(sentences, beam) if self.todays else None
        # Warm-up with one full batch: ONNX Runtime grows its memory arena on the first large shapes,
        # a one-off cost (×3 on 64 sentences here) that a long-running process does not pay again.
        self._translate(sentences[:self.batch_size], beam)
        started = time.perf_counter()
        outputs = self._translate(sentences, beam)
        return Timed(outputs, [], time.perf_counter() - started, todays=todays)

    def todays_search(self, sentences: Sequence[str], beam: int) -> Todays:
        """The same all-at-once pass with TODAYS_PATH at TODAYS_COMMIT."""
        try:
            module = module_at_commit(TODAYS_PATH, TODAYS_COMMIT,
                                      f"translation_{TODAYS_COMMIT}")
        except Unavailable as err:
            log(f"  today's search not timed: {err}")
            return Todays(None, str(err))
        log(f"translator in-process, today's search ({TODAYS_COMMIT}), all at once")
        old = InProcess(self.model_dir, self.threads, self.providers, module=module, todays=False)
        timed = old.all_at_once(sentences, beam)
        log(f"  {len(sentences) / timed.seconds:.1f} sentences/s")
        return Todays(timed)


def served(url: str, sentences: Sequence[str], clients: int, beam: int, model: str = "translator_de_en",
           timeout_s: float = 120.0) -> Timed:
    """`clients` threads over one gRPC channel, one sentence per request, closed loop."""
    from services.client import Client, InferenceError

    with Client(url, timeout_s=timeout_s) as client, ThreadPoolExecutor(clients) as pool:
        def one(sentence: str) -> tuple[str | None, float]:
            t0 = time.perf_counter()
            try:
                text = client.translate(sentence, beam_size=beam, model=model)[0][0]
            except InferenceError as err:
                log(f"  translator request failed: {err}")
                return None, (time.perf_counter() - t0) * 1e3
            return text, (time.perf_counter() - t0) * 1e3

        list(pool.map(one, sentences[:clients]))  # warm-up: connections, the service's first batches
        started = time.perf_counter()
        results = list(pool.map(one, sentences))
        seconds = time.perf_counter() - started
    return Timed([t if t is not None else "" for t, _ in results], [ms for _, ms in results], seconds,
                 sum(t is None for t, _ in results))


@dataclass
class TranslatorFigures(TranslatorResult):
    """TranslatorResult with today's search (TODAYS_COMMIT) in-process, all at once."""

    todays_per_s: float | None = None
    todays_bleu: float | None = None
    todays_identical_share: float | None = None  # today's == the in-process all-at-once, per sentence
    todays_note: str = ""  # why it was not timed
    todays_commit: str = TODAYS_COMMIT
    todays_examples: list[tuple[str, str, str]] = field(default_factory=list)  # (German, new, today's)


def summarise(pairs: Sequence[tuple[str, str]], lengths: Sequence[int], single: Timed, batch: Timed, serve: Timed,
              clients: int, beam: int, batch_size: int) -> TranslatorFigures:
    """The figures the report and the targets need, from the timed passes (today's search
    rides on `batch`)."""
    sources, references = [de for de, _ in pairs], [en for _, en in pairs]
    n = len(pairs)
    short = shortest_quarter(lengths)
    served_bleu, signature = bleu(serve.outputs, references)
    differ = [(sources[i], serve.outputs[i], batch.outputs[i]) for i in range(n) if serve.outputs[i] != batch.outputs[i]]
    todays = batch.todays.timed if batch.todays else None
    return TranslatorFigures(
        sentences=n, clients=clients, beam_size=beam,
        served_per_s=n / serve.seconds, served_p50_ms=percentile(serve.latencies_ms, 50),
        served_p99_ms=percentile(serve.latencies_ms, 99),
        single_per_s=n / single.seconds, single_p50_ms=percentile(single.latencies_ms, 50),
        single_p99_ms=percentile(single.latencies_ms, 99),
        batch_per_s=n / batch.seconds, batch_size=batch_size,
        served_bleu=served_bleu, batch_bleu=bleu(batch.outputs, references)[0],
        single_bleu=bleu(single.outputs, references)[0],
        identical_share=identical_share(serve.outputs, batch.outputs),
        short_count=len(short),
        short_served_p50_ms=percentile([serve.latencies_ms[i] for i in short], 50),
        short_single_p50_ms=percentile([single.latencies_ms[i] for i in short], 50),
        errors=serve.errors, bleu_signature=signature, examples=differ[:3],
        todays_per_s=n / todays.seconds if todays else None,
        todays_bleu=bleu(todays.outputs, references)[0] if todays else None,
        todays_identical_share=identical_share(todays.outputs, batch.outputs) if todays else None,
        todays_note=batch.todays.note if batch.todays else "not timed in this run",
        todays_examples=[(sources[i], batch.outputs[i], todays.outputs[i]) for i in range(n)
                         if todays.outputs[i] != batch.outputs[i]][:3] if todays else [],
    )
