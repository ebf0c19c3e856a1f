"""Reader for the IDX format of the canonical MNIST files (LeCun et al.).

Layout: two zero bytes, a type code, the number of dimensions, then one
big-endian uint32 per dimension, then the data in C order, big-endian.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

# Type code -> big-endian numpy dtype, from the format's description.
_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


class IdxFormatError(ValueError):
    """The bytes are not a well-formed IDX file."""


def parse_idx(data: bytes) -> np.ndarray:
    """Decode IDX bytes into an array in native byte order."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxFormatError("bad magic: an IDX file starts with two zero bytes")
    type_code, ndim = data[2], data[3]
    if type_code not in _DTYPES:
        raise IdxFormatError(f"unknown IDX type code 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError("truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise IdxFormatError(
            f"IDX payload is {len(data) - header} bytes, shape {shape} needs {expected}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed when its name ends in `.gz`."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return parse_idx(raw)


def find_idx(directory: Path, stem: str) -> Path:
    """Locate `stem` or `stem.gz` in `directory` (plain wins when both exist)."""
    for name in (stem, stem + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"neither {stem} nor {stem}.gz in {directory}")
