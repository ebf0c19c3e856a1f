"""Training curves to a small PNG, drawn with the Agg backend (no display,
no pyplot global state, safe in worker processes and tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# panel title -> series label -> one value per epoch
Panels = Mapping[str, Mapping[str, Sequence[float]]]


def plot_curves(path: Path, panels: Panels, title: str = "", dpi: int = 72,
                x_label: str = "epoch") -> Path:
    """One subplot per panel, epochs (or `x_label`'s unit, 1-based) on x, a line per series.

    e.g. {"loss": {"train": [...], "validation": [...]},
          "accuracy": {"train": [...], "validation": [...]}}
    """
    figure = Figure(figsize=(4.0 * len(panels), 3.0), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel, series) in zip(axes, panels.items()):
        for label, values in series.items():
            epochs = range(1, len(values) + 1)
            ax.plot(epochs, values, marker="o", markersize=3, label=label)
        ax.set_title(panel)
        ax.set_xlabel(x_label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
