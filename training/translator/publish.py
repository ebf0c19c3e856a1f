"""After training: export the selected model, check parity, evaluate once on
the test set, draw the curves, write the card and the model repository entry."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort
import torch

from services.modelservice.runners.translator.translator import Translator
from training.common.card import write_card
from training.common.export import DEFAULT_OPSET
from training.common.plots import plot_curves
from training.common.repository import DynamicBatching, ModelConfig, TensorConfig, write_entry
from training.data.parallel import ParallelCorpus
from training.common.checkpoint import build_model, load_checkpoint
from training.translator.evaluate import perplexity, translate_and_score
from training.translator.fit import rank
from training.translator.export import (CONTEXT, DECODER_INPUTS, ENCODER_INPUTS, STATES,
                                        DecoderStepGraph, EncoderGraph, TorchStepModel,
                                        export_translator)
from training.translator.model import Seq2Seq

NAME = "translator_de_en"
CONFIG = ModelConfig(
    name=NAME,
    max_batch_size=32,
    # One sentence per row: Triton's dims [1] reshaped to [] (clients send [N] or [N, 1]).
    inputs=(TensorConfig("text", "TYPE_STRING", (1,), reshape=()),),
    outputs=(TensorConfig("translation", "TYPE_STRING", (1,), reshape=()),
             TensorConfig("score", "TYPE_FP32", (1,), reshape=())),
    batching=DynamicBatching(
        preferred_batch_sizes=(4, 8, 16),
        max_queue_delay_microseconds=5000,
        max_queue_size=256,
        default_timeout_microseconds=30_000_000,
    ),
    # Two graphs and a search loop: the model service picks its translator runner.
    # A request may pick its own beam_size, 1 (greedy) to max_beam_size.
    parameters={"runner": "translator", "beam_size": "5", "max_beam_size": "16", "alpha": "0.6",
                "max_output_len": "160"},
)


def choose_alpha(args: argparse.Namespace, translator: Translator, corpus: ParallelCorpus
                 ) -> tuple[float, dict[str, Any]]:
    """The length penalty alpha with the best beam BLEU on validation (never on test)."""
    sources, references = [d for d, _ in corpus.valid], [e for _, e in corpus.valid]
    tried: dict[str, Any] = {}
    for alpha in args.alpha:
        scores, _ = translate_and_score(translator, sources, references, args.beam_size, alpha)
        tried[str(alpha)] = {"bleu": scores["bleu"], "chrf": scores["chrf"],
                             "detail": scores["bleu_detail"]}
        print(f"validation beam {args.beam_size} alpha {alpha}: {scores['bleu_detail']}",
              flush=True)
    best = max(args.alpha, key=lambda a: (tried[str(a)]["bleu"], tried[str(a)]["chrf"]))
    return best, tried


PARITY_BATCH, PARITY_STEPS = 13, 6  # export example: batch 2, source length 5
# |torch - onnx| <= ATOL + RTOL * |torch| elementwise (numpy.allclose's rule). The relative
# part matters for log_probs: they are the tied 4000-row output layer times `feed`, so a
# float32 rounding of ~1e-6 in feed becomes ~1e-4 in a log-probability of -4 .. -20.
PARITY_ATOL, PARITY_RTOL = 1e-4, 1e-4


def _bound_ratio(want: np.ndarray, got: np.ndarray) -> float:
    """Largest |want - got| / (ATOL + RTOL * |want|); parity holds while it is <= 1."""
    return float(np.max(np.abs(want - got) / (PARITY_ATOL + PARITY_RTOL * np.abs(want))))


def parity_check(model: Seq2Seq, export_dir: Path, translator: Translator,
                 sentences: Sequence[str]) -> dict[str, Any]:
    """Encoder outputs and PARITY_STEPS decoder steps (fed ONNX's own greedy
    tokens) compared on a batch of PARITY_BATCH real sentences of mixed length;
    every output within the allclose bound, and the same greedy token each step."""
    src, mask = translator.encode_batch(list(sentences[:PARITY_BATCH]))
    encoder = ort.InferenceSession(str(export_dir / "encoder.onnx"),
                                   providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(export_dir / "decoder_step.onnx"),
                                   providers=["CPUExecutionProvider"])
    torch_encoder, torch_decoder = EncoderGraph(model).eval(), DecoderStepGraph(model).eval()
    worst = {"encoder": 0.0, "decoder_step": 0.0}
    ratio = dict.fromkeys(worst, 0.0)
    tokens_agree = True

    def compare(part: str, want: list[np.ndarray], got: list[np.ndarray]) -> None:
        for w, g in zip(want, got, strict=True):
            assert w.shape == g.shape, (w.shape, g.shape)
            worst[part] = max(worst[part], float(np.max(np.abs(w - g))))
            ratio[part] = max(ratio[part], _bound_ratio(w, g))

    with torch.inference_mode():
        want = [t.numpy() for t in torch_encoder(torch.from_numpy(src), torch.from_numpy(mask))]
        got = encoder.run(None, {ENCODER_INPUTS[0]: src, ENCODER_INPUTS[1]: mask})
        compare("encoder", want, got)
        memory, keys, h, c, feed = got
        prev = np.full(len(src), translator.manifest["special_ids"]["bos"], dtype=np.int64)
        values = {"state_h": h, "state_c": c, "feed": feed, "memory": memory, "keys": keys,
                  "src_mask": mask}
        for _ in range(PARITY_STEPS):
            feed_dict = {"prev_token": prev, **values}
            got = decoder.run(None, feed_dict)
            want = [t.numpy() for t in torch_decoder(
                *(torch.from_numpy(feed_dict[n]) for n in DECODER_INPUTS))]
            compare("decoder_step", want, got)
            prev = got[0].argmax(axis=1).astype(np.int64)
            tokens_agree &= bool(np.array_equal(want[0].argmax(axis=1), prev))
            values.update({name: got[1 + i] for i, (name, _) in enumerate(STATES)})
    result = {"encoder_max_abs_diff": worst["encoder"],
              "decoder_step_max_abs_diff": worst["decoder_step"],
              "encoder_bound_ratio": ratio["encoder"], "decoder_step_bound_ratio":
              ratio["decoder_step"], "greedy_tokens_agree": tokens_agree,
              "batch_size": int(src.shape[0]), "source_length": int(src.shape[1]),
              "decoder_steps": PARITY_STEPS, "atol": PARITY_ATOL, "rtol": PARITY_RTOL,
              "rule": "|torch - onnx| <= atol + rtol * |torch| for every element; the bound "
                      "ratios are the largest |torch - onnx| / (atol + rtol * |torch|)",
              "export_example": {"batch_size": 2, "source_length": 5},
              "compared": "all encoder outputs; log_probs, states and attention of each step"}
    if max(ratio.values()) > 1.0 or not tokens_agree:
        raise AssertionError(f"ONNX parity fails: {result}")
    return result


def publish(args: argparse.Namespace, corpus: ParallelCorpus, selected: dict[str, Any],
            history: list[dict[str, Any]], export_dir: Path, spm_path: Path,
            stages: list[dict[str, Any]],
            train_seconds: float, job_seconds: float, stop_reason: str, device: torch.device,
            parameters: int, train_pairs: int, train_tokens: int) -> dict[str, Any]:
    model: Seq2Seq = selected["model"].eval().cpu()
    encoder_path, decoder_path = export_translator(model, export_dir)
    onnx_translator = Translator(export_dir, threads=max(args.threads, 1))
    parity = parity_check(model, export_dir, onnx_translator, [d for d, _ in corpus.test])
    print(f"exported {encoder_path.name} + {decoder_path.name}; parity {parity}", flush=True)

    alpha, alphas_tried = choose_alpha(args, onnx_translator, corpus)
    manifest_path = export_dir / "manifest.json"
    content = json.loads(manifest_path.read_text())
    content["search"]["default_alpha"] = alpha
    manifest_path.write_text(json.dumps(content, indent=1) + "\n")
    config = replace(CONFIG, parameters={**CONFIG.parameters, "alpha": str(alpha)})

    sources, references = [d for d, _ in corpus.test], [e for _, e in corpus.test]
    torch_translator = Translator(export_dir, model=TorchStepModel(model))
    test: dict[str, Any] = {"sentences": len(sources), "alpha": alpha}
    samples: list[dict[str, str]] = []
    for key, translator, beam in (("onnx_beam", onnx_translator, args.beam_size),
                                  ("onnx_greedy", onnx_translator, 1),
                                  ("pytorch_beam", torch_translator, args.beam_size),
                                  ("pytorch_greedy", torch_translator, 1)):
        tick = time.perf_counter()
        scores, hypotheses = translate_and_score(translator, sources, references, beam, alpha)
        scores.update(beam_size=beam, seconds=round(time.perf_counter() - tick, 1))
        test[key] = scores
        print(f"test {key}: BLEU {scores['bleu']:.2f} chrF {scores['chrf']:.2f} "
              f"({scores['seconds']}s)", flush=True)
        if key == "onnx_beam":
            samples = [{"de": s, "reference": r, "translation": h}
                       for s, r, h in list(zip(sources, references, hypotheses))[:10]]
            (args.run_dir / "test.hyp.en").write_text("\n".join(hypotheses) + "\n")
    test["onnx_vs_pytorch_beam_identical_bleu"] = \
        test["onnx_beam"]["bleu"] == test["pytorch_beam"]["bleu"]

    curves = plot_curves(args.run_dir / "curves.png", {
        "train loss (label-smoothed)": {"train": [m["train_loss"] for m in history]},
        "validation perplexity": {"validation": [m["val_perplexity"] for m in history]},
        "validation BLEU (greedy)": {"validation": [m["val_bleu"] for m in history]},
    }, title=f"{NAME} (a checkpoint every {args.checkpoint_interval} updates)",
        x_label="checkpoint")

    files = {"encoder.onnx": encoder_path, "decoder_step.onnx": decoder_path,
             "manifest.json": export_dir / "manifest.json", "sentencepiece.model": spm_path}
    sizes = {name: path.stat().st_size for name, path in files.items()}
    card = write_card(args.run_dir / "card.json", {
        "name": NAME,
        "version": args.version,
        "description": "German -> English translation: attentional bi-LSTM encoder-decoder, "
                       "trained on the Ding dictionary's example sentences and phrases.",
        "inputs": [{"name": "text", "data_type": "BYTES", "shape": [-1],
                    "note": "UTF-8 German sentence per element; parameter beam_size"}],
        "outputs": [{"name": "translation", "data_type": "BYTES", "shape": [-1]},
                    {"name": "score", "data_type": "FP32", "shape": [-1],
                     "note": "length-normalised log-probability, ((5+len)/6)^alpha"}],
        "architecture": {"summary": model.describe(), "class": "training.translator.model:Seq2Seq",
                         "model_args": model.init_args, "parameters": parameters},
        "tokenizer": {"type": "sentencepiece unigram, joint German+English",
                      "vocab_size": model.init_args["vocab"], "character_coverage": 1.0,
                      "file": "sentencepiece.model",
                      "choice": VOCAB_CHOICE if not args.dry_run else "dry run"},
        "data": {"source": corpus.source, "checksums": corpus.checksums,
                 "sha256_of_pairs": corpus.sha256(), "splits": corpus.sizes(),
                 "split_rule": corpus.split_rule,
                 "phrases": f"fixed subset: the first {args.max_phrases} phrase pairs by sha256 "
                            "of 'de<TAB>en'",
                 "train_pairs_used": train_pairs, "train_target_tokens": train_tokens,
                 "max_len_tokens": args.max_len},
        "training": {"optimizer": "Adam", "lr": history[0]["lr"], "lr_schedule":
                     f"x{args.lr_factor} after {args.lr_patience} checkpoints without a better "
                     f"validation {args.optimized_metric}, min {args.min_lr}", "clip_grad_norm": args.clip,
                     "label_smoothing": args.label_smoothing, "dropout": args.dropout,
                     "batch_tokens": args.batch_tokens, "bucket_width": args.bucket_width,
                     "checkpoint_interval": args.checkpoint_interval, "patience": args.patience,
                     "max_seconds": args.max_seconds, "stopped": stop_reason,
                     "updates": history[-1]["updates"], "epochs": history[-1]["epoch"],
                     "seed": args.seed, "device": str(device), "threads": torch.get_num_threads(),
                     "seconds": round(train_seconds, 1), "job_seconds": round(job_seconds, 1),
                     "dry_run": args.dry_run, "stages": stages},
        "selection": {k: v for k, v in selected.items() if k != "model"},
        "metrics": {"test": test, "validation": {
            "selected": {"bleu_greedy": selected["val_bleu"], "chrf_greedy": selected["val_chrf"],
                         "perplexity": selected["val_perplexity"]},
            "beam_alpha_on_validation": alphas_tried, "alpha_chosen": alpha,
            "per_checkpoint": history}, "test_samples": samples},
        "export": {"format": "onnx", "files": sizes, "opset": DEFAULT_OPSET,
                   "exporter": "torch.onnx.export(dynamo=False)", "parity": parity,
                   "graph_inputs": {"encoder": ENCODER_INPUTS, "decoder_step": DECODER_INPUTS},
                   "context_inputs": CONTEXT, "total_bytes": sum(sizes.values())},
        "command": " && ".join(stage["command"] for stage in stages),
        "published": ("by a --publish-only rerun over this run's checkpoints"
                      if args.publish_only else "at the end of the training run"),
    })
    files.update({"card.json": args.run_dir / "card.json", "curves.png": curves})
    version_dir = write_entry(args.out_dir, config, args.version, files)
    print(f"wrote {version_dir} and {args.out_dir / NAME / 'config.pbtxt'}", flush=True)
    return card


def select_model(args: argparse.Namespace, history: list[dict[str, Any]], checkpoints: Path,
                 export_dir: Path, corpus: ParallelCorpus, valid_batches: Sequence[Any]
                 ) -> dict[str, Any]:
    """The best checkpoint, or the average of the --average best when its
    validation BLEU is at least as high. Returns {"model", "description", ...}."""
    ranked = sorted(history, key=rank, reverse=True)
    best = ranked[0]
    checkpoint = load_checkpoint(checkpoints / f"checkpoint_{best['checkpoint']:03d}.pt")
    model = build_model(checkpoint, Seq2Seq)
    selected = {"model": model, "checkpoint": best["checkpoint"], "averaged": [],
                "val_bleu": best["val_bleu"], "val_perplexity": best["val_perplexity"],
                "val_chrf": best["val_chrf"], "criterion":
                "highest validation BLEU (greedy), ties: lower validation perplexity"}
    if args.average > 1 and len(ranked) > 1:
        chosen = [m["checkpoint"] for m in ranked[:args.average]]
        states = [load_checkpoint(checkpoints / f"checkpoint_{c:03d}.pt").state_dict
                  for c in chosen]
        averaged = build_model(checkpoint, Seq2Seq)
        averaged.load_state_dict({k: sum(s[k] for s in states) / len(states) for k in states[0]})
        ppl = perplexity(averaged, valid_batches, torch.device("cpu"))
        translator = Translator(export_dir, model=TorchStepModel(averaged))
        scores, _ = translate_and_score(translator, [d for d, _ in corpus.valid],
                                        [e for _, e in corpus.valid], 1, args.alpha[0])
        print(f"average of checkpoints {chosen}: val bleu {scores['bleu']:.2f} ppl {ppl:.2f}",
              flush=True)
        selected["average_candidate"] = {"checkpoints": chosen, "val_bleu": scores["bleu"],
                                         "val_perplexity": ppl, "val_chrf": scores["chrf"]}
        if rank({"val_bleu": scores["bleu"], "val_perplexity": ppl}) >= rank(best):
            selected.update(model=averaged, averaged=chosen, val_bleu=scores["bleu"],
                            val_perplexity=ppl, val_chrf=scores["chrf"])
    return selected


VOCAB_CHOICE = (
    "4000 pieces. Joint unigram models trained on the training side (sentences + the first "
    "150k phrases) gave validation tokens per sentence de/en 17.1/16.2 at 2k, 15.1/14.1 at 4k, "
    "13.3/12.5 at 8k. 8k saves ~12% of the decoder steps but its output layer and embeddings "
    "made an update about twice as slow on 1 CPU thread (and the files bigger); 2k adds ~13% "
    "more steps for little saving.")
