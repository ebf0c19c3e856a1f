"""python -m bench.int8: would an int8 decoder serve the translator? Speed, quality, and whether a
sentence's result still ignores its batch-mates.

Builds the translator's decoder step as the model service runs it (fold.py applied), with every
Gemm over a weight written as MatMul + Add, then ONNX Runtime's dynamic quantization of those
weight MatMuls (int8 weights per output channel; activations quantized at run time). Reports:

- one decoder step at each --rows, fp32 against int8 (1 intra-op thread, no spinning);
- batch independence: the largest difference in any output between row 0 decoded alone and row 0
  decoded among --rows[-1] rows. The continuous batcher's promise (the same translation whoever
  shares the batch) holds only where this is 0 or float rounding;
- the test split all at once (beam 5, batches of 32), fp32 against int8: sentences/s, BLEU, and
  the share of translations identical.

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
from onnx import helper, numpy_helper

from bench.translator import InProcess, bleu, identical_share, test_pairs
from services.modelservice.runners.translator.fold import _probe, fold_input_projection

MODEL = Path(__file__).resolve().parent.parent / "models" / "translator_de_en"


def weight_matmuls(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Every Gemm whose B is an initializer as a named MatMul (B transposed when transB) and an Add
    of its bias; the names of those MatMuls (what quantize_dynamic is told to quantize)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name: i for i in out.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    names: list[str] = []
    for node in out.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("transA", 0) == 0 and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        if node.op_type != "Gemm" or node.input[1] not in inits or not plain:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = np.ascontiguousarray(weight.T)
        name = f"int8.{node.input[1]}"
        out.graph.initializer.append(numpy_helper.from_array(weight, f"{name}.weight"))
        product = node.output[0] if len(node.input) < 3 or not node.input[2] else f"{name}.product"
        nodes.append(helper.make_node("MatMul", [node.input[0], f"{name}.weight"], [product], name=name))
        if product != node.output[0]:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{name}.bias"))
        names.append(name)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out, names


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
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def feed_for(session: ort.InferenceSession, rows: int) -> dict[str, np.ndarray]:
    feed = _probe(session, rows, 20)
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


def batch_dependence(session: ort.InferenceSession, rows: int) -> float:
    """max |row 0 among `rows` - row 0 alone| over every output (the batch axis: each tensor's first dynamic dim)."""
    def axis(arg: ort.NodeArg) -> int:
        return next(i for i, d in enumerate(arg.shape) if not isinstance(d, int))

    feed = feed_for(session, rows)
    alone = {arg.name: np.take(feed[arg.name], [0], axis=axis(arg)) for arg in session.get_inputs()}
    together, single = session.run(None, feed), session.run(None, alone)
    return max(float(np.max(np.abs(np.take(a, [0], axis=axis(arg)) - b)))
               for a, b, arg in zip(together, single, session.get_outputs()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.int8", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=MODEL, help="translator model folder (config.pbtxt, 1/)")
    parser.add_argument("--data-dir", type=Path, default=Path("data/ding"), help="Ding cache (default: data/ding)")
    parser.add_argument("--rows", default="10,80,160", help="decoder step sizes to time, in rows (sentences x beam)")
    parser.add_argument("--sentences", type=int, default=1000, help="test sentences all at once (0: skip)")
    parser.add_argument("--weights", choices=sorted(SUBSETS), default="all",
                        help="which weight MatMuls to quantize: all, the LSTM's only, or all but the output layer")
    args = parser.parse_args(argv)
    rows = [int(r) for r in args.rows.split(",")]
    version = args.model_dir / "1"
    graph = onnx.load(str(version / "decoder_step.onnx"))
    folded = fold_input_projection(graph) or graph
    with tempfile.TemporaryDirectory(prefix="tensorgate-int8-") as tmp:
        folder = Path(tmp)
        int8_path = quantized(folded, folder, args.weights)
        sessions = {"fp32": ort.InferenceSession(folded.SerializeToString(), options(), providers=["CPUExecutionProvider"]),
                    "int8": ort.InferenceSession(str(int8_path), options(), providers=["CPUExecutionProvider"])}
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
            shutil.copytree(args.model_dir, folder / "repo" / args.model_dir.name)
            shutil.copy(int8_path, folder / "repo" / args.model_dir.name / "1" / "decoder_step.onnx")
            runs = {"fp32": InProcess(args.model_dir, (1, 1), todays=False).all_at_once(german, 5),
                    "int8": InProcess(folder / "repo" / args.model_dir.name, (1, 1), todays=False).all_at_once(german, 5)}
            print(f"\n{len(german)} test sentences all at once, beam 5:\n")
            print("| decoder | sentences/s | BLEU | identical to fp32 |")
            print("|---|---:|---:|---:|")
            for name, timed in runs.items():
                same = identical_share(runs["fp32"].outputs, timed.outputs)
                print(f"| {name} | {len(german) / timed.seconds:.1f} | {bleu(timed.outputs, english)[0]:.2f} | {same:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
