"""The one place where KServe v2 tensors become numpy arrays and back.

Raw form (`raw_input_contents` / `raw_output_contents`) is little-endian, row-major; BYTES
elements are each a 4-byte little-endian length followed by the bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence

import numpy as np

from tensorgate.errors import InvalidArgument
from tensorgate.proto import grpc_service_pb2 as pb

# KServe datatype -> numpy dtype (little-endian). BYTES uses object arrays of `bytes`.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

# Which InferTensorContents field carries each datatype when raw form is not used.
_CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


# numpy dtype -> datatype name, for the dtypes of this machine's byte order (what arrays have).
_NAME_OF: dict[np.dtype, str] = {dtype.newbyteorder("="): name for name, dtype in DTYPES.items() if name != "BYTES"}


def datatype_of(array: np.ndarray) -> str:
    """KServe datatype name of a numpy array."""
    name = _NAME_OF.get(array.dtype)
    if name is not None:
        return name
    if array.dtype == object or array.dtype.kind in "SU":
        return "BYTES"
    for name, dtype in DTYPES.items():
        if name != "BYTES" and dtype == array.dtype.newbyteorder("<"):
            return name
    raise InvalidArgument(f"unsupported numpy dtype {array.dtype}")


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)  # plain ints: numpy's prod costs more than the rest of a small request


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES tensor -> raw form (length-prefixed elements, row-major)."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(raw: bytes, count: int, name: str = "tensor") -> np.ndarray:
    """Raw form -> object array of `count` bytes elements; refuses truncated or extra data."""
    out = np.empty(count, dtype=object)
    view = memoryview(raw)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise InvalidArgument(f"input '{name}': BYTES data ends after {i} of {count} elements")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidArgument(f"input '{name}': BYTES element {i} claims {length} bytes, fewer remain")
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise InvalidArgument(f"input '{name}': {len(view) - offset} bytes left over after {count} BYTES elements")
    return out


def to_raw(array: np.ndarray) -> bytes:
    """numpy -> raw form of its datatype."""
    if datatype_of(array) == "BYTES":
        return serialize_bytes(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def from_raw(raw: bytes, datatype: str, shape: Sequence[int], name: str = "tensor") -> np.ndarray:
    """Raw form -> numpy, checking the byte size against the shape."""
    if datatype not in DTYPES:
        raise InvalidArgument(f"input '{name}': unknown datatype {datatype}")
    count = element_count(shape)
    if datatype == "BYTES":
        return deserialize_bytes(raw, count, name).reshape(tuple(shape))
    dtype = DTYPES[datatype]
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidArgument(
            f"input '{name}': {datatype} shape {list(shape)} needs {expected} bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))


def from_contents(contents: pb.InferTensorContents, datatype: str, shape: Sequence[int], name: str) -> np.ndarray:
    """Typed `contents` fields -> numpy, checking the element count against the shape."""
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidArgument(f"input '{name}': datatype {datatype} must be sent in raw_input_contents")
    values = getattr(contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise InvalidArgument(f"input '{name}': shape {list(shape)} needs {count} elements, got {len(values)}")
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(tuple(shape))
    return np.asarray(values, dtype=DTYPES[datatype]).reshape(tuple(shape))


def request_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """Decode every input of a ModelInferRequest (raw or typed contents)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries but the request names {len(request.inputs)} inputs"
        )
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name in arrays:
            raise InvalidArgument(f"input '{tensor.name}' is given twice")
        shape = list(tensor.shape)
        if any(d < 0 for d in shape):
            raise InvalidArgument(f"input '{tensor.name}': shape {shape} has a negative dimension")
        if raw:
            arrays[tensor.name] = from_raw(raw[i], tensor.datatype, shape, tensor.name)
        else:
            arrays[tensor.name] = from_contents(tensor.contents, tensor.datatype, shape, tensor.name)
    return arrays


def add_input(request: pb.ModelInferRequest, name: str, array: np.ndarray) -> None:
    """Append one input in raw form (what clients and the gateway send)."""
    request.inputs.add(name=name, datatype=datatype_of(array), shape=list(array.shape))
    request.raw_input_contents.append(to_raw(array))


def build_response(
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: dict[str, np.ndarray],
    datatypes: dict[str, str] | None = None,
) -> pb.ModelInferResponse:
    """numpy outputs -> ModelInferResponse in raw form."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id)
    for name, array in outputs.items():
        datatype = (datatypes or {}).get(name) or datatype_of(array)
        if datatype != "BYTES":
            array = array.astype(DTYPES[datatype], copy=False)
        response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        response.raw_output_contents.append(to_raw(array))
    return response


def response_outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Decode every output of a ModelInferResponse (raw or typed contents)."""
    raw = response.raw_output_contents
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(response.outputs):
        if raw:
            arrays[tensor.name] = from_raw(raw[i], tensor.datatype, list(tensor.shape), tensor.name)
        else:
            arrays[tensor.name] = from_contents(tensor.contents, tensor.datatype, list(tensor.shape), tensor.name)
    return arrays


def split_rows(array: np.ndarray, sizes: Iterable[int]) -> list[np.ndarray]:
    """Split a batched output back into per-request parts along axis 0."""
    sizes = list(sizes)
    bounds = np.cumsum(sizes)[:-1]
    return list(np.split(array, bounds, axis=0))
