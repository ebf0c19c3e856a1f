"""Run in its own process (tritonclient's protobuf modules clash with ours in one process):
Triton's model-repository extension driven with `tritonclient.grpc`, unchanged; prints JSON."""

from __future__ import annotations

import json
import sys
import time

import tritonclient.grpc as triton


def main(url: str, model: str) -> None:
    client = triton.InferenceServerClient(url)
    seen: dict[str, object] = {"index": client.get_model_repository_index(as_json=True).get("models", [])}
    client.unload_model(model)  # sends unload_dependents, as it always does
    seen["ready_after_unload"] = client.is_model_ready(model)
    seen["index_after_unload"] = client.get_model_repository_index(as_json=True).get("models", [])
    client.load_model(model)
    deadline = time.monotonic() + 10
    while not client.is_model_ready(model) and time.monotonic() < deadline:
        time.sleep(0.05)
    seen["ready_after_load"] = client.is_model_ready(model)
    print(json.dumps(seen))


if __name__ == "__main__":
    main(*sys.argv[1:3])
