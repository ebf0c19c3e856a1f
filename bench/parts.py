"""The parts of one benchmark run, each filling the shared Run: raw ORT, the tensorgate stack under
perf_analyzer (unary, streaming, direct; optionally a py-spy profile), the PyTriton peer, the translator."""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import perf, profile, raw_ort, translator
from bench.machine import short_digest, version
from bench.perf import PerfSettings, Target
from bench.results import DIRECT, GATEWAY, PYTRITON, STREAMING, LevelFailure, LoadRow, Run
from bench.stack import ROOT, log, perf_repository, running_stack, with_parameters
from bench.triton import PYTRITON as PYTRITON_REQ
from bench.triton import ensure_venv, model_entry, running_pytriton, venv_version

PATHS = {"unary": GATEWAY, "streaming": STREAMING, "direct": DIRECT}
TRANSLATOR = "translator_de_en"


def shown(path: str | Path) -> str:
    """A path as the page shows it: relative to the checkout when inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def providers(device: str) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]


def stack_env(args: argparse.Namespace) -> dict[str, str]:
    return {**os.environ, "TENSORGATE_MODEL_DEVICE": args.device}


def record(run: Run, results: list[LoadRow | LevelFailure]) -> None:
    for result in results:
        if isinstance(result, LevelFailure):
            run.failures.append(result)
        else:
            run.load.append(result)


def ort_part(args: argparse.Namespace, run: Run, threads: tuple[int, int]) -> None:
    """Raw ONNX Runtime per model, at the thread counts its model service uses (its config's
    intra_op_thread_count / inter_op_thread_count where set)."""
    from services.modelservice.runners.base import model_threads
    from tensorgate.repository import load_spec

    for model in args.models:
        spec = load_spec(Path(args.model_repository) / model)
        item = [d if d > 0 else 1 for d in spec.inputs[0].shape[1:]]
        batches = [b for b in (args.ort_batches or args.concurrency) if b <= spec.max_batch_size]
        run.ort += raw_ort.run_ort(model, spec.model_file, spec.inputs[0].name, item, batches, args.ort_seconds,
                                   args.ort_warmup, model_threads(spec.parameters, threads), providers(args.device))


def model_meta(args: argparse.Namespace, run: Run, threads: tuple[int, int]) -> None:
    """A line per model; one whose config sets its own ORT threads says so (every path then uses them)."""
    from services.modelservice.runners.base import model_threads
    from tensorgate.repository import load_spec

    for model in args.models:
        spec = load_spec(Path(args.model_repository) / model)
        own = model_threads(spec.parameters, threads)
        run.meta[f"Model {model}"] = (
            f"`{shown(spec.model_file)}` (sha256 {short_digest(spec.model_file)}…); max_batch_size "
            f"{spec.max_batch_size}, preferred batch sizes {list(spec.preferred_batch_sizes)}, max_queue_delay "
            f"{spec.max_queue_delay_s * 1e3:g} ms"
            + (f"; ORT threads {own[0]} / {own[1]} from its config (intra_op_thread_count / "
               f"inter_op_thread_count), not the service's" if own != threads else ""))


def stack_part(args: argparse.Namespace, run: Run, settings: PerfSettings) -> None:
    paths = [PATHS[p] for p in args.paths]
    repo = perf_repository(Path(args.model_repository), settings.workdir / "models")
    run.meta["Served repository"] = (
        "a copy of the model repository whose configs keep only the inputs their ONNX graph takes: the classifiers' "
        "optional `image_bytes` (encoded files) is left out, since perf_analyzer 2.41 fills every declared input; "
        "runners and every other setting as shipped")
    with running_stack(args.models, repo, args.ready_timeout, stack_env(args)) as stack:
        group = stack.processes()
        for model in args.models:
            targets = {
                GATEWAY: Target(GATEWAY, stack.url, group, args.window_ms, args.stability),
                STREAMING: Target(STREAMING, stack.url, group, args.window_ms, args.stability, streaming=True),
                DIRECT: Target(DIRECT, stack.direct_url(model), group, args.window_ms, args.stability, version="1"),
            }
            for system in paths:
                log(f"perf_analyzer: {system}, {model}, concurrency {args.concurrency}")
                record(run, perf.measure(targets[system], model, args.concurrency, settings))
        if args.profile:
            run.profile = profile_under_load(args, settings, stack.url, group)


def profile_under_load(args: argparse.Namespace, settings: PerfSettings, url: str, group: perf.ProcessGroup) -> str:
    """py-spy on the gateway and the model service while perf_analyzer holds c=16 unary on the first model."""
    model = args.models[0]
    window = max(1000, int(args.profile_seconds * 1000))
    target = Target(GATEWAY, url, group, window, 100.0)
    argv = perf.perf_analyzer_argv(settings.binary, target, model, 16, settings.workdir / "profile.csv",
                                   settings.workdir / "profile.json", 100.0, 4, settings.input_data.get(model))
    log(f"profiling the gateway and model service {model} for {args.profile_seconds:g} s under c=16 unary")
    load = subprocess.Popen(argv, env=perf.perf_analyzer_env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        return recorded_excerpt(group, ("gateway", f"model service {model}"), 1.0, args.profile_seconds,
                                settings.workdir,  # from 1 s in: past perf_analyzer's start-up
                                f"Recorded by `python -m bench --profile`: `py-spy record --format raw --function "
                                f"--rate 200` for {args.profile_seconds:g} s while perf_analyzer held concurrency 16 "
                                f"(unary) on {model}.")
    finally:
        load.kill()
        load.wait()


def recorded_excerpt(group: perf.ProcessGroup, labels: tuple[str, ...], after_s: float, seconds: float,
                     workdir: Path, head: str) -> str:
    """py-spy on the group's processes of these labels for `seconds`, starting `after_s` from now,
    as `head` and one excerpt each."""
    pids = {reading.label: pid for pid, reading in group.sample().items() if reading.label in labels}
    py_spy = profile.find_py_spy(ROOT / ".bench" / "py-spy")
    time.sleep(after_s)
    stacks = profile.record(py_spy, pids, seconds, workdir)
    return "\n\n".join([head] + [profile.excerpt(name, s) for name, s in stacks.items()])


def triton_part(args: argparse.Namespace, run: Run, settings: PerfSettings, threads: tuple[int, int]) -> None:
    python = ensure_venv(Path(args.triton_venv), Path(args.triton_base_python), version("onnxruntime"))
    repo = settings.workdir / "models"
    if not repo.is_dir():
        perf_repository(Path(args.model_repository), repo)
    models = [model_entry(repo, m, threads) for m in args.models]
    with running_pytriton(python, models, threads, args.ready_timeout) as peer:
        run.meta["PyTriton"] = (f"{PYTRITON_REQ.split('==')[0]} {venv_version(python, 'nvidia-pytriton')} "
                                f"(tritonserver {peer.server_version()}, Python backend; onnxruntime "
                                f"{venv_version(python, 'onnxruntime')} inside the bound functions) in "
                                f"{shown(args.triton_venv)}, "
                                f"Debian's {args.triton_base_python}; same ONNX files, same max_batch_size, preferred "
                                f"batch sizes and max_queue_delay, ORT threads {threads[0]} / {threads[1]} (or a model's own, as served), no spinning; "
                                f"windows of {args.triton_window_ms} ms, stability {args.triton_stability:g}%")
        target = Target(PYTRITON, peer.url, peer.processes(), args.triton_window_ms, args.triton_stability,
                        headers=peer.headers)
        for model in args.models:
            log(f"perf_analyzer: PyTriton, {model}, concurrency {args.concurrency}")
            record(run, perf.measure(target, model, args.concurrency, settings))


def profile_translator(args: argparse.Namespace, group: perf.ProcessGroup) -> str:
    """py-spy on the translator's model service, from 3 s into the served run (past the warm-up)."""
    with tempfile.TemporaryDirectory() as workdir:
        return recorded_excerpt(group, (f"model service {TRANSLATOR}",), 3.0, args.profile_seconds, Path(workdir),
                                f"`py-spy record --format raw --function --rate 200` for {args.profile_seconds:g} s "
                                f"while {args.translator_clients} clients sent one sentence each (the served "
                                f"translator run above).")


def translator_part(args: argparse.Namespace, run: Run) -> None:
    overrides = dict(args.translator_parameter)
    with tempfile.TemporaryDirectory(prefix="tensorgate-translator-") as copy:
        repository = Path(args.model_repository)
        if overrides:  # every path reads the same copy: a setting may change the in-process search too
            repository = Path(copy)
            check_parameters(with_parameters(Path(args.model_repository) / TRANSLATOR, repository, overrides))
        limit = args.translator_sentences or (128 if args.quick else None)
        pairs = translator.test_pairs(Path(args.data_dir), limit)
        translator_runs(args, run, pairs, repository, overrides)


def check_parameters(model_dir: Path) -> None:
    """Refuse, before any run, a config the model service would refuse to load."""
    from services.modelservice.runners import check_parameters as refused
    from tensorgate.repository import load_spec

    try:
        refused(load_spec(model_dir))
    except ValueError as err:  # a parameter nothing reads, or runner=... naming no runner
        raise SystemExit(f"--translator-parameter: {err}") from None


def translator_runs(args: argparse.Namespace, run: Run, pairs: list[tuple[str, str]], repository: Path,
                    overrides: dict[str, str]) -> None:
    sources = [de for de, _ in pairs]
    model_dir = repository / TRANSLATOR
    threads = raw_ort.service_threads()
    local = translator.InProcess(model_dir, threads, providers(args.device))
    batch_size, local_threads = local.batch_size, local.threads
    lengths = local.source_lengths(sources)
    log(f"translator in-process, one sentence at a time ({len(sources)} sentences, beam {args.beam_size})")
    single = local.one_at_a_time(sources, args.beam_size)
    log(f"  {len(sources) / single.seconds:.1f} sentences/s; now all at once")
    batch = local.all_at_once(sources, args.beam_size)
    log(f"  {len(sources) / batch.seconds:.1f} sentences/s")
    del local  # its ONNX Runtime threads and memory, before the service starts
    with running_stack([TRANSLATOR], repository, args.ready_timeout, stack_env(args)) as stack:
        log(f"translator through the gateway, {args.translator_clients} clients")
        profiler = None
        if args.profile:
            profiler = ThreadPoolExecutor(1)
            recording = profiler.submit(profile_translator, args, stack.processes())
        served = translator.served(stack.url, sources, args.translator_clients, args.beam_size, TRANSLATOR)
        log(f"  {len(sources) / served.seconds:.1f} sentences/s")
        if profiler is not None:
            run.translator_profile = recording.result()
            profiler.shutdown()
    run.translator = translator.summarise(pairs, lengths, single, batch, served, args.translator_clients,
                                          args.beam_size, batch_size)
    shown_dir = f"`{shown(Path(args.model_repository) / TRANSLATOR)}`" + (
        f" with {', '.join(f'`{k}: {v}`' for k, v in overrides.items())} over its config (--translator-parameter)"
        if overrides else "")
    run.meta["Translator"] = (f"{shown_dir} "
                              f"(services.modelservice.runners.translator.translator.Translator in-process, "
                              f"the model service's ORT threads "
                              f"{local_threads[0]} / {local_threads[1]}); {len(pairs)} test sentences of {shown(args.data_dir)}")

