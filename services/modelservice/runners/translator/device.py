"""The running batch's decoder inputs kept on the execution provider's device (IO binding).

Same contract as rows.HostRows, for the ONNX graphs only. Between steps
the recurrent states and the encoder context stay in OrtValues on the device (CUDA with
onnxruntime-gpu; 'cpu' OrtValues otherwise, which is how the tests run this path); per step
only the row bookkeeping goes up (prev tokens, parent rows, slot per row: a few int64 per row)
and the log-probabilities come back, (R, V) float32, for the search on the host.

The decoder graph is wrapped, once, with the row moves it needs, so that a step is one run:
    state_x   = Gather(Concat(state_x__prev, state_x__new), index)   (batch axis of the state)
    context_y = Gather(context_y__slots, row_slot, axis 0)
where __prev are the last step's outputs (on the device), __new the initial states of
sentences admitted since (from the host), index the parent row of each row, and the context is
held once per sentence (a slot, shape (slots, S, ...)), not once per beam. A second small graph
rebuilds the slots when sentences are admitted: the live ones gathered, cut or padded to the
new width, the new ones appended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from services.modelservice.runners.translator.rows import aligned, split_encoded
from services.modelservice.runners.translator.search import Arrays

if TYPE_CHECKING:
    from services.modelservice.runners.translator.translator import OnnxStepModel

CUDA = "CUDAExecutionProvider"


def _input_info(graph: onnx.GraphProto) -> dict[str, onnx.ValueInfoProto]:
    return {value.name: value for value in graph.input}


def step_graph(decoder: onnx.ModelProto, state_axes: dict[str, int], state_outputs: dict[str, str],
               context_names: Sequence[str]) -> onnx.ModelProto:
    """decoder_step with the row gathers in front (see the module docstring); outputs only
    log_probs and the new states."""
    model = onnx.ModelProto()
    model.CopyFrom(decoder)
    graph = model.graph
    inputs = _input_info(graph)
    index = helper.make_tensor_value_info("index", TensorProto.INT64, ["rows"])
    row_slot = helper.make_tensor_value_info("row_slot", TensorProto.INT64, ["rows"])
    new_inputs: list[onnx.ValueInfoProto] = [inputs["prev_token"], index, row_slot]
    nodes: list[onnx.NodeProto] = []
    for name, axis in state_axes.items():
        elem = inputs[name].type.tensor_type.elem_type
        rank = len(inputs[name].type.tensor_type.shape.dim)
        for suffix in ("__prev", "__new"):
            new_inputs.append(helper.make_tensor_value_info(name + suffix, elem, [None] * rank))
        nodes += [helper.make_node("Concat", [name + "__prev", name + "__new"], [name + "__all"], axis=axis),
                  helper.make_node("Gather", [name + "__all", "index"], [name], axis=axis)]
    for name in context_names:
        elem = inputs[name].type.tensor_type.elem_type
        rank = len(inputs[name].type.tensor_type.shape.dim)
        new_inputs.append(helper.make_tensor_value_info(name + "__slots", elem, [None] * rank))
        nodes.append(helper.make_node("Gather", [name + "__slots", "row_slot"], [name], axis=0))
    del graph.input[:]
    graph.input.extend(new_inputs)
    nodes += list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    keep = {"log_probs", *state_outputs.values()}
    outputs = [o for o in graph.output if o.name in keep]
    del graph.output[:]
    graph.output.extend(outputs)
    onnx.checker.check_model(model)
    return model


def slots_graph(context: dict[str, tuple[int, int]], opset: int, ir_version: int) -> onnx.ModelProto:
    """context name -> (elem type, rank): out = Concat(Pad(Slice(Gather(old, keep), 0:ends on
    axis 1), pads), new) per context array."""
    inputs = [helper.make_tensor_value_info("keep", TensorProto.INT64, ["live"]),
              helper.make_tensor_value_info("ends", TensorProto.INT64, [1])]
    nodes = [helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.INT64, [1], [0])),
             helper.make_node("Constant", [], ["one"], value=helper.make_tensor("o", TensorProto.INT64, [1], [1]))]
    outputs = []
    for name, (elem, rank) in context.items():
        inputs += [helper.make_tensor_value_info(name + "__old", elem, [None] * rank),
                   helper.make_tensor_value_info(name + "__new", elem, [None] * rank),
                   helper.make_tensor_value_info(name + "__pads", TensorProto.INT64, [2 * rank])]
        nodes += [helper.make_node("Gather", [name + "__old", "keep"], [name + "__kept"], axis=0),
                  helper.make_node("Slice", [name + "__kept", "zero", "ends", "one"], [name + "__cut"]),
                  helper.make_node("Pad", [name + "__cut", name + "__pads"], [name + "__padded"]),
                  helper.make_node("Concat", [name + "__padded", name + "__new"], [name], axis=0)]
        outputs.append(helper.make_tensor_value_info(name, elem, [None] * rank))
    graph = helper.make_graph(nodes, "slots", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    onnx.checker.check_model(model)
    return model


class BoundGraphs:
    """The two wrapped graphs as sessions, built once per model (session creation is slow,
    on CUDA especially); every BoundRows of that model shares them."""

    def __init__(self, model: OnnxStepModel) -> None:
        self.device = "cuda" if model.providers[0] == CUDA else "cpu"
        decoder = model.decoder_graph  # the graph the host path runs (folded or not)
        self.context_names = list(model.context_names)
        inputs = _input_info(decoder.graph)
        self.context_types = {name: (inputs[name].type.tensor_type.elem_type,
                                     len(inputs[name].type.tensor_type.shape.dim))
                              for name in self.context_names}
        opset = next(o.version for o in decoder.opset_import if o.domain in ("", "ai.onnx"))
        options, providers = model.session_options, model.providers
        self.step = ort.InferenceSession(
            step_graph(decoder, model.state_axes, model.state_outputs, self.context_names).SerializeToString(),
            sess_options=options, providers=providers)
        self.slots = ort.InferenceSession(
            slots_graph(self.context_types, opset, decoder.ir_version).SerializeToString(),
            sess_options=options, providers=providers)


class BoundRows:
    """Rows whose decoder states and context live in OrtValues on the device."""

    def __init__(self, model: OnnxStepModel, graphs: BoundGraphs) -> None:
        self.model = model
        self.device, self.context_names = graphs.device, graphs.context_names
        self._context_types = graphs.context_types
        self._step, self._slots = graphs.step, graphs.slots
        self.clear()

    @property
    def rows(self) -> int:
        return len(self._row_slot)

    @property
    def width(self) -> int:
        return self._width

    def clear(self) -> None:
        self._row_slot = np.zeros(0, dtype=np.int64)  # (R,) slot of each row's sentence
        self._index = np.zeros(0, dtype=np.int64)  # (R,) row of __prev (then __new) each row takes
        self._prev_states: dict[str, ort.OrtValue] = {}  # the last step's outputs, on the device
        self._prev_rows = 0
        self._new_states: list[Arrays] = []  # initial states admitted since, on the host
        self._context: dict[str, ort.OrtValue] = {}  # slots (n_slots, width, ...), on the device
        self._n_slots = 0
        self._width = 0

    def encode(self, src: np.ndarray, src_mask: np.ndarray) -> list[Any]:
        context, states = self.model.encode(src, src_mask)  # once per sentence through the host
        return split_encoded(self.model, context, states, src_mask)

    def append(self, encoded: Sequence[Any]) -> None:
        if not encoded:
            return
        contexts: list[Arrays] = [c for c, _ in encoded]
        width = max(self._width, aligned(max(c[self.context_names[0]].shape[1] for c in contexts)))
        new = {}
        for name in self.context_names:
            parts = [c[name] for c in contexts]
            pad = [(0, 0), (0, 0)] + [(0, 0)] * (parts[0].ndim - 2)
            new[name] = np.concatenate([np.pad(p, pad[:1] + [(0, width - p.shape[1])] + pad[2:]) for p in parts])
        live = self._live_slots()
        self._rebuild_slots(live, width, new)
        self._row_slot = np.concatenate([np.searchsorted(live, self._row_slot),
                                         len(live) + np.arange(len(encoded))])
        self._index = np.concatenate([self._index, self._prev_rows + len(self._new_states)
                                      + np.arange(len(encoded))])
        self._new_states += [states for _, states in encoded]  # one row each

    def _live_slots(self) -> np.ndarray:
        return np.unique(self._row_slot)

    def _rebuild_slots(self, keep: np.ndarray, width: int, new: Arrays | None = None) -> None:
        """Slots := the `keep` slots cut or padded to `width`, then `new` (n, width, ...)."""
        binding = self._slots.io_binding()
        binding.bind_cpu_input("keep", keep.astype(np.int64))
        binding.bind_cpu_input("ends", np.array([width], dtype=np.int64))
        for name in self.context_names:
            elem, rank = self._context_types[name]
            dtype = helper.tensor_dtype_to_np_dtype(elem)
            old = self._context.get(name)
            tail = list(old.shape()[2:]) if old is not None else list(new[name].shape[2:]) if new else []
            if old is None:
                binding.bind_cpu_input(name + "__old", np.zeros([0, width, *tail], dtype=dtype))
            else:
                binding.bind_ortvalue_input(name + "__old", old)
            pads = np.zeros(2 * rank, dtype=np.int64)
            pads[rank + 1] = max(0, width - (old.shape()[1] if old is not None else width))  # axis 1 end
            binding.bind_cpu_input(name + "__pads", pads)
            binding.bind_cpu_input(name + "__new", new[name] if new else np.zeros([0, width, *tail], dtype=dtype))
            binding.bind_output(name, self.device)
        self._slots.run_with_iobinding(binding)
        self._context = dict(zip(self.context_names, binding.get_outputs()))
        self._n_slots = len(keep) + (len(next(iter(new.values()))) if new else 0)
        self._width = width

    def step(self, prev: np.ndarray) -> np.ndarray:
        binding = self._step.io_binding()
        binding.bind_cpu_input("prev_token", prev)
        binding.bind_cpu_input("index", self._index)
        binding.bind_cpu_input("row_slot", self._row_slot)
        for name, axis in self.model.state_axes.items():
            new = [states[name] for states in self._new_states]
            prev_value = self._prev_states.get(name)
            template = prev_value.shape() if prev_value is not None else list(new[0].shape)
            dtype = new[0].dtype if new else np.float32
            empty = np.zeros([0 if i == axis else d for i, d in enumerate(template)], dtype=dtype)
            if prev_value is not None:
                binding.bind_ortvalue_input(name + "__prev", prev_value)
            else:
                binding.bind_cpu_input(name + "__prev", empty)
            binding.bind_cpu_input(name + "__new", np.concatenate(new, axis=axis) if new else empty)
        for name in self.context_names:
            binding.bind_ortvalue_input(name + "__slots", self._context[name])
        binding.bind_output("log_probs", "cpu")  # the only tensor that comes back
        outs = list(self.model.state_outputs.items())
        for _, out in outs:
            binding.bind_output(out, self.device)
        self._step.run_with_iobinding(binding)
        values = binding.get_outputs()
        log_probs: np.ndarray = values[0].numpy()
        self._prev_states = {name: value for (name, _), value in zip(outs, values[1:])}
        self._prev_rows = self.rows
        self._new_states = []
        return log_probs

    def reorder(self, parents: np.ndarray) -> None:
        self._index = parents.astype(np.int64)  # applied by the next step's Gather, on the device
        self._row_slot = self._row_slot[parents]

    def fit(self, width: int) -> None:
        if self.rows == 0:
            self.clear()
            return
        live = self._live_slots()
        if aligned(width) <= self._width * 3 // 4 or self._n_slots > 2 * len(live):
            # Narrower, or mostly slots of finished sentences: keep only the live ones.
            self._rebuild_slots(live, min(self._width, aligned(width)))
            self._row_slot = np.searchsorted(live, self._row_slot)
