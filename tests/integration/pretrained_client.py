"""Run in its own process (tritonclient's protobuf modules clash with ours in one process):
sends every array of an .npz through a server with `tritonclient.grpc`, unchanged, from
`concurrency` threads at once, and saves every output the server returned.

    python pretrained_client.py HOST:PORT inputs.npz outputs.npz CONCURRENCY

An input key is `<id>-<model>`; the array goes to the model's first input. Output keys are
`<id>-<model>/<output name>`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.grpc as triton


def main(url: str, inputs_path: str, outputs_path: str, concurrency: int) -> None:
    arrays = dict(np.load(inputs_path))
    local = threading.local()
    input_names: dict[str, str] = {}
    lock = threading.Lock()

    def client() -> triton.InferenceServerClient:
        if not hasattr(local, "client"):  # one channel per thread
            local.client = triton.InferenceServerClient(url)
        return local.client

    def send(key: str) -> dict[str, np.ndarray]:
        model = key.split("-", 1)[1]
        with lock:
            if model not in input_names:
                input_names[model] = client().get_model_metadata(model).inputs[0].name
        array = arrays[key]
        tensor = triton.InferInput(input_names[model], list(array.shape), triton.np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        result = client().infer(model, [tensor], request_id=key, client_timeout=60)
        assert result.get_response().id == key
        return {f"{key}/{o.name}": result.as_numpy(o.name) for o in result.get_response().outputs}

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(send, sorted(arrays)))
    seconds = time.perf_counter() - start
    np.savez(outputs_path, **{k: v for r in results for k, v in r.items()})
    print(json.dumps({"requests": len(arrays), "seconds": round(seconds, 3)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
