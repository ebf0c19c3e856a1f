"""Benchmarks of the serving path: `python -m bench.serving`."""
