"""The photo path's filters against the plain definitions they replace for speed: the same
numbers exactly, so a photo gives the same 28 x 28 input (and the accuracy figures stand)."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tensorgate.digits.fitting import _dilate3
from tensorgate.digits.ink import _components, _label
from tensorgate.digits.paper import _rank_filter

RANKS = {"min": np.min, "max": np.max, "median": np.median}


def rank_by_definition(x: np.ndarray, k: int, rank: str) -> np.ndarray:
    r = k // 2
    for axis in (0, 1):
        padded = np.pad(x, [(r, r) if a == axis else (0, 0) for a in range(2)], mode="edge")
        x = RANKS[rank](np.lib.stride_tricks.sliding_window_view(padded, k, axis=axis), axis=-1)
    return x.astype(np.float32)


def label_by_search(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components by breadth-first search from each unlabelled pixel in row-major order."""
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int32)
    areas: list[int] = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        labels[y0, x0] = label = len(areas) + 1
        queue, area = deque([(int(y0), int(x0))]), 0
        while queue:
            y, x = queue.popleft()
            area += 1
            for ny in range(max(0, y - 1), min(h, y + 2)):
                for nx in range(max(0, x - 1), min(w, x + 2)):
                    if mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = label
                        queue.append((ny, nx))
        areas.append(area)
    return labels, np.asarray(areas, dtype=np.int64)


@pytest.mark.parametrize("rank", sorted(RANKS))
def test_rank_filters_equal_the_windows_definition(rank: str) -> None:
    rng = np.random.default_rng(7)
    for trial in range(120):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        k = 2 * int(rng.integers(0, 16)) + 1  # windows wider than the picture too
        x = rng.random((h, w)).astype(np.float32)
        if trial % 2:
            x = np.round(x * 3).astype(np.float32)  # ties
        np.testing.assert_array_equal(_rank_filter(x, k, rank), rank_by_definition(x, k, rank))


def test_labels_and_areas_equal_a_breadth_first_search() -> None:
    rng = np.random.default_rng(11)
    shapes = [(1, 1), (1, 30), (30, 1)] + [tuple(int(v) for v in rng.integers(2, 40, 2)) for _ in range(300)]
    for i, shape in enumerate(shapes):
        mask = rng.random(shape) < (0.05, 0.3, 0.5, 0.7, 0.95)[i % 5]
        labels, areas = _label(mask)
        expected_labels, expected_areas = label_by_search(mask)
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_array_equal(areas, expected_areas)
        assert labels.dtype == np.int32 and areas.dtype == np.int64
    # Shapes that only 8-connectivity joins, and one that winds back on itself (a U, then an O).
    diagonal = np.eye(6, dtype=bool)
    assert _label(diagonal)[1].tolist() == [6]
    ring = np.ones((7, 9), dtype=bool)
    ring[2:5, 2:7] = False
    ring[0, 4] = False
    assert _label(ring)[1].tolist() == [ring.sum()]
    assert _label(np.zeros((5, 5), dtype=bool))[1].size == 0


def test_components_on_a_coarse_grid_use_the_same_labels() -> None:
    rng = np.random.default_rng(3)
    mask = rng.random((400, 330)) < 0.01
    mask[50:300, 100:120] = True  # a stroke
    labels, areas = _components(mask)
    assert areas.sum() == mask.sum() and labels.max() == areas.size
    assert (labels > 0).tolist() == mask.tolist()


def test_dilation_equals_a_3x3_max_filter() -> None:
    rng = np.random.default_rng(5)
    for shape in [(1, 1), (1, 7), (9, 1), (3, 3), (40, 31), (64, 64)]:
        mask = rng.random(shape) < 0.1
        by_pillow = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))) > 0
        np.testing.assert_array_equal(_dilate3(mask), by_pillow)
