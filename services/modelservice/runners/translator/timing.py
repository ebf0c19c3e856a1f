"""Quick check of the continuous translator against the in-process search (not a test, not the
benchmark; bench/ measures through the gateway).

    python -m services.modelservice.runners.translator.timing [--clients 16] [--beam 5]
        [--sentences 1000] [--threads 1] [--instances N] [--routing length] [--short-share Q] [--sessions shared]
    python -m services.modelservice.runners.translator.timing --step-rows 1,5,20,80,160 [--threads 1]

Translates the Ding test split (data/ding, `make data-ding`; a few built-in sentences when it
is missing) three ways, on the CPU unless --device says otherwise: `Translator.translate` over all sentences at once, one
sentence per call for the shortest quarter (their latency alone), and N asyncio clients sending
one sentence each through TranslatorModel.infer (closed loop, the running batches shared;
--instances decode loops as instance_group count does). Prints sentences/s, the share of
translations identical to the all-at-once ones, the shortest quarter's p50 latency both ways and
each loop's scheduler counters. With --step-rows it only times one decoder step per batch size
(rows = sentences x beam, a 20-token source): what a step costs per row on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from services.modelservice.runners.translator import TranslatorModel
from services.modelservice.runners.translator.translator import OnnxStepModel
from tensorgate.repository import load_spec
from services.settings import ModelServiceSettings

FALLBACK = ["Guten Morgen.", "Wie spät ist es?", "Ich habe keine Ahnung.",
            "Der Hund kam unter dem Tisch hervor.", "Das Abendessen hat mir geschmeckt.",
            "Er legt besonderen Wert darauf, sich gute Lerngewohnheiten anzueignen.",
            "Kannst du mir bitte sagen, wo der nächste Bahnhof ist?", "Ja."]


def load_sentences(data_dir: Path, limit: int) -> list[str]:
    if (data_dir / "de-en").is_file():
        from training.data.ding import load_ding  # no torch; only for this tool

        return [de for de, _ in load_ding(data_dir).test][:limit]
    return [FALLBACK[i % len(FALLBACK)] for i in range(min(limit, 64))]


async def clients(model: TranslatorModel, sentences: Sequence[str], n: int, beam: int
                  ) -> tuple[list[str], list[float], float]:
    """n closed-loop clients, one sentence per request -> outputs, latencies (ms), seconds."""
    outputs: list[str] = [""] * len(sentences)
    latencies = [0.0] * len(sentences)
    todo = iter(range(len(sentences)))

    async def client() -> None:
        for i in todo:
            t0 = time.perf_counter()
            out = await model.infer({"text": np.array([sentences[i].encode()], dtype=object)},
                                    ["translation"], {"beam_size": beam}, None)  # type: ignore[arg-type]
            latencies[i] = (time.perf_counter() - t0) * 1e3
            outputs[i] = out["translation"][0].decode()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(n)))
    return outputs, latencies, time.perf_counter() - started


def step_times(model: OnnxStepModel, rows: Sequence[int], seconds: float = 1.0, width: int = 20
               ) -> list[tuple[int, float]]:
    """(rows, ms per decoder step) for each batch size, back-to-back calls for `seconds` each."""
    src = np.full((1, width), 5, dtype=np.int64)
    src[0, -1] = model.eos_id
    context, states = model.encode(src, np.ones((1, width), dtype=np.float32))
    prev_token = np.full(1, model.bos_id, dtype=np.int64)
    times = []
    for n in rows:
        ctx = {k: np.repeat(v, n, axis=0) for k, v in context.items()}
        st = {k: np.repeat(v, n, axis=model.state_axes[k]) for k, v in states.items()}
        prev = np.repeat(prev_token, n)
        for _ in range(10):
            model.step(prev, st, ctx)
        calls, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model.step(prev, st, ctx)
            calls += 1
        times.append((n, (time.perf_counter() - t0) / calls * 1e3))
    return times


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m services.modelservice.runners.translator.timing",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=Path("models/translator_de_en"),
                   help="model folder with config.pbtxt (default: models/translator_de_en)")
    p.add_argument("--data-dir", type=Path, default=Path("data/ding"), help="Ding cache (default: data/ding)")
    p.add_argument("--sentences", type=int, default=1000, help="test sentences to use (default: 1000)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default: 16)")
    p.add_argument("--beam", type=int, default=5, help="beam size (default: 5)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default: 1)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                   help="execution provider, as the model service's TENSORGATE_MODEL_DEVICE (default: cpu)")
    p.add_argument("--instances", type=int, default=None,
                   help="decode loops, as instance_group { count: N } (default: the config's)")
    p.add_argument("--routing", choices=["length", "least_loaded"], default=None,
                   help="how a request picks its loop (default: the config's)")
    p.add_argument("--short-share", type=float, default=None,
                   help="length routing: the first loop's share of the shortest sentences (0: even work; "
                        "default: the config's)")
    p.add_argument("--nice", type=int, default=None,
                   help="niceness increment of every decode loop but the first (default: the config's)")
    p.add_argument("--sessions", choices=["shared", "own"], default=None,
                   help="the loops share the ONNX sessions or each has its own (default: the config's)")
    p.add_argument("--step-rows", default=None,
                   help="only time one decoder step at these batch sizes in rows, comma-separated (e.g. 1,5,80)")
    p.add_argument("--io-binding", action="store_true",
                   help="keep decoder inputs in OrtValues (IO binding; on by itself with CUDA)")
    p.add_argument("--no-fold", action="store_true",
                   help="run the decoder graph as shipped, without the folded input projection (fold.py)")
    p.add_argument("--int8", action="store_true",
                   help="the decoder's weight products in int8, a scale per row (decoder_precision: int8; int8.py)")
    args = p.parse_args(argv)

    spec = load_spec(args.model_dir)
    overrides = {"routing": args.routing, "instance_sessions": args.sessions, "short_share": args.short_share,
                 "nice_longer_loops": args.nice,
                 "io_binding": "true" if args.io_binding else None,
                 "fold_input_projection": "false" if args.no_fold else None,
                 "decoder_precision": "int8" if args.int8 else None}
    spec = dataclasses.replace(spec, instance_count=args.instances or spec.instance_count, parameters={
        **spec.parameters, **{k: str(v) for k, v in overrides.items() if v is not None}})
    settings = ModelServiceSettings.model_validate({"device": args.device, "intra_op_threads": args.threads})
    model = TranslatorModel(spec, settings)
    if args.step_rows:
        step_model = model.translator.model
        assert isinstance(step_model, OnnxStepModel)
        for n, ms in step_times(step_model, [int(r) for r in args.step_rows.split(",")]):
            print(f"{n:4d} rows: {ms:7.3f} ms a step, {ms / n * 1e3:6.1f} µs a row ({args.threads} ORT thread(s), "
                  f"{'folded' if step_model.folded else 'as shipped'}{', int8' if step_model.int8 else ''})")
        model.close()
        return
    model.warmup()
    translator = model.translator
    sentences = load_sentences(args.data_dir, args.sentences)
    lengths = [len(translator.source_ids(s)) for s in sentences]
    shortest = sorted(range(len(sentences)), key=lambda i: (lengths[i], i))[:max(1, len(sentences) // 4)]

    def translate(batch: Sequence[str]) -> list[str]:
        return [t for t, _ in translator.translate(batch, beam_size=args.beam, alpha=model.alpha,
                                                   max_output_len=model.max_output_len,
                                                   batch_size=model.max_sentences)]

    t0 = time.perf_counter()
    reference = translate(sentences)
    at_once = time.perf_counter() - t0
    alone = []
    for i in shortest:
        t0 = time.perf_counter()
        translate([sentences[i]])
        alone.append((time.perf_counter() - t0) * 1e3)
    served, latencies, seconds = asyncio.run(clients(model, sentences, args.clients, args.beam))
    model.close()
    same = sum(a == b for a, b in zip(served, reference))
    n = len(sentences)
    print(f"{n} sentences, beam {args.beam}, {model.provider}, {args.threads} ORT thread(s), io binding "
          f"{'on' if translator.io_binding else 'off'}, {model.instances} decode loop(s) "
          f"({spec.parameters.get('instance_sessions', 'shared')} sessions, {model.router.policy} routing, "
          f"short share {model.router.short_share:g}, bands {model.router.bounds}, nice {model.nice})")
    print(f"Translator.translate, all at once:   {n / at_once:7.1f} sentences/s")
    print(f"{args.clients} clients through infer():       {n / seconds:7.1f} sentences/s, "
          f"identical {same}/{n} ({same / n:.1%})")
    print(f"shortest quarter ({len(shortest)}) p50 latency: alone {np.median(alone):.1f} ms, "
          f"{args.clients} clients {np.median([latencies[i] for i in shortest]):.1f} ms")
    for i, decoder in enumerate(model.decoders):
        print(f"loop {i}: {decoder.scheduler.counters}")


if __name__ == "__main__":
    main()
