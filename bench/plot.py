"""Latency against throughput, one line per (system, model), written as a PNG beside the page."""

from __future__ import annotations

from pathlib import Path

from bench.results import SYSTEMS, Run

LINESTYLES = ("-", "--", ":", "-.")


def plot_latency(run: Run, path: Path) -> bool:
    """p50 (left) and p99 (right) latency against throughput; False when there is nothing to draw."""
    series = [(system, model, run.rows(system, model)) for system in SYSTEMS for model in run.models()]
    series = [s for s in series if s[2]]
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharex=True)
    models = run.models()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for system, model, rows in series:
        style = dict(color=colors[SYSTEMS.index(system) % len(colors)],
                     linestyle=LINESTYLES[models.index(model) % len(LINESTYLES)], marker="o")
        x = [r.throughput for r in rows]
        for ax, values in zip(axes, ([r.p50_ms for r in rows], [r.p99_ms for r in rows])):
            ax.plot(x, values, label=f"{system}, {model}", **style)
            for row, xv, yv in zip(rows, x, values):
                ax.annotate(f"c={row.concurrency}", (xv, yv), textcoords="offset points", xytext=(3, 3), fontsize=7)
    for ax, name in zip(axes, ("p50", "p99")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("throughput (infer/s, log)")
        ax.set_ylabel(f"{name} latency (ms, log)")
        ax.set_title(f"{name} latency against throughput")
        ax.grid(True, which="both", alpha=0.3)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes[0].legend(fontsize=8)
    fig.suptitle("perf_analyzer over gRPC, batch size 1 per request; points are concurrency levels")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
