#!/usr/bin/env python
"""Container health check: exit 0 when the process's gRPC health service says SERVING.

    tensorgate-healthcheck [PORT]

Without PORT it asks the gateway's port (TENSORGATE_GATEWAY_GRPC_PORT, default 8001) and the
model service's port (TENSORGATE_MODEL_GRPC_PORT, default 8101) and is healthy when either
answers SERVING, so the same image works for both roles.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def serving(port: int, timeout_s: float = 3.0) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str]) -> int:
    if argv:
        ports = [int(argv[0])]
    else:
        ports = [int(os.environ.get("TENSORGATE_GATEWAY_GRPC_PORT", "8001")),
                 int(os.environ.get("TENSORGATE_MODEL_GRPC_PORT", "8101"))]
    return 0 if any(serving(port) for port in ports) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
