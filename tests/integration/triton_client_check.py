"""Run in its own process (tritonclient's protobuf modules clash with ours in one process):
drives a server with `tritonclient.grpc`, unchanged, and prints what it saw as JSON."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as triton


def main(url: str, model: str, onnx_path: str) -> None:
    client = triton.InferenceServerClient(url)
    images = np.random.default_rng(7).random((5, 1, 28, 28), dtype=np.float32)
    inp = triton.InferInput("image", list(images.shape), "FP32")
    inp.set_data_from_numpy(images)
    result = client.infer(model, [inp], outputs=[triton.InferRequestedOutput("probabilities")], request_id="t-1")
    got = result.as_numpy("probabilities")
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    expected = session.run(["probabilities"], {"image": images})[0]
    try:
        bad = triton.InferInput("image", [1, 784], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 784), np.float32))
        client.infer(model, [bad])
        error = ""
    except triton.InferenceServerException as err:
        error = f"{err.status()} {err.message()}"
    config = client.get_model_config(model, as_json=True)["config"]
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    print(json.dumps({
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server": client.get_server_metadata(as_json=True),
        "inputs": client.get_model_metadata(model, as_json=True)["inputs"],
        "max_batch_size": config["max_batch_size"],
        "id": result.get_response().id,
        "shape": list(got.shape),
        "max_abs_diff": float(np.abs(got - expected).max()),
        "error": error,
        "success_count": int(stats["inference_stats"]["success"].get("count", 0)),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:4])
