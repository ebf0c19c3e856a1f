"""Steps 4-5 of tensorgate.digits: ink strength -> the digit's pixels.

Ink is what lies above an Otsu threshold of the flattened image (a threshold from the image
itself, not a constant); an image without a clear ink class is refused (`NoInk`). Lines across
the whole picture (ruled or squared paper) and specks (connected blobs far smaller than the
digit's largest stroke) are dropped.
"""

from __future__ import annotations

import numpy as np

from tensorgate.digits.errors import NoInk

MIN_CONTRAST = 0.08  # the ink must stand this far (of full scale) above the paper


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in 0..1: the cut that maximises the between-class variance."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    p = hist.astype(np.float64) / max(1, hist.sum())
    w0 = np.cumsum(p)  # weight of the class below each cut
    m0 = np.cumsum(p * (edges[:-1] + edges[1:]) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m0[-1] * w0 - m0) ** 2 / (w0 * (1.0 - w0))
    return float(edges[int(np.argmax(np.nan_to_num(between, nan=0.0, posinf=0.0))) + 1])


def ink_mask(ink: np.ndarray, noise: float) -> np.ndarray:
    """(H, W) ink -> (H, W) bool: the digit's pixels, specks removed."""
    peak = float(ink.max())
    floor = max(MIN_CONTRAST, 8.0 * noise)
    if peak < floor:
        raise NoInk(f"no ink: nothing stands out from the background (contrast {peak:.3f}, "
                    f"at least {floor:.3f} needed)")
    threshold = _otsu(ink / peak)
    mask = ink > max(threshold * peak, 4.0 * noise)
    # Ruled or squared paper: a line across (nearly) the whole picture is not ink.
    h, w = mask.shape
    mask[_longest_run(mask) >= 0.85 * w] = False
    mask[:, _longest_run(mask.T) >= 0.85 * h] = False
    if not mask.any():  # nothing but lines across the page (blank ruled or squared paper)
        raise NoInk("no ink: only lines across the whole picture stand out (ruled or squared paper, no digit)")
    labels, areas = _components(mask)
    largest = int(areas.max())
    # Specks: far smaller than the main stroke. A digit's second stroke (the bar of a 4 or 5,
    # a detached stem) is much larger than a speck of dust or noise.
    kept = np.flatnonzero(areas >= max(0.08 * largest, 4e-5 * mask.size)) + 1
    mask = np.isin(labels, kept)
    if mask.sum() < 4:
        raise NoInk("no ink: only specks stand out from the background")
    return mask


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W) mask (any truthy value is ink) -> the runs of ink along its rows, in row-major
    order: (row, start, end) arrays, `end` exclusive."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask.astype(bool)
    edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 just after it ends
    rows, starts = np.nonzero(edges == 1)
    return rows, starts, np.nonzero(edges == -1)[1]


def _longest_run(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H,) the longest run of True in each row."""
    rows, starts, ends = _runs(mask)
    longest = np.zeros(mask.shape[0], dtype=np.int64)
    np.maximum.at(longest, rows, ends - starts)
    return longest


def _components(mask: np.ndarray, side: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a bool mask: labels (H, W) (0 = none, 1..n) and areas (n,) in
    pixels of the mask. Labelled on a grid of at most `side` cells across (a cell is ink if any
    of its pixels is), so pieces closer than a cell join: a speck still stands alone."""
    h, w = mask.shape
    f = -(-max(h, w) // side)
    if f == 1:
        return _label(mask)
    grid = np.zeros((-(-h // f) * f, -(-w // f) * f), dtype=bool)
    grid[:h, :w] = mask
    coarse = np.any(grid.reshape(grid.shape[0] // f, f, grid.shape[1] // f, f), axis=(1, 3))
    cells, _ = _label(coarse)
    labels = np.repeat(np.repeat(cells, f, axis=0), f, axis=1)[:h, :w] * mask
    return labels, np.bincount(labels.reshape(-1), minlength=int(cells.max()) + 1)[1:]


def _label(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components: labels (H, W) and areas (n,), numbered in the order their first
    pixel comes in row-major order. Works on runs of ink along the rows: two runs in adjacent
    rows touch (8-connected) when each starts at most one pixel after the other ends, and runs
    that touch are merged (union-find); only the runs go through Python, not the pixels."""
    h, w = mask.shape
    rows, starts, ends = _runs(mask)
    labels = np.zeros((h, w), dtype=np.int32)
    if not len(starts):
        return labels, np.zeros(0, dtype=np.int64)
    parent = list(range(len(starts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(rows, np.arange(h + 1)).tolist()  # each row's first run
    s, e = starts.tolist(), ends.tolist()
    for y in range(h - 1):
        i, j = first[y], first[y + 1]
        while i < first[y + 1] and j < first[y + 2]:
            if s[j] <= e[i] and s[i] <= e[j]:
                a, b = root(i), root(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            if e[i] < e[j]:
                i += 1
            else:
                j += 1
    # A component's first pixel starts its lowest run: number the components in that order.
    numbers: dict[int, int] = {}
    run_labels = np.array([numbers.setdefault(root(i), len(numbers) + 1) for i in range(len(s))], dtype=np.int32)
    lengths = ends - starts
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    labels.reshape(-1)[np.repeat(rows * w + starts, lengths) + offsets] = np.repeat(run_labels, lengths)
    return labels, np.bincount(run_labels, weights=lengths, minlength=len(numbers) + 1)[1:].astype(np.int64)
