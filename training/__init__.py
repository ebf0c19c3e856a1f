"""Training jobs, data acquisition and export for the tensorgate model repository."""
