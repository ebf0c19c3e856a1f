"""The translator's training loop: checkpoints every N updates, validation,
learning rate reduced on plateau, early stopping, and resuming a run.

A run's state lives in its folder: `history.json` (one entry per checkpoint)
and `checkpoints/checkpoint_NNN.pt` (weights, and the Adam state since
checkpoints carry it). `--resume` rebuilds the plateau bookkeeping by
replaying the history through the same rule that wrote it, loads the last
checkpoint, and carries on numbering checkpoints, updates and elapsed time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from services.modelservice.runners.translator.translator import Translator
from training.common.checkpoint import load_checkpoint, save_checkpoint
from training.data.parallel import ParallelCorpus
from training.translator.batching import Batch, Encoded, epoch_batches
from training.translator.evaluate import perplexity, translate_and_score
from training.translator.export import TorchStepModel
from training.translator.model import Seq2Seq
from training.translator.vocab import EOS_ID, PAD_ID, UNK_ID


def drop_source_words(batch: Batch, p: float, generator: torch.Generator) -> Batch:
    """Each real source token (not EOS, not padding) becomes <unk> with chance p."""
    hit = torch.rand(batch.src.shape, generator=generator) < p
    hit &= (batch.src != PAD_ID) & (batch.src != EOS_ID)
    return Batch(batch.src.masked_fill(hit, UNK_ID), batch.src_mask, batch.tgt_in, batch.tgt_out)


def rank(metrics: dict[str, Any], metric: str = "bleu") -> tuple[float, float]:
    """Sort key, higher is better: validation BLEU then lower perplexity, or
    (metric "perplexity", Sockeye's default) the other way round."""
    bleu, ppl = metrics["val_bleu"], -metrics["val_perplexity"]
    return (bleu, ppl) if metric == "bleu" else (ppl, bleu)


@dataclass
class Plateau:
    """Best checkpoint so far by --optimized-metric, checkpoints since it, and
    the learning rate after halving on plateaus (--lr-factor after --lr-patience)."""

    lr: float
    factor: float
    patience: int
    min_lr: float
    metric: str = "bleu"
    best: dict[str, Any] | None = None
    since_best: int = 0
    since_drop: int = 0

    def update(self, metrics: dict[str, Any]) -> bool:
        """Record one checkpoint; True when it is the best so far."""
        if self.best is None or rank(metrics, self.metric) > rank(self.best, self.metric):
            self.best, self.since_best, self.since_drop = metrics, 0, 0
            return True
        self.since_best += 1
        self.since_drop += 1
        if self.since_drop >= self.patience:
            self.lr = max(self.min_lr, self.lr * self.factor)
            self.since_drop = 0
        return False

    def restart(self, lr: float) -> None:
        """A rate set by hand (--lr on --resume) gets --lr-patience checkpoints of its own
        before it halves; the best so far and the count since it carry on (--patience
        itself is counted within the stage, see out_of_patience)."""
        self.lr, self.since_drop = lr, 0


def out_of_patience(plateau: Plateau, stage_checkpoints: int, patience: int) -> bool:
    """--patience checkpoints without improvement, counted within this stage: a resumed
    run that had stopped on patience still gets `patience` checkpoints to improve."""
    return min(plateau.since_best, stage_checkpoints) >= patience


@dataclass
class RunState:
    """Where a (possibly resumed) run stands."""

    plateau: Plateau
    history: list[dict[str, Any]] = field(default_factory=list)
    updates: int = 0
    epoch: int = 0
    elapsed_offset: float = 0.0
    optimizer_state: dict[str, Any] | None = None


def fresh_state(args: argparse.Namespace) -> RunState:
    return RunState(Plateau(args.lr, args.lr_factor, args.lr_patience, args.min_lr,
                            args.optimized_metric))


def resume_state(args: argparse.Namespace, model: Seq2Seq, run_dir: Path) -> RunState:
    """Load the run's last checkpoint into `model`; replay its history."""
    history = json.loads((run_dir / "history.json").read_text())
    if not history:
        raise ValueError(f"{run_dir}/history.json is empty: nothing to resume")
    plateau = Plateau(history[0]["lr"], args.lr_factor, args.lr_patience, args.min_lr,
                      args.optimized_metric)
    for metrics in history:
        plateau.update(metrics)
    if args.lr is not None:  # an explicit --lr wins over the replayed schedule
        plateau.restart(args.lr)
    last = history[-1]
    checkpoint = load_checkpoint(run_dir / "checkpoints" / f"checkpoint_{last['checkpoint']:03d}.pt")
    model.load_state_dict(checkpoint.state_dict)
    return RunState(plateau, history, last["updates"], last["epoch"], last["elapsed_s"],
                    checkpoint.optimizer)


def fit(args: argparse.Namespace, model: Seq2Seq, device: torch.device,
        generator: torch.Generator, corpus: ParallelCorpus, train_pairs: Sequence[Encoded],
        batches: Sequence[Sequence[int]], valid_batches: Sequence[Batch], export_dir: Path,
        config: dict[str, Any], state: RunState,
        resample: Callable[[], tuple[list[Encoded], list[list[int]]]] | None = None
        ) -> tuple[list[dict[str, Any]], float, str]:
    """Train until patience, --max-updates or --max-seconds (this invocation's
    budget); returns (history, seconds over all invocations, why it stopped).

    `resample`, when given, makes each later epoch's pairs and batches
    (subword regularisation); --word-dropout replaces source tokens by <unk>."""
    optimizer = torch.optim.Adam(model.parameters(), lr=state.plateau.lr)
    if state.optimizer_state is not None:
        optimizer.load_state_dict(state.optimizer_state)
    for group in optimizer.param_groups:
        group["lr"] = state.plateau.lr
    history, plateau = state.history, state.plateau
    checkpoints = args.run_dir / "checkpoints"
    updates, epoch, first_update = state.updates, state.epoch, state.updates
    first_checkpoint = len(history)
    window_loss, window_tokens, window_start = 0.0, 0, time.perf_counter()
    started = time.perf_counter()
    stop_reason = ""
    progress = tqdm(total=args.max_updates or None, disable=args.quiet, unit="upd",
                    mininterval=10.0, file=sys.stdout)

    def validate() -> dict[str, Any]:
        nonlocal window_loss, window_tokens, window_start
        tick = time.perf_counter()
        ppl = perplexity(model, valid_batches, device)
        translator = Translator(export_dir, model=TorchStepModel(model.cpu()))
        scores, _ = translate_and_score(translator, [d for d, _ in corpus.valid],
                                        [e for _, e in corpus.valid], 1, args.alpha[0])
        model.to(device)
        metrics = {"checkpoint": len(history) + 1, "updates": updates, "epoch": epoch,
                   "lr": optimizer.param_groups[0]["lr"],
                   "train_loss": window_loss / max(window_tokens, 1),
                   "train_tokens_per_s": window_tokens / max(tick - window_start, 1e-9),
                   "val_perplexity": ppl, "val_bleu": scores["bleu"], "val_chrf": scores["chrf"],
                   "elapsed_s": round(state.elapsed_offset + time.perf_counter() - started, 1),
                   "validate_s": round(time.perf_counter() - tick, 1)}
        window_loss, window_tokens, window_start = 0.0, 0, time.perf_counter()
        return metrics

    while not stop_reason:
        epoch += 1
        if resample is not None and epoch > state.epoch + 1:  # the first epoch has its pairs
            train_pairs, batches = resample()
        for batch in epoch_batches(train_pairs, batches, generator):
            model.train()
            if args.word_dropout > 0:
                batch = drop_source_words(batch, args.word_dropout, generator)
            batch = batch.to(device)
            logits = model(batch.src, batch.src_mask, batch.tgt_in)  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(),
                                   ignore_index=PAD_ID, label_smoothing=args.label_smoothing,
                                   reduction="sum")
            tokens = batch.target_tokens
            optimizer.zero_grad(set_to_none=True)
            (loss / tokens).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            updates += 1
            window_loss += loss.item()
            window_tokens += tokens
            progress.update(1)
            out_of_time = time.perf_counter() - started >= args.max_seconds
            out_of_updates = bool(args.max_updates) and updates - first_update >= args.max_updates
            since_checkpoint = updates - (history[-1]["updates"] if history else 0)
            if since_checkpoint < args.checkpoint_interval and not (out_of_time or out_of_updates):
                continue  # every N updates counted from the last checkpoint, also after a resume
            metrics = validate()
            history.append(metrics)
            name = f"checkpoint_{metrics['checkpoint']:03d}.pt"
            save_checkpoint(checkpoints / name, model, model.init_args, config, metrics, epoch,
                            optimizer)
            improved = plateau.update(metrics)
            for group in optimizer.param_groups:
                group["lr"] = plateau.lr
            (args.run_dir / "history.json").write_text(json.dumps(history, indent=1))
            tqdm.write(f"checkpoint {metrics['checkpoint']} upd {updates} ep {epoch} "
                       f"lr {metrics['lr']:.1e} | train {metrics['train_loss']:.3f} "
                       f"({metrics['train_tokens_per_s']:.0f} tok/s) | val ppl "
                       f"{metrics['val_perplexity']:.2f} bleu {metrics['val_bleu']:.2f} chrF "
                       f"{metrics['val_chrf']:.1f}{' *' if improved else ''} | "
                       f"{metrics['elapsed_s']:.0f}s", file=sys.stdout)
            sys.stdout.flush()
            if out_of_patience(plateau, len(history) - first_checkpoint, args.patience):
                stop_reason = f"{args.patience} checkpoints without improvement"
            elif out_of_time:
                stop_reason = f"time budget of {args.max_seconds:.0f}s"
            elif out_of_updates:
                stop_reason = f"{args.max_updates} updates"
            if stop_reason:
                break
    progress.close()
    best = plateau.best
    assert best is not None
    print(f"stopped after {updates} updates ({stop_reason}); best checkpoint "
          f"{best['checkpoint']}: val bleu {best['val_bleu']:.2f} ppl {best['val_perplexity']:.2f}",
          flush=True)
    return history, state.elapsed_offset + time.perf_counter() - started, stop_reason
