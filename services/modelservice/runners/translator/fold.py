"""Fewer multiply-adds per decoder step: the embedding's share of the LSTM input projection,
computed once per vocabulary entry instead of once per row and step.

The decoder step's LSTM input is [embedding(prev_token); feed], so its input projection
`Gemm(Concat(Gather(E, tok), feed), W, b)` equals `Gather(E @ W[:, :k]^T + b, tok) + feed @ W[:, k:]^T`.
Folded, a step gathers a row of a [vocabulary, 4 x hidden] table where it multiplied a
[rows, k] x [k, 4 x hidden] matrix: 393 k of the shipped model's ~3.2 M multiply-adds per row,
and more of the step's time at small batches, where the fixed cost of each kernel weighs most
(`python -m services.modelservice.runners.translator.timing --step-rows`). The sums are the
same up to float rounding (at most ~2e-5 apart on the shipped model's log-probabilities);
`fold_checked` runs both graphs on a probe and keeps the original when they differ by more
than 1e-3.
"""

from __future__ import annotations

import logging
import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from services.modelservice.runners.translator.graph_edit import attributes, probe, set_nodes

log = logging.getLogger(__name__)

TOLERANCE = 1e-3


def fold_input_projection(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of `model` with every Gemm(Concat(Gather(table, ids), x), W, b) folded as above;
    None when the graph has no such pattern."""
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = folded.graph
    init = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    for output in graph.output:
        uses[output.name] = uses.get(output.name, 0) + 1
    replaced: dict[int, list[onnx.NodeProto]] = {}  # index of the Gemm -> nodes in its place
    dropped: set[int] = set()
    index = {id(node): i for i, node in enumerate(graph.node)}
    for gemm in graph.node:
        if gemm.op_type != "Gemm" or len(gemm.input) < 2 or gemm.input[1] not in init:
            continue
        attrs = attributes(gemm)
        if attrs.get("transA", 0) != 0 or attrs.get("transB", 0) != 1 or attrs.get("alpha", 1.0) != 1.0 \
                or attrs.get("beta", 1.0) != 1.0:
            continue
        concat = producer.get(gemm.input[0])
        if concat is None or concat.op_type != "Concat" or len(concat.input) != 2 or attributes(concat).get("axis") not in (1, -1):
            continue
        gather = producer.get(concat.input[0])
        if gather is None or gather.op_type != "Gather" or gather.input[0] not in init or attributes(gather).get("axis", 0) != 0:
            continue
        if uses.get(gather.output[0]) != 1 or uses.get(concat.output[0]) != 1:
            continue
        bias_name = gemm.input[2] if len(gemm.input) > 2 and gemm.input[2] else ""
        if bias_name and bias_name not in init:
            continue
        table = numpy_helper.to_array(init[gather.input[0]]).astype(np.float64)
        weight = numpy_helper.to_array(init[gemm.input[1]]).astype(np.float64)
        width = table.shape[1]
        if table.ndim != 2 or weight.ndim != 2 or weight.shape[1] <= width:
            continue
        projected = table @ weight[:, :width].T
        if bias_name:
            projected = projected + numpy_helper.to_array(init[bias_name]).astype(np.float64)
        prefix = f"fold.{len(replaced)}"
        graph.initializer.extend([
            numpy_helper.from_array(projected.astype(np.float32), f"{prefix}.table"),
            numpy_helper.from_array(np.ascontiguousarray(weight[:, width:].astype(np.float32)), f"{prefix}.rest"),
        ])
        replaced[index[id(gemm)]] = [
            helper.make_node("Gather", [f"{prefix}.table", gather.input[1]], [f"{prefix}.rows"], name=f"{prefix}.gather"),
            helper.make_node("Gemm", [concat.input[1], f"{prefix}.rest", f"{prefix}.rows"], list(gemm.output),
                             name=f"{prefix}.gemm", transB=1),
        ]
        dropped.update({index[id(gather)], index[id(concat)]})
    if not replaced:
        return None
    nodes: list[onnx.NodeProto] = []
    for i, node in enumerate(graph.node):
        if i in replaced:
            nodes.extend(replaced[i])
        elif i not in dropped:
            nodes.append(node)
    set_nodes(graph, nodes)
    return folded


def fold_checked(model: onnx.ModelProto, options: ort.SessionOptions
                 ) -> tuple[onnx.ModelProto, ort.InferenceSession | None]:
    """The folded graph when it folds and agrees with the original on a probe, else the original;
    with it, the probe's CPU session of that graph (None when nothing folded), which a CPU
    decoder can serve from instead of building its own. The probe runs on the CPU whatever the
    serving device: the fold is arithmetic, and two extra CUDA sessions would cost seconds at start."""
    folded = fold_input_projection(model)
    if folded is None:
        return model, None
    cpu = ["CPUExecutionProvider"]
    original = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=cpu)
    candidate = ort.InferenceSession(folded.SerializeToString(), sess_options=options, providers=cpu)
    feed = probe(original)
    differs = max(float(np.max(np.abs(a - b))) for a, b in zip(original.run(None, feed), candidate.run(None, feed)))
    if not differs <= TOLERANCE:
        log.warning("decoder: the folded input projection differs by %.3g on a probe; the original graph is kept", differs)
        return model, original
    return folded, candidate
