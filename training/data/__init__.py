"""Data sets: download, verify, cache and load."""
