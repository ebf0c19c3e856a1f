"""The decoder step in int8, each row's activations with their own scale (config parameter
`decoder_precision: "int8"`; CPU only).

Every Gemm over a weight becomes MatMulInteger: the weight quantized once, per output column
(symmetric, ±127), and at run time each row of the activations quantized with its own scale
(its largest magnitude / 127, shifted to uint8 around 128, the u8×s8 form VNNI multiplies), the
int32 sums scaled back by row scale × column scale, then the bias. Integer sums are exact, and
no scale spans two rows, so a decoder row's log-probabilities do not depend on what else is in
its batch. (The encoder stays fp32, whose rounding varies a little with the padding of the batch
a sentence is encoded in; served and in-process int8 agreed on 99.7% of the test split.) ONNX
Runtime's own dynamic quantization takes one scale per tensor, across the whole batch, and
moves a row's log-probabilities by about 0.3 with its batch-mates (`python -m bench.int8`).

The translations are not those of the float decoder: on the Ding test split 82% are identical,
at the same BLEU (docs/profiles.md). `int8_checked` runs the graph on a probe and keeps the
float one when a row depends on its batch-mates or the log-probabilities drift by more than
TOLERANCE (a CPU whose integer kernels saturate would show it).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from services.modelservice.runners.translator.graph_edit import attributes, probe, set_nodes

log = logging.getLogger(__name__)

TOLERANCE = 1.0  # largest |int8 - float| in any output on the probe (0.24 on the shipped model)
CPUINFO = "/proc/cpuinfo"
MIN_OPSET = 11  # Round, and Clip with its bounds as inputs


def has_vnni(cpuinfo: str = CPUINFO) -> bool:
    """The CPU multiplies u8 x s8 into int32 without saturating (AVX-512 VNNI or AVX-VNNI). Without
    it ONNX Runtime's integer kernels may saturate pairs of products at 16 bits."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def weight_matmuls(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` with every plain Gemm whose B is an initializer written as a named MatMul
    (B transposed when transB) and an Add of its bias; the names of those MatMuls."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name: i for i in out.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    names: list[str] = []
    for index, node in enumerate(out.graph.node):
        attrs = attributes(node)
        plain = attrs.get("transA", 0) == 0 and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        if node.op_type != "Gemm" or node.input[1] not in inits or not plain:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = np.ascontiguousarray(weight.T)
        name = f"int8.{index}.{node.input[1]}"  # by node: two Gemms may share a weight
        out.graph.initializer.append(numpy_helper.from_array(weight, f"{name}.weight"))
        product = node.output[0] if len(node.input) < 3 or not node.input[2] else f"{name}.product"
        nodes.append(helper.make_node("MatMul", [node.input[0], f"{name}.weight"], [product], name=name))
        if product != node.output[0]:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{name}.bias"))
        names.append(name)
    set_nodes(out.graph, nodes)
    return out, names


def quantize_rows(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of `model` with its weight Gemms in int8, a scale per activation row (see above);
    None when it has none."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        return None
    plain, names = weight_matmuls(model)
    if not names:
        return None
    graph = plain.graph
    weights = {i.name: i for i in graph.initializer}

    def constant(name: str, value: object, dtype: type) -> str:
        graph.initializer.append(numpy_helper.from_array(np.array(value, dtype), name))
        return name

    c127, tiny = constant("int8.127", 127.0, np.float32), constant("int8.tiny", 1e-12, np.float32)
    low, high = constant("int8.low", 0.0, np.float32), constant("int8.high", 255.0, np.float32)
    shift, zero = constant("int8.shift", 128.0, np.float32), constant("int8.zero", 128, np.uint8)
    last = constant("int8.last_axis", [-1], np.int64)

    def row_peak(x: str, out: str) -> onnx.NodeProto:  # ReduceMax takes its axes as an input from opset 18
        if opset >= 18:
            return helper.make_node("ReduceMax", [x, last], [out], keepdims=1)
        return helper.make_node("ReduceMax", [x], [out], axes=[-1], keepdims=1)
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "MatMul" or node.name not in names:
            nodes.append(node)
            continue
        p, x = node.name, node.input[0]
        weight = numpy_helper.to_array(weights[node.input[1]])
        column_scale = (np.maximum(np.abs(weight).max(axis=0), 1e-12) / 127.0).astype(np.float32)
        q_weight = constant(f"{p}.q", np.clip(np.round(weight / column_scale), -127, 127), np.int8)
        scale_w = constant(f"{p}.column_scale", column_scale, np.float32)
        make = helper.make_node
        nodes += [
            make("Abs", [x], [f"{p}.abs"]),
            row_peak(f"{p}.abs", f"{p}.peak"),
            make("Max", [f"{p}.peak", tiny], [f"{p}.peak_pos"]),
            make("Div", [f"{p}.peak_pos", c127], [f"{p}.row_scale"]),
            make("Div", [x, f"{p}.row_scale"], [f"{p}.scaled"]),
            make("Round", [f"{p}.scaled"], [f"{p}.rounded"]),
            make("Add", [f"{p}.rounded", shift], [f"{p}.shifted"]),
            make("Clip", [f"{p}.shifted", low, high], [f"{p}.clipped"]),
            make("Cast", [f"{p}.clipped"], [f"{p}.q_x"], to=TensorProto.UINT8),
            make("MatMulInteger", [f"{p}.q_x", q_weight, zero], [f"{p}.sums"]),
            make("Cast", [f"{p}.sums"], [f"{p}.sums_f"], to=TensorProto.FLOAT),
            make("Mul", [f"{p}.sums_f", f"{p}.row_scale"], [f"{p}.by_row"]),
            make("Mul", [f"{p}.by_row", scale_w], list(node.output)),
        ]
    set_nodes(graph, nodes)
    return plain


def batch_axis(arg: ort.NodeArg) -> int:
    """A decoder input's or output's batch axis: its first dynamic dimension."""
    return next(i for i, d in enumerate(arg.shape) if not isinstance(d, int))


def batch_dependence(session: ort.InferenceSession, rows: int) -> float:
    """Largest difference in any output between row 0 among `rows` and row 0 alone."""
    feed = probe(session, rows, 7)
    alone = {arg.name: np.take(feed[arg.name], [0], axis=batch_axis(arg)) for arg in session.get_inputs()}
    together, single = session.run(None, feed), session.run(None, alone)
    return max(float(np.max(np.abs(np.take(a, [0], axis=batch_axis(arg)) - b)))
               for a, b, arg in zip(together, single, session.get_outputs()))


def int8_checked(model: onnx.ModelProto, options: ort.SessionOptions,
                 float_session: ort.InferenceSession | None = None
                 ) -> tuple[onnx.ModelProto, ort.InferenceSession | None]:
    """The int8 graph when it quantizes, keeps every row independent of its batch-mates and
    stays within TOLERANCE of the float graph on a probe; else the float graph. With it, a CPU
    session of the graph returned when the check built one (None otherwise), which a CPU decoder
    can serve from; `float_session`, a CPU session of `model` already built (fold's probe), is
    used instead of building another."""
    if not has_vnni():
        log.warning("decoder: int8 kept off (this CPU has no VNNI); the float graph serves")
        return model, float_session
    quantized = quantize_rows(model)
    if quantized is None:
        return model, float_session
    cpu = ["CPUExecutionProvider"]
    try:
        if float_session is None:
            float_session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=cpu)
        int8_session = ort.InferenceSession(quantized.SerializeToString(), sess_options=options, providers=cpu)
        feed = probe(float_session, 16, 7)
        drift = max(float(np.max(np.abs(a - b)))
                    for a, b in zip(float_session.run(None, feed), int8_session.run(None, feed)))
        dependence = batch_dependence(int8_session, 16)
    except Exception as err:  # a graph this rewrite does not fit: serve the float one
        log.warning("decoder: int8 kept off (its check failed: %s); the float graph serves", err)
        return model, float_session
    if dependence != 0.0 or not drift <= TOLERANCE:
        log.warning("decoder: int8 kept off (on a probe it drifts %.3g from float, a row moves %.3g with its "
                    "batch-mates); the float graph serves", drift, dependence)
        return model, float_session
    return quantized, int8_session
