"""A tiny MNIST-shaped data set made on the spot, for dry runs and tests on
machines that have not downloaded MNIST (CI, fresh checkouts).

Each class is a fixed random blob pattern; every image is its class's
pattern, shifted by up to 2 px, with noise. Learnable in one epoch, and no
two images are equal, so the splits are disjoint like the real ones.
"""

from __future__ import annotations

import numpy as np

from training.data.mnist import MnistSplits


def synthetic_mnist(train: int = 512, val: int = 256, test: int = 1000,
                    seed: int = 0) -> MnistSplits:
    rng = np.random.default_rng(seed)
    # (10, 28, 28) class templates: sparse bright strokes on black.
    templates = (rng.random((10, 28, 28)) > 0.8).astype(np.float64) * 255.0
    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", train), ("val", val), ("test", test)):
        labels = rng.integers(0, 10, size=n, dtype=np.int64)
        images = templates[labels]
        shifts = rng.integers(-2, 3, size=(n, 2))
        images = np.stack([np.roll(img, tuple(s), axis=(0, 1)) for img, s in zip(images, shifts)])
        images = images * rng.uniform(0.6, 1.0, size=(n, 1, 1)) + rng.normal(0, 20, images.shape)
        arrays[f"{split}_x"] = np.clip(images, 0, 255).astype(np.uint8)  # (n, 28, 28)
        arrays[f"{split}_y"] = labels
    return MnistSplits(**arrays, source=f"synthetic seed={seed}")
