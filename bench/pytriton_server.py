"""The PyTriton peer's server: Triton (through nvidia-pytriton) serving ONNX files with ONNX Runtime
inside its Python backend, one bound function per model.

Run by bench.triton as `python -m bench.pytriton_server` from the checkout (as a module, so the
folder bench/ is not put first on sys.path, where its profile.py would hide the standard library's)
with the Python of the PyTriton virtualenv (Debian's python3.11), which has
pytriton, numpy and onnxruntime but not the project's dependencies: of the project it imports only
bench.raw_ort's session (the model service's session options). Each model is given as a JSON object
(name, file, input and output names and item shapes, max_batch_size, preferred batch sizes,
max_queue_delay_us, and its ORT threads) copied from the model's config.pbtxt by the caller; a
model given without threads gets --intra-op-threads / --inter-op-threads. The access token comes from the environment (BENCH_TRITON_TOKEN), so it never
shows in a process list. Prints READY once every model is loaded, then serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

from bench.raw_ort import session

READY = "PYTRITON READY"


def infer_function(sess: ort.InferenceSession, input_name: str, output_name: str) -> Callable[..., Any]:
    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        # (B, *item) float32 in, (B, *out_item) out: one ORT call per dynamic batch, as the model service does.
        (result,) = sess.run([output_name], {input_name: inputs[input_name]})
        return {output_name: result}

    return infer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="one model as JSON (repeat per model)")
    p.add_argument("--grpc-port", type=int, required=True, help="Triton's gRPC port")
    p.add_argument("--http-port", type=int, required=True, help="Triton's HTTP port")
    p.add_argument("--metrics-port", type=int, required=True, help="Triton's metrics port")
    p.add_argument("--intra-op-threads", type=int, required=True, help="ONNX Runtime intra-op threads of a model given without its own")
    p.add_argument("--inter-op-threads", type=int, required=True, help="ONNX Runtime inter-op threads of a model given without its own")
    p.add_argument("--workspace", required=True, help="PyTriton's workspace folder")
    args = p.parse_args(argv)

    token = os.environ.get("BENCH_TRITON_TOKEN") or None
    config = TritonConfig(grpc_port=args.grpc_port, http_port=args.http_port, metrics_port=args.metrics_port,
                          grpc_address="127.0.0.1", http_address="127.0.0.1", log_verbose=0, exit_timeout_secs=5)
    stop = {"requested": False}

    def request_stop(signum: int, frame: object) -> None:
        stop["requested"] = True
        raise KeyboardInterrupt

    with Triton(config=config, workspace=args.workspace,
                security_config=TritonSecurityConfig(access_token=token)) as triton:
        for text in args.model:
            m = json.loads(text)
            intra, inter = m.get("threads") or (args.intra_op_threads, args.inter_op_threads)
            sess = session(Path(m["file"]), int(intra), int(inter))
            batcher = DynamicBatcher(max_queue_delay_microseconds=int(m["max_queue_delay_us"]),
                                     preferred_batch_size=list(m["preferred_batch_sizes"]) or None)
            triton.bind(
                model_name=m["name"],
                infer_func=infer_function(sess, m["input"], m["output"]),
                inputs=[Tensor(name=m["input"], dtype=np.float32, shape=tuple(m["input_shape"]))],
                outputs=[Tensor(name=m["output"], dtype=np.float32, shape=tuple(m["output_shape"]))],
                config=ModelConfig(max_batch_size=int(m["max_batch_size"]), batcher=batcher),
                strict=False,
            )
        print(READY, flush=True)
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        try:
            triton.serve()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
