"""Train the German -> English translator and publish it to the model repository.

    python -m training.translator --threads 1 --max-seconds 4200   # full run (Ding dictionary)
    python -m training.translator --corpus-dir DIR                  # your {train,valid,test}.{de,en}
    python -m training.translator --dry-run --synthetic             # seconds, no network
    python -m training.translator --resume --max-seconds 3600       # carry on training the run

Sockeye-style: token-based, length-bucketed batches; Adam with gradient
clipping and label smoothing; a checkpoint every --checkpoint-interval
updates with validation perplexity and greedy sacreBLEU; the learning rate
halves after --lr-patience checkpoints without a better --optimized-metric;
training stops after --patience such checkpoints or --max-seconds; --resume
continues the run in --run-dir from its last checkpoint. The best
checkpoint (validation BLEU, ties: lower perplexity) or, with --average N,
the average of the N best when that scores at least as well on validation,
is exported to encoder.onnx + decoder_step.onnx, checked for parity, and
evaluated once on the test set (beam and greedy through ONNX Runtime,
beam through the same search over PyTorch).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import sentencepiece as spm
import torch

from services.modelservice.runners.translator.translator import Translator, sha256_of
from training.common.card import command_line, plain_config
from training.common.checkpoint import build_model, load_checkpoint, save_checkpoint
from training.common.runtime import pick_device, seed_everything, set_threads
from training.data.ding import load_ding, normalise
from training.data.parallel import (Pair, ParallelCorpus, file_sha256, load_parallel_dir,
                                    read_pairs)
from training.translator.batching import Encoded, collate, make_batches
from training.translator.export import manifest, write_manifest
from training.translator.fit import fit, fresh_state, resume_state
from training.translator.model import Seq2Seq
from training.translator.publish import publish, select_model
from training.translator.synthetic import synthetic_corpus
from training.translator.vocab import PAD_ID, load_sentencepiece, train_sentencepiece

NAME = "translator_de_en"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.translator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--data-dir", type=Path, default=Path("data/ding"),
      help="Ding cache folder, fetched with apt-get when missing (default: data/ding)")
    a("--corpus-dir", type=Path, default=None,
      help="use plain parallel files {train,valid,test}.{de,en} from this folder instead")
    a("--synthetic", action="store_true", help="tiny generated corpus (tests, no network)")
    a("--extra-parallel", type=Path, nargs="+", default=[], metavar="DIR",
      help="more training-only pairs from DIR/train.de and DIR/train.en (e.g. the software "
           "catalogs of `python -m training.data.gettext`); a pair whose German matches a "
           "validation or test sentence is left out")
    a("--max-phrases", type=int, default=60_000,
      help="dictionary phrase pairs added to training, a fixed hash-ordered subset (default: 60000)")
    a("--sentence-copies", type=int, default=1,
      help="times each training sentence pair is seen per epoch, to keep sentences weighty "
           "next to many short phrases (default: 1)")
    a("--vocab-size", type=int, default=4000, help="joint sentencepiece pieces (default: 4000)")
    a("--max-len", type=int, default=80, help="longest training pair in tokens (default: 80)")
    a("--embed", type=int, default=256, help="embedding size (default: 256)")
    a("--enc-hidden", type=int, default=512,
      help="encoder state size, both directions together (default: 512)")
    a("--enc-layers", type=int, default=1, help="bidirectional encoder layers (default: 1)")
    a("--dec-hidden", type=int, default=384, help="decoder LSTM size (default: 384)")
    a("--dec-layers", type=int, default=1, help="decoder LSTM layers (default: 1)")
    a("--attention", choices=("mlp", "dot"), default="mlp",
      help="mlp (Bahdanau) or dot (Luong general) attention (default: mlp)")
    a("--attention-size", type=int, default=256, help="mlp attention size (default: 256)")
    a("--dropout", type=float, default=None,
      help="dropout (default: 0.2 for a new run; on --resume the run's own unless given)")
    a("--word-dropout", type=float, default=0.0,
      help="chance that a training source token is replaced by <unk> (default: 0)")
    a("--subword-alpha", type=float, default=0.0,
      help="subword regularisation: with alpha > 0, the training pairs are re-segmented every "
           "epoch by sampling from the sentencepiece lattice (nbest -1, smoothing alpha; "
           "0.5 is mild, 0.1 fragments words); 0 = the one best segmentation (default: 0)")
    a("--subword-sides", choices=("source", "both"), default="source",
      help="which side --subword-alpha samples (default: source)")
    a("--batch-tokens", type=int, default=2048,
      help="padded target tokens per batch (default: 2048)")
    a("--bucket-width", type=int, default=4, help="length bucket width in tokens (default: 4)")
    a("--lr", type=float, default=None,
      help="Adam learning rate (default: 1e-3; with --resume, the run's own schedule)")
    a("--lr-factor", type=float, default=0.5, help="learning-rate factor on plateau (default: 0.5)")
    a("--lr-patience", type=int, default=2,
      help="checkpoints without improvement before the rate drops (default: 2)")
    a("--optimized-metric", choices=("bleu", "perplexity"), default="bleu",
      help="validation figure the plateau schedule and --patience watch, the other breaking "
           "ties; the shipped checkpoint is still chosen by BLEU (default: bleu)")
    a("--min-lr", type=float, default=1e-5, help="lowest learning rate (default: 1e-5)")
    a("--clip", type=float, default=1.0, help="gradient norm clipping (default: 1.0)")
    a("--label-smoothing", type=float, default=0.1, help="label smoothing (default: 0.1)")
    a("--checkpoint-interval", type=int, default=300,
      help="updates between checkpoints (default: 300)")
    a("--patience", type=int, default=6,
      help="stop after this many checkpoints without improvement; a --resume stage gets at "
           "least this many of its own (default: 6)")
    a("--max-updates", type=int, default=0, help="stop after this many updates, 0 = no limit")
    a("--max-seconds", type=float, default=4200.0,
      help="stop training after this many seconds (default: 4200)")
    a("--average", type=int, default=3,
      help="average the N best checkpoints if that helps on validation, 0/1 = off (default: 3)")
    a("--beam-size", type=int, default=5, help="beam size for the test figures (default: 5)")
    a("--alpha", type=float, nargs="+", default=[0.6, 1.0, 1.4],
      help="length penalty alpha; with several, the one with the best beam validation BLEU "
           "is used for the test figures and shipped as the default (default: 0.6 1.0 1.4)")
    a("--seed", type=int, default=1, help="random seed (default: 1)")
    a("--device", choices=("cpu", "cuda", "auto"), default="auto",
      help="where to train (default: auto = cuda if available)")
    a("--threads", type=int, default=2, help="torch intra-op threads, 0 = torch's default (default: 2)")
    a("--resume", action="store_true",
      help="continue the run in --run-dir from its last checkpoint (same model flags; data "
           "flags may differ, the tokenizer is kept); --max-seconds is this invocation's budget")
    a("--publish-only", action="store_true",
      help="skip training: select, export, evaluate and publish the checkpoints already in "
           "--run-dir (same data flags as the training run)")
    a("--dry-run", action="store_true",
      help="tiny subset, a few updates; temporary folders unless --out-dir/--run-dir are given")
    a("--quiet", action="store_true", help="no progress bar")
    a("--out-dir", type=Path, default=None, help="model repository root (default: models)")
    a("--run-dir", type=Path, default=None,
      help="checkpoints, history, curves, exports (default: runs/translator_de_en)")
    a("--version", type=int, default=1, help="model version folder (default: 1)")
    return p.parse_args(argv)


def load_corpus(args: argparse.Namespace) -> ParallelCorpus:
    if args.synthetic:
        corpus = synthetic_corpus()
    elif args.corpus_dir is not None:
        corpus = load_parallel_dir(args.corpus_dir)
    else:
        corpus = load_ding(args.data_dir)
    phrases = sorted(corpus.extra_train,
                     key=lambda p: hashlib.sha256(f"{p[0]}\t{p[1]}".encode()).hexdigest())
    phrases = phrases[:args.max_phrases]
    held_out = {normalise(de) for de, _ in corpus.valid + corpus.test}
    checksums, source, extras = dict(corpus.checksums), corpus.source, []
    for directory in args.extra_parallel:
        paths = [directory / f"train.{lang}" for lang in ("de", "en")]
        extra = [pair for pair in read_pairs(*paths) if normalise(pair[0]) not in held_out]
        extras += extra
        checksums.update({f"{directory.name}/{path.name}": file_sha256(path) for path in paths})
        source += f" + {len(extra)} pairs from {directory}"
    if args.dry_run:
        return ParallelCorpus(corpus.train[:1500], corpus.valid[:24], corpus.test[:24],
                              source + " (dry-run subset)", phrases[:500] + extras[:100],
                              checksums, corpus.split_rule)
    return ParallelCorpus(corpus.train, corpus.valid, corpus.test, source, phrases + extras,
                          checksums, corpus.split_rule)


def encode_pairs(processor: Any, pairs: Sequence[Pair], max_len: int, alpha: float = 0.0,
                 sides: str = "source") -> list[Encoded]:
    """Token ids of both sides, pairs of max_len tokens or more left out; with alpha > 0
    the source (or both sides) is a segmentation sampled from the lattice."""
    def encode(texts: list[str], sample: bool) -> list[list[int]]:
        if not sample:
            return processor.Encode(texts)
        return processor.Encode(texts, enable_sampling=True, alpha=alpha, nbest_size=-1)

    src = encode([de for de, _ in pairs], alpha > 0)
    tgt = encode([en for _, en in pairs], alpha > 0 and sides == "both")
    return [(s, t) for s, t in zip(src, tgt) if 0 < len(s) < max_len and 0 < len(t) < max_len]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the model card it wrote."""
    args = parse_args(argv)
    if args.dry_run:
        scratch = Path(tempfile.mkdtemp(prefix=f"{NAME}-dry-run-"))
        args.out_dir = args.out_dir or scratch / "models"
        args.run_dir = args.run_dir or scratch / "run"
        args.vocab_size = min(args.vocab_size, 300)
        args.embed, args.enc_hidden, args.dec_hidden, args.attention_size = 32, 48, 40, 24
        args.checkpoint_interval, args.max_updates = 6, 12
        args.batch_tokens = min(args.batch_tokens, 400)
    args.out_dir = args.out_dir or Path("models")
    args.run_dir = args.run_dir or Path("runs") / NAME
    if args.dropout is None and not (args.resume or args.publish_only):
        args.dropout = 0.2
    config = plain_config(args)
    command = command_line("training.translator", list(argv if argv is not None else sys.argv[1:]))
    if args.lr is None and not args.resume:
        args.lr = 1e-3

    set_threads(args.threads)
    generator = seed_everything(args.seed)
    device = pick_device(args.device)
    started_job = time.perf_counter()
    corpus = load_corpus(args)
    print(f"{NAME}: data {corpus.source}: {corpus.sizes()}", flush=True)

    # Tokenizer and manifest first: validation BLEU already runs the serving search code.
    export_dir = args.run_dir / "export"
    spm_path = export_dir / "sentencepiece.model"
    if not (args.publish_only or args.resume):  # the checkpoints' embeddings use the old one
        train_sentencepiece(corpus.train + corpus.extra_train, args.vocab_size, spm_path)
    processor = load_sentencepiece(spm_path)
    vocab = processor.GetPieceSize()
    if args.subword_alpha > 0:
        spm.set_random_generator_seed(args.seed)

    def training_set() -> tuple[list[Encoded], list[list[int]]]:
        """The epoch's pairs and batches (re-segmented each call under --subword-alpha)."""
        sampled = functools.partial(encode_pairs, processor, max_len=args.max_len,
                                    alpha=args.subword_alpha, sides=args.subword_sides)
        pairs = ([p for _ in range(args.sentence_copies) for p in sampled(corpus.train)]
                 if args.subword_alpha > 0 else sampled(corpus.train) * args.sentence_copies)
        pairs += sampled(corpus.extra_train)
        return pairs, make_batches(pairs, args.batch_tokens, args.bucket_width)

    train_pairs, batches = training_set()
    valid_pairs = [(processor.EncodeAsIds(de), processor.EncodeAsIds(en)) for de, en in corpus.valid]
    valid_batches = [collate([valid_pairs[i] for i in b])
                     for b in make_batches(valid_pairs, 4096, args.bucket_width)]

    checkpoints = args.run_dir / "checkpoints"
    if args.publish_only or args.resume:  # the run's own model arguments, whatever the flags say
        model = build_model(load_checkpoint(checkpoints / "checkpoint_001.pt"), Seq2Seq).to(device)
        if args.dropout is not None and args.resume:  # regularisation may change between stages
            model.set_dropout(args.dropout)
    else:
        model = Seq2Seq(vocab, args.embed, args.enc_hidden, args.enc_layers, args.dec_hidden,
                        args.dec_layers, args.attention, args.attention_size, args.dropout,
                        PAD_ID).to(device)
    max_source_len = max_target_len = 2 * args.max_len
    write_manifest(export_dir / "manifest.json",
                   manifest(model, sha256_of(spm_path), max_source_len, max_target_len))
    parameters = sum(p.numel() for p in model.parameters())
    train_tokens = sum(len(t) + 1 for _, t in train_pairs)
    print(f"vocabulary {vocab}; {len(train_pairs)} training pairs ({train_tokens} target tokens) "
          f"in {len(batches)} batches; {parameters:,} parameters on {device}", flush=True)

    stages_path = args.run_dir / "stages.json"
    if args.publish_only:
        history = json.loads((args.run_dir / "history.json").read_text())
        stages = json.loads(stages_path.read_text()) if stages_path.is_file() else \
            [{"command": command.replace(" --publish-only", "")}]
        train_seconds = history[-1]["elapsed_s"]
        stop_reason = stages[-1].get("stopped", "see the run's train.log")
    else:
        if args.resume:
            state = resume_state(args, model, args.run_dir)
            generator.manual_seed(args.seed + len(state.history))  # not the first pass's order
            stages = json.loads(stages_path.read_text()) if stages_path.is_file() else []
        else:
            state, stages = fresh_state(args), []
        first, lr_at_start = len(state.history) + 1, state.plateau.lr
        history, train_seconds, stop_reason = fit(args, model, device, generator, corpus,
                                                  train_pairs, batches, valid_batches, export_dir,
                                                  config, state,
                                                  training_set if args.subword_alpha > 0 else None)
        stages.append({"command": command, "checkpoints": [first, len(history)],
                       "max_phrases": args.max_phrases, "sentence_copies": args.sentence_copies,
                       "extra_parallel": [str(d) for d in args.extra_parallel],
                       "dropout": model.init_args["dropout"], "word_dropout": args.word_dropout,
                       "subword_alpha": args.subword_alpha,
                       "train_pairs": len(train_pairs), "train_target_tokens": train_tokens,
                       "threads": torch.get_num_threads(), "max_seconds": args.max_seconds,
                       "lr_at_start": lr_at_start, "optimizer": "Adam state restored"
                       if state.optimizer_state is not None else "fresh Adam",
                       "stopped": stop_reason})
        stages_path.write_text(json.dumps(stages, indent=1) + "\n")

    selected = select_model(args, history, checkpoints, export_dir, corpus, valid_batches)
    return publish(args, corpus, selected, history, export_dir, spm_path, stages,
                   train_seconds, time.perf_counter() - started_job, stop_reason, device,
                   parameters, len(train_pairs), train_tokens)

