"""What fold.py and int8.py share to rewrite the decoder graph and check the result: a node's
attributes, a graph's nodes replaced (initializers nothing reads any more dropped), and random
inputs of a session's types to run both graphs on."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper


def attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def set_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    """`nodes` become the graph's, and the initializers none of them reads go."""
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def probe(session: ort.InferenceSession, rows: int = 4, width: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """Small random inputs of the session's types; every dynamic dim is `rows` first, then `width`."""
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for arg in session.get_inputs():
        dynamic = iter([rows] + [width] * 8)
        shape = [d if isinstance(d, int) else next(dynamic) for d in arg.shape]
        if "int" in arg.type:
            feed[arg.name] = rng.integers(0, 4, shape).astype(np.int64 if "64" in arg.type else np.int32)
        elif "bool" in arg.type:
            feed[arg.name] = np.ones(shape, np.bool_)
        else:
            feed[arg.name] = (rng.standard_normal(shape) * 0.3).astype(np.float32)
    return feed
