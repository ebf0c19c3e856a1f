"""What the proto compatibility tests share: tritonclient in a child interpreter.

The reference is the descriptor set shipped in tritonclient 2.41.0
(tritonclient.grpc.service_pb2 / model_config_pb2).

tritonclient's generated modules register the same proto file names and the
same symbols (inference.ModelConfig, ...) in the process-wide default
descriptor pool as ours do, so the two can never be imported into one
process ("duplicate file name model_config.proto"). tritonclient therefore
runs in a child interpreter (`_triton`): once to export its FileDescriptorSet,
which test_protos_descriptors loads into a private pool for the structural
comparison, and once per round-trip test to encode/decode messages with its
real classes.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap

from google.protobuf import json_format

from tests.support import REPO_ROOT

# The shipped config (so Triton's own ModelConfig, in a child process below, parses the real file),
# plus a parameters map as later models use.
SAMPLE_CONFIG_PBTXT = (REPO_ROOT / "models" / "mnist_mlp" / "config.pbtxt").read_text() + (
    'parameters { key: "tokenizer" value: { string_value: "spm.model" } }\n'
)

# Runs in the child interpreter. Reads a JSON list of jobs on stdin, writes a
# JSON list of results on stdout. Binary payloads travel base64-encoded.
_TRITON_WORKER = textwrap.dedent(
    """
    import base64, json, sys

    import numpy as np
    from google.protobuf import descriptor_pb2, json_format, text_format
    import tritonclient.grpc as tc
    from tritonclient.grpc import _utils, model_config_pb2, service_pb2

    def cls(name):
        for mod in (service_pb2, model_config_pb2):
            if hasattr(mod, name):
                return getattr(mod, name)
        raise KeyError(name)

    def b64(data):
        return base64.b64encode(data).decode()

    def run(job):
        op = job["op"]
        if op == "descriptors":
            fds = descriptor_pb2.FileDescriptorSet()
            for mod in (model_config_pb2, service_pb2):
                fds.file.add().MergeFromString(mod.DESCRIPTOR.serialized_pb)
            return b64(fds.SerializeToString())
        if op == "decode":
            msg = cls(job["type"]).FromString(base64.b64decode(job["data"]))
            return {
                "dict": json_format.MessageToDict(
                    msg, preserving_proto_field_name=True
                ),
                "bytes": b64(msg.SerializeToString(deterministic=True)),
            }
        if op == "from_text":
            msg = text_format.Parse(job["text"], cls(job["type"])())
            return b64(msg.SerializeToString(deterministic=True))
        if op == "client_request":
            image = tc.InferInput("image", [2, 1, 28, 28], "FP32")
            image.set_data_from_numpy(
                np.arange(2 * 28 * 28, dtype=np.float32).reshape(2, 1, 28, 28)
            )
            text = tc.InferInput("text", [2], "BYTES")
            text.set_data_from_numpy(np.array([b"hello", b""], dtype=np.object_))
            outputs = [
                tc.InferRequestedOutput("probabilities", class_count=3),
                tc.InferRequestedOutput("embedding"),
            ]
            req = _utils._get_inference_request(
                model_name="mnist_mlp",
                inputs=[image, text],
                model_version="1",
                request_id="req-7",
                outputs=outputs,
                sequence_id=42,
                sequence_start=True,
                sequence_end=False,
                priority=2,
                timeout=5000,
                parameters={"tag": "bench", "top": 4, "debug": True},
            )
            return b64(req.SerializeToString(deterministic=True))
        if op == "infer_result":
            resp = service_pb2.ModelInferResponse.FromString(
                base64.b64decode(job["data"])
            )
            result = tc.InferResult(resp)
            out = {}
            for name in job["outputs"]:
                arr = result.as_numpy(name)
                out[name] = {
                    "dtype": arr.dtype.str,
                    "shape": list(arr.shape),
                    "values": [
                        v.decode("latin-1") if isinstance(v, bytes) else v
                        for v in arr.reshape(-1).tolist()
                    ],
                }
            return out
        raise ValueError(op)

    jobs = json.load(sys.stdin)
    json.dump([run(job) for job in jobs], sys.stdout)
    """
)


def _triton(*jobs: dict) -> list:
    """Run jobs in a child interpreter that imports tritonclient.grpc."""
    proc = subprocess.run(
        [sys.executable, "-c", _TRITON_WORKER],
        input=json.dumps(list(jobs)).encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return json.loads(proc.stdout)



def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()



def _unb64(data: str) -> bytes:
    return base64.b64decode(data)



def _as_dict(msg) -> dict:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)

