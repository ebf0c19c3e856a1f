"""python -m bench.int8: the translator's decoder in int8, two ways, against fp32: speed, quality,
and whether a sentence's result still ignores its batch-mates.

Builds the decoder step as the model service runs it (fold.py applied) and two int8 versions:
"int8 per tensor", ONNX Runtime's dynamic quantization of the weight MatMuls (int8 weights per
output channel, one activation scale per tensor, computed at run time; --weights picks which
MatMuls), and "int8 per row", the model service's own (int8.py, `decoder_precision: int8`: a
scale per activation row). Reports:

- one decoder step at each --rows (1 intra-op thread, no spinning);
- batch independence: the largest difference in any output between row 0 decoded alone and row 0
  decoded among --rows[-1] rows. The continuous batcher's promise (the same translation whoever
  shares the batch) holds only where this is 0 or float rounding;
- the test split all at once (beam 5, batches of 32): sentences/s, BLEU, and the share of
  translations identical to fp32's.

Not part of `make bench`: a check to run by hand before reaching for quantization.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bench.raw_ort import session_options
from bench.translator import InProcess, bleu, identical_share, test_pairs
from services.modelservice.runners.translator.fold import fold_input_projection
from services.modelservice.runners.translator.graph_edit import probe
from services.modelservice.runners.translator.int8 import batch_dependence, quantize_rows, weight_matmuls

MODEL = Path(__file__).resolve().parent.parent / "models" / "translator_de_en"


# Which weight MatMuls --weights quantizes: their weight initializers' names contain one of these.
SUBSETS = {"all": ("",), "lstm": ("weight_hh", "fold.0.rest", "weight_ih"),
           "no-output": ("weight_hh", "fold.0.rest", "weight_ih", "query", "combine", "pre_output")}


def quantized(model: onnx.ModelProto, folder: Path, subset: str = "all") -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    plain, names = weight_matmuls(model)
    names = [n for n in names if any(part in n for part in SUBSETS[subset])]
    onnx.save(plain, folder / "matmul.onnx")
    quantize_dynamic(folder / "matmul.onnx", folder / "int8.onnx", op_types_to_quantize=["MatMul"],
                     nodes_to_quantize=names, weight_type=QuantType.QInt8, per_channel=True)
    return folder / "int8.onnx"


def options() -> ort.SessionOptions:
    """The model service's options at one thread (bench.raw_ort), without ORT's warnings."""
    opts = session_options(1, 1)
    opts.log_severity_level = 3
    return opts


def feed_for(session: ort.InferenceSession, rows: int) -> dict[str, np.ndarray]:
    feed = probe(session, rows, 20)
    feed["prev_token"] = np.random.default_rng(rows).integers(0, 4000, rows).astype(np.int64)
    return feed


def step_ms(session: ort.InferenceSession, rows: int, calls: int = 200) -> float:
    feed = feed_for(session, rows)
    for _ in range(20):
        session.run(None, feed)
    started = time.perf_counter()
    for _ in range(calls):
        session.run(None, feed)
    return (time.perf_counter() - started) / calls * 1e3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.int8", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=MODEL, help="translator model folder (config.pbtxt, 1/)")
    parser.add_argument("--data-dir", type=Path, default=Path("data/ding"), help="Ding cache (default: data/ding)")
    parser.add_argument("--rows", default="10,80,160", help="decoder step sizes to time, in rows (sentences x beam)")
    parser.add_argument("--sentences", type=int, default=1000, help="test sentences all at once (0: skip)")
    parser.add_argument("--weights", choices=sorted(SUBSETS), default="all",
                        help="int8 per tensor: which weight MatMuls to quantize: all, the LSTM's only, or all but "
                        "the output layer (int8 per row always takes all)")
    args = parser.parse_args(argv)
    rows = [int(r) for r in args.rows.split(",")]
    version = args.model_dir / "1"
    graph = onnx.load(str(version / "decoder_step.onnx"))
    folded = fold_input_projection(graph) or graph
    with tempfile.TemporaryDirectory(prefix="tensorgate-int8-") as tmp:
        folder = Path(tmp)
        rows_graph = quantize_rows(folded)
        assert rows_graph is not None, "the decoder has no weight Gemm to quantize"
        onnx.save(rows_graph, folder / "rows.onnx")
        paths = {"fp32": None, "int8 per tensor": quantized(folded, folder, args.weights), "int8 per row": folder / "rows.onnx"}
        cpu = ["CPUExecutionProvider"]
        sessions = {name: ort.InferenceSession(str(path) if path else folded.SerializeToString(), options(), providers=cpu)
                    for name, path in paths.items()}
        print(f"`python -m bench.int8 --rows {args.rows} --sentences {args.sentences} --weights {args.weights}`\n")
        print("| decoder | " + " | ".join(f"step, {r} rows, ms" for r in rows) +
              f" | row 0 alone vs among {rows[-1]}: max difference |")
        print("|---|" + "---:|" * (len(rows) + 1))
        for name, session in sessions.items():
            times = " | ".join(f"{step_ms(session, r):.3f}" for r in rows)
            print(f"| {name} | {times} | {batch_dependence(session, rows[-1]):.2g} |", flush=True)
        if args.sentences:
            pairs = test_pairs(args.data_dir, args.sentences)
            german, english = [d for d, _ in pairs], [e for _, e in pairs]
            runs = {}
            for name, path in paths.items():
                model_dir = args.model_dir
                if path is not None:  # a copy of the model folder with this decoder
                    model_dir = folder / name.replace(" ", "_") / args.model_dir.name
                    shutil.copytree(args.model_dir, model_dir)
                    shutil.copy(path, model_dir / "1" / "decoder_step.onnx")
                runs[name] = InProcess(model_dir, (1, 1), todays=False).all_at_once(german, 5)
            print(f"\n{len(german)} test sentences all at once, beam 5:\n")
            print("| decoder | sentences/s | BLEU | identical to fp32 |")
            print("|---|---:|---:|---:|")
            for name, timed in runs.items():
                same = identical_share(runs["fp32"].outputs, timed.outputs)
                print(f"| {name} | {len(german) / timed.seconds:.1f} | {bleu(timed.outputs, english)[0]:.2f} | {same:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
