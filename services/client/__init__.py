"""The Python SDK and CLI for applications: `from services.client import Client`."""

from services.client.sdk import Client, InferenceError, load_digit

__all__ = ["Client", "InferenceError", "load_digit"]
