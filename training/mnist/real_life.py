"""Accuracy of the classifiers on the real-life digit set, through the served path.

    python -m training.mnist.real_life                       # starts a local stack, both classifiers
    python -m training.mnist.real_life --url 127.0.0.1:8001  # a stack that is already up
    python -m training.mnist.real_life --write-cards         # and record it in models/<name>/1/card.json

Every image file of the set (training.data.digit_photos; made first when missing) goes to the
gateway as it is, one file per ModelInfer request in the `image_bytes` input, many requests in
flight so the model services batch them; the model service prepares it (tensorgate.digits) and
runs the model. What comes back is compared with the label in the file name. A refused image
(INVALID_ARGUMENT: no ink, ...) counts as wrong. This is what an application gets, unlike
validation accuracy on MNIST.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import grpc
import numpy as np

from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.proto import grpc_service_pb2_grpc
from tensorgate.tensors import add_input, response_outputs
from training.common.card import command_line

DEFAULT_SET = Path("data/real_digits")
IN_FLIGHT = 8  # the services batch them; more would only wait in the queue (5 s deadline)
_LABEL = re.compile(r"_label(\d)\.")


@dataclass(frozen=True)
class Result:
    model: str
    correct: int
    refused: int
    total: int
    per_digit: dict[str, float]
    refusals: dict[str, int]  # message (without the element index) -> count
    predictions: dict[str, int]  # file -> predicted digit (-1: refused)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


def set_files(folder: Path) -> list[tuple[Path, int]]:
    files = sorted(p for p in folder.iterdir() if _LABEL.search(p.name))
    if not files:
        raise SystemExit(f"no labelled images (NAME_labelD.ext) in {folder}")
    return [(p, int(_LABEL.search(p.name).group(1))) for p in files]  # type: ignore[union-attr]


def classify(stub: grpc_service_pb2_grpc.GRPCInferenceServiceStub, model: str,
             files: Sequence[tuple[Path, int]], timeout_s: float = 60.0) -> Result:
    """Send every file on its own (IN_FLIGHT at a time) and score the answers."""
    pending: list[tuple[Path, Any]] = []  # (file, its grpc future)
    predictions: dict[str, int] = {}
    refusals: dict[str, int] = {}

    def settle(path: Path, call: Any) -> None:
        try:
            probabilities = response_outputs(call.result())["probabilities"]  # (1, 10)
            predictions[path.name] = int(np.argmax(probabilities[0]))
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            predictions[path.name] = -1
            reason = re.sub(r"element \d+: ", "", err.details() or "")
            refusals[reason] = refusals.get(reason, 0) + 1

    for path, _ in files:
        request = pb.ModelInferRequest(model_name=model)
        add_input(request, "image_bytes", np.array([path.read_bytes()], dtype=object))  # BYTES [1]
        request.outputs.add(name="probabilities")
        pending.append((path, stub.ModelInfer.future(request, timeout=timeout_s)))
        if len(pending) >= IN_FLIGHT:
            settle(*pending.pop(0))
    for path, call in pending:
        settle(path, call)
    correct = sum(predictions[p.name] == label for p, label in files)
    per_digit = {str(d): float(np.mean([predictions[p.name] == d for p, label in files if label == d]))
                 for d in range(10) if any(label == d for _, label in files)}
    return Result(model, correct, sum(v == -1 for v in predictions.values()), len(files), per_digit,
                  refusals, predictions)


def _free_block(size: int) -> int:
    """The first of `size` consecutive ports that nothing listens on (the stack numbers the model
    services' ports from a base)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + size >= 65535:
            continue
        try:
            for port in range(base, base + size):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {size} free consecutive ports")


def serve(repository: Path, models: Sequence[str], state: Path) -> tuple[list[Any], str]:
    """Start a local stack (redis, the models' services, the gateway; no Prometheus) on free
    ports with services.stack; returns its children (stop them) and the gateway's address."""
    from services.stack import CONTRACT_MODELS, build, wait_ready

    slots = len(CONTRACT_MODELS) + 8
    base, metrics, own = _free_block(slots), _free_block(slots), _free_block(3)
    args = argparse.Namespace(state_dir=str(state), redis_port=own, model_repository=str(repository),
                              models=list(models), model_base_port=base, model_metrics_base_port=metrics,
                              port=own + 1, metrics_port=own + 2, no_prometheus=True, prometheus_port=0)
    children, _ = build(args)
    try:
        for child in children:
            child.start()
        wait_ready(children, 180.0)
    except BaseException:
        for child in reversed(children):
            child.stop(5.0)
        raise
    return children, f"127.0.0.1:{own + 1}"


def write_cards(repository: Path, results: Sequence[Result], set_card: dict[str, Any], command: str,
                url: str) -> None:
    for result in results:
        card_path = repository / result.model / "1" / "card.json"
        card = json.loads(card_path.read_text())
        card["real_life"] = {
            "set": set_card.get("name", "real_digits"), "set_sha256": set_card.get("sha256"),
            "set_command": "python -m training.data.digit_photos", "set_seed": set_card.get("seed"),
            "description": set_card.get("description"), "why_real_life": set_card.get("why"),
            "set_fonts": set_card.get("fonts", {}).get("debs"),
            "path": "served: each encoded file as ModelInfer image_bytes through the gateway, prepared by the "
                    "model service (tensorgate.digits)",
            "accuracy": result.accuracy, "images": result.total, "correct": result.correct,
            "refused": result.refused, "refusals": result.refusals, "accuracy_per_digit": result.per_digit,
            "mnist_test_accuracy": card.get("metrics", {}).get("test_accuracy"),
            "command": command, "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "served_at": url,
        }
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"wrote real_life into {card_path}")


def main(argv: Sequence[str] | None = None) -> list[Result]:
    p = argparse.ArgumentParser(prog="python -m training.mnist.real_life", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="", help="gateway of a running stack, host:port (default: start one)")
    p.add_argument("--set", type=Path, default=DEFAULT_SET,
                   help=f"the image folder (default: {DEFAULT_SET}, made when missing)")
    p.add_argument("--models", nargs="+", default=["mnist_mlp", "mnist_cnn"],
                   help="classifiers to measure (default: mnist_mlp mnist_cnn)")
    p.add_argument("--model-repository", type=Path, default=Path("models"),
                   help="repository the started stack serves and whose cards --write-cards updates (default: models)")
    p.add_argument("--write-cards", action="store_true", help="record the figures in each model's card.json")
    p.add_argument("--json", type=Path, default=None, help="also write the figures (and every prediction) here")
    args = p.parse_args(argv)
    command = command_line("training.mnist.real_life", argv if argv is not None else sys.argv[1:])

    if not (args.set / "card.json").exists():
        from training.data.digit_photos import main as make_set
        make_set(["--out", str(args.set)])
    set_card = json.loads((args.set / "card.json").read_text())
    files = set_files(args.set)

    children: list[Any] = []
    url = args.url
    with tempfile.TemporaryDirectory(prefix="real-life-stack-") as state:
        if not url:
            children, url = serve(args.model_repository, args.models, Path(state))
        try:
            with grpc.insecure_channel(url, options=[("grpc.max_send_message_length", 64 << 20),
                                                     ("grpc.max_receive_message_length", 64 << 20)]) as channel:
                stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
                results = []
                for model in args.models:
                    started = time.perf_counter()
                    result = classify(stub, model, files)
                    results.append(result)
                    print(f"{model:<10} {result.accuracy:7.2%} on {result.total} real-life images "
                          f"({result.refused} refused) in {time.perf_counter() - started:.1f}s", flush=True)
        finally:
            for child in reversed(children):
                child.stop(10.0)
    if args.write_cards:
        write_cards(args.model_repository, results, set_card, command, "local stack" if not args.url else args.url)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ | {"accuracy": r.accuracy} for r in results], indent=1))
    return results


if __name__ == "__main__":
    main()
