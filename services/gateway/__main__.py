"""python -m services.gateway: the public KServe v2 endpoint (:8001, metrics :8002)."""

import sys

from services import process
from services.gateway.app import GatewayApp
from services.settings import GatewaySettings

FLAGS = {
    "model-repository": "model_repository",
    "port": "grpc_port",
    "metrics-port": "metrics_port",
    "redis-url": "redis_url",
    "gateway-id": "gateway_id",
    "default-timeout": "default_timeout_s",
}

if __name__ == "__main__":
    sys.exit(process.main(
        GatewaySettings, GatewayApp, "python -m services.gateway",
        "Serve the KServe v2 gRPC API: validate, admit and queue requests on Redis streams for the model services.",
        FLAGS,
    ))
