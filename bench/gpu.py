"""python -m bench.gpu: the stack on CUDA, checked against CPU (run by bench/gpu_check.sh).

Starts every model of the repository with TENSORGATE_MODEL_DEVICE=cuda, then checks that each model
service reports CUDAExecutionProvider on its /metrics (`tensorgate_execution_provider_info`), and
that served outputs match ONNX Runtime on CPU in this process: the classifiers on samples/mnist/*.png,
a few translations (beam 5), GAN digits with fixed seeds. Writes the results as a markdown section
(--out) and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.raw_ort import service_threads, session
from bench.stack import ROOT, log, running_stack

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
PROVIDER = re.compile(r'^tensorgate_execution_provider_info\{([^}]*)\}\s+([0-9.eE+-]+)', re.M)
SENTENCES = ["Der Hund kam unter dem Tisch hervor.", "Ich habe keine Zeit.", "Das Wetter ist heute schön.",
             "Kannst du mir bitte helfen?", "Wir fahren morgen nach Berlin."]


@dataclass
class Check:
    name: str
    figure: str
    ok: bool


def providers_on(metrics_text: str) -> dict[str, set[str]]:
    """{model: providers reported with value 1} from a /metrics page."""
    out: dict[str, set[str]] = {}
    for labels, value in PROVIDER.findall(metrics_text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if float(value) == 1.0 and "model" in fields and "provider" in fields:
            out.setdefault(fields["model"], set()).add(fields["provider"])
    return out


def close_translation(cpu: tuple[str, float], gpu: tuple[str, float], score_tolerance: float) -> bool:
    """(text, score) pairs agree: the same score within the tolerance, whether the texts are identical or a
    near-tie between two hypotheses that float rounding on another device may flip."""
    return abs(cpu[1] - gpu[1]) <= score_tolerance


def render(checks: Sequence[Check]) -> str:
    lines = ["## GPU check (bench/gpu_check.sh)", "", "| check | figure | result |", "|---|---|---|"]
    lines += [f"| {c.name} | {c.figure} | {'ok' if c.ok else '**FAILED**'} |" for c in checks]
    return "\n".join(lines) + "\n"


def run_checks(args: argparse.Namespace) -> list[Check]:
    from services.client import Client, load_digit
    from tensorgate.repository import load_repository

    repo = Path(args.model_repository)
    specs = load_repository(repo)
    models = args.models or sorted(specs)
    checks: list[Check] = []
    want = CUDA if args.device == "cuda" else CPU
    env = {**os.environ, "TENSORGATE_MODEL_DEVICE": args.device}
    with running_stack(models, repo, args.ready_timeout, env) as stack, Client(stack.url, timeout_s=60) as client:
        for model in models:
            with urllib.request.urlopen(stack.metrics_url(model), timeout=10) as reply:
                seen = providers_on(reply.read().decode()).get(model, set())
            checks.append(Check(f"{model} runs on {want}", ", ".join(sorted(seen)) or "no provider reported",
                                seen == {want}))
        images = [load_digit(f) for f in sorted((ROOT / "samples" / "mnist").glob("*.png"))]
        for model in [m for m in models if m.startswith("mnist_")]:
            labels, probs = client.classify(images, model)
            cpu = session(specs[model].model_file, 1, 1, [CPU]).run(None, {"image": np.stack(images)})[0]
            diff, same = float(np.abs(cpu - probs).max()), bool((cpu.argmax(1) == labels).all())
            checks.append(Check(f"{model}: {len(images)} sample digits, served ({args.device}) vs CPU",
                                f"max abs Δp {diff:.2e}, labels {'equal' if same else 'DIFFER'}",
                                diff <= args.atol and same))
        if "digit_gan" in models:
            digits, seeds = np.arange(10, dtype=np.int64), np.arange(100, 110, dtype=np.int64)
            served = client.generate(digits.tolist(), seeds.tolist())
            cpu = session(specs["digit_gan"].model_file, 1, 1, [CPU]).run(None, {"digit": digits, "seed": seeds})[0]
            diff = float(np.abs(cpu - served).max())
            checks.append(Check(f"digit_gan: digits 0-9, seeds 100-109, served ({args.device}) vs CPU",
                                f"max abs Δpixel {diff:.2e}", diff <= args.image_atol))
        if "translator_de_en" in models:
            from bench.translator import InProcess

            local = InProcess(repo / "translator_de_en", service_threads(), [CPU])
            cpu_out = local.translator.translate(SENTENCES, beam_size=5, alpha=local.alpha,
                                                 max_output_len=local.max_output_len)
            gpu_out = client.translate(SENTENCES, beam_size=5)
            identical = sum(c[0] == g[0] for c, g in zip(cpu_out, gpu_out))
            close = all(close_translation(c, g, args.score_tolerance) for c, g in zip(cpu_out, gpu_out))
            worst = max(abs(c[1] - g[1]) for c, g in zip(cpu_out, gpu_out))
            checks.append(Check(f"translator_de_en: {len(SENTENCES)} sentences, beam 5, served ({args.device}) vs CPU",
                                f"{identical}/{len(SENTENCES)} identical, max abs Δscore {worst:.2e}",
                                close and identical >= len(SENTENCES) - 1))
    return checks


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=(__doc__ or "").splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="device of the model services (cpu: the same checks as a dry run on a machine without a GPU)")
    p.add_argument("--models", nargs="*", help="models to start and check (default: every model of the repository)")
    p.add_argument("--model-repository", default=str(ROOT / "models"), help="the model repository")
    p.add_argument("--atol", type=float, default=1e-3, help="largest accepted probability difference")
    p.add_argument("--image-atol", type=float, default=5e-3, help="largest accepted GAN pixel difference (0..1)")
    p.add_argument("--score-tolerance", type=float, default=0.05,
                   help="largest accepted translation score difference (a differing text passes only within it)")
    p.add_argument("--ready-timeout", type=float, default=180.0, help="seconds the stack may take to come up")
    p.add_argument("--out", default=str(ROOT / ".bench" / "gpu-check.md"), help="markdown section to write")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    checks = run_checks(args)
    text = render(checks)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    failed = [c.name for c in checks if not c.ok]
    if failed:
        log("GPU check FAILED: " + "; ".join(failed))
        return 1
    log(f"GPU check passed ({len(checks)} checks); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
