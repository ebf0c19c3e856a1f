"""The `tensorgate` console script: the SDK from the shell, and `import-model` for the repository.

Exit status: 0 success, 1 the server refused or could not answer, or import-model refused the
graph (the message on stderr), 2 usage (bad flags, a file that cannot be read).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tensorgate import __version__
from tensorgate.client import DEFAULT_URL, Client
from tensorgate.results import InferenceError

OK, REFUSED, USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input found after parsing (exit status 2)."""


class Refused(Exception):
    """A local command refused its input (exit status 1), as a server refuses a call."""


def _classify(client: Client, args: argparse.Namespace) -> None:
    try:
        images = [Path(f).read_bytes() for f in args.files]
    except OSError as err:
        raise UsageError(f"cannot read {err.filename}: {err.strerror}") from None
    result = client.classify(images, args.model)
    for file, label, probs in zip(args.files, result.labels, result.probabilities):
        if args.json:
            print(json.dumps({"file": file, "label": int(label), "probability": round(float(probs[label]), 6),
                              "probabilities": [round(float(p), 6) for p in probs]}))
        else:
            print(f"{file}: {label} (p={probs[label]:.3f})")


def _translate(client: Client, args: argparse.Namespace) -> None:
    for sentence in args.sentences:
        try:
            sentence.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"not valid UTF-8: {sentence.encode('utf-8', 'backslashreplace').decode()}") from None
    if args.stream:
        for index, translation in client.translate_stream(args.sentences, args.beam_size):
            print(f"[{index}] {translation.text}", flush=True)
    else:
        for translation in client.translate(args.sentences, args.beam_size):
            print(translation.text)


def _generate(client: Client, args: argparse.Namespace) -> None:
    drawn = client.generate(args.digit, args.count, args.seed)
    try:
        Path(args.output).write_bytes(drawn.png)
    except OSError as err:
        raise UsageError(f"cannot write {args.output}: {err.strerror}") from None
    last = f"..{drawn.seeds[-1]}" if len(drawn.seeds) > 1 else ""
    print(f"{args.output}: {len(drawn.seeds)} drawings of {args.digit} (seeds {drawn.seeds[0]}{last})")


def _models(client: Client, args: argparse.Namespace) -> None:
    for m in client.repository_index().models:
        print(f"{m.name:<20} {m.version:>7}  {m.state}" + (f"  ({m.reason})" if m.reason else ""))


def _mean_ms(ns: int, count: int) -> str:
    return f"{ns / count / 1e6:.2f}" if count else "-"


def _stats(client: Client, args: argparse.Namespace) -> None:
    models = client.statistics(args.model).model_stats
    print(f"{'model':<20} {'requests ok':>11} {'failed':>7} {'inferences':>10} {'batches':>8} "
          f"{'queue ms':>9} {'compute ms':>10}")
    for s in models:
        infer = s.inference_stats
        compute = infer.compute_input.ns + infer.compute_infer.ns + infer.compute_output.ns
        print(f"{s.name:<20} {infer.success.count:>11} {infer.fail.count:>7} {s.inference_count:>10} "
              f"{s.execution_count:>8} {_mean_ms(infer.queue.ns, infer.queue.count):>9} "
              f"{_mean_ms(compute, infer.compute_infer.count):>10}")


def _import_model(args: argparse.Namespace) -> None:
    # Imported here: the other commands need neither onnx nor onnxruntime.
    from tensorgate.model_import import BadArgument, ImportRefused, import_model

    try:
        imported = import_model(Path(args.file), Path(args.repository), args.name, args.version,
                                args.max_batch_size, args.force)
    except BadArgument as err:
        raise UsageError(str(err)) from None
    except OSError as err:
        raise UsageError(f"cannot read {err.filename}: {err.strerror}") from None
    except ImportRefused as err:
        raise Refused(str(err)) from None
    for warning in imported.warnings:
        print(f"tensorgate import-model: warning: {warning}", file=sys.stderr)
    spec = imported.spec
    batching = f"batches up to {spec.max_batch_size}" if spec.max_batch_size else "does not batch (max_batch_size 0)"
    print(f"{spec.model_file}: model '{spec.name}' version {spec.version}, {batching}")
    for kind, tensors in (("input", spec.inputs), ("output", spec.outputs)):
        for t in tensors:
            print(f"  {kind:<6} {t.name:<24} {t.datatype:<6} {list(t.shape)}")
    print(f"{imported.config_path}: written")


def _batch_size(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}': must be 0 (no batching) or a positive integer")
    return int(text)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("TENSORGATE_URL", DEFAULT_URL),
                        help=f"gateway address host:port (default: $TENSORGATE_URL or {DEFAULT_URL})")
    common.add_argument("--api-key", default=os.environ.get("TENSORGATE_API_KEY"),
                        help="API key, when the gateway requires one (default: $TENSORGATE_API_KEY)")
    common.add_argument("--timeout", type=float, default=30.0, help="deadline of the call in seconds (default: 30)")
    common.add_argument("--tls", action="store_true", help="speak TLS, trusting the system's roots (implied by --ca-cert)")
    common.add_argument("--ca-cert", default=os.environ.get("TENSORGATE_CA_CERT"),
                        help="PEM file of the roots that sign the gateway's certificate (default: $TENSORGATE_CA_CERT)")
    common.add_argument("--cert", default=os.environ.get("TENSORGATE_CLIENT_CERT"),
                        help="client certificate (PEM) for mutual TLS (default: $TENSORGATE_CLIENT_CERT)")
    common.add_argument("--key", default=os.environ.get("TENSORGATE_CLIENT_KEY"),
                        help="private key (PEM) of --cert (default: $TENSORGATE_CLIENT_KEY)")
    top = argparse.ArgumentParser(prog="tensorgate", description="Talk to a tensorgate gateway: read digits, "
                                  "translate German, draw digits, list models and their statistics. "
                                  "Import ONNX models into a model repository.")
    top.add_argument("--version", action="version", version=f"tensorgate {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[Client, argparse.Namespace], None], text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(run=run)
        return p

    classify = command("classify", _classify, "classify digit photos or scans (PNG, JPEG, BMP, GIF, WebP); "
                       "the server prepares them as MNIST was made")
    classify.add_argument("files", nargs="+", metavar="FILE", help="image files")
    classify.add_argument("--model", default="mnist_cnn", help="mnist_cnn (default) or mnist_mlp")
    classify.add_argument("--json", action="store_true",
                          help="one JSON object per line: file, label, probability, probabilities")
    translate = command("translate", _translate, "translate German sentences to English, one line each")
    translate.add_argument("sentences", nargs="+", metavar="SENTENCE", help="German sentences (quote each)")
    translate.add_argument("--beam-size", type=int, default=None, help="beam size (default: the model's; 1 = greedy)")
    translate.add_argument("--stream", action="store_true",
                           help="print each translation as soon as it is done, as '[index] text'")
    generate = command("generate", _generate, "draw a digit with the GAN; writes the drawings as a PNG grid")
    generate.add_argument("digit", type=int, metavar="DIGIT", help="the digit to draw, 0-9")
    generate.add_argument("--count", type=int, default=8, help="drawings (default: 8)")
    generate.add_argument("--seed", type=int, default=0, help="seed of the first drawing; the next ones count up")
    generate.add_argument("-o", "--output", default="digits.png", help="PNG file to write (default: digits.png)")
    command("models", _models, "the models the gateway serves and their state")
    stats = command("stats", _stats, "server-side statistics (Triton's ModelStatistics) of one model or all")
    stats.add_argument("model", nargs="?", default="", metavar="MODEL", help="model name (default: all)")
    text = ("copy an ONNX graph into the model repository and write its config.pbtxt from the graph "
            "(as Triton's auto-complete does); no server is involved")
    imports = sub.add_parser("import-model", help=text, description=text)
    imports.set_defaults(local=_import_model)
    imports.add_argument("file", metavar="FILE.onnx", help="the ONNX graph")
    imports.add_argument("--name", required=True, help="model name: its folder in the repository")
    imports.add_argument("--max-batch-size", type=_batch_size, default=None,
                         help="largest batch when the graph's first dimension is dynamic (default: 8, "
                              "model_import.DEFAULT_MAX_BATCH_SIZE; 0: no batching)")
    imports.add_argument("--repository", default="models", help="the model repository (default: models)")
    imports.add_argument("--version", default="1", help="version folder to write, a positive integer (default: 1)")
    imports.add_argument("--force", action="store_true",
                         help="replace the config and this version of an existing model (other versions stay)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 on bad usage
    try:
        if hasattr(args, "local"):  # works on local files, no server
            args.local(args)
            return OK
        with Client(args.url, timeout_s=args.timeout, api_key=args.api_key, tls=args.tls,
                    root_certificates=args.ca_cert, certificate_chain=args.cert, private_key=args.key) as client:
            args.run(client, args)
    except UsageError as err:
        print(f"tensorgate {args.command}: error: {err}", file=sys.stderr)
        return USAGE
    except (InferenceError, Refused) as err:
        print(f"tensorgate {args.command}: {err}", file=sys.stderr)
        return REFUSED
    return OK


if __name__ == "__main__":
    sys.exit(main())
