"""python -m services.gateway: the public KServe v2 endpoint (:8001, metrics :8002)."""

from __future__ import annotations

import asyncio
import sys

from services.gateway.app import GatewayApp
from services.process import overrides, run_until_signal, settings_parser, setup_logging
from services.settings import GatewaySettings

FLAGS = {
    "model-repository": "model_repository",
    "port": "grpc_port",
    "metrics-port": "metrics_port",
    "redis-url": "redis_url",
    "gateway-id": "gateway_id",
    "default-timeout": "default_timeout_s",
}


def main(argv: list[str] | None = None) -> int:
    parser = settings_parser(GatewaySettings, "python -m services.gateway", "Serve the KServe v2 gRPC API: validate, admit and queue requests "
                             "on Redis streams for the model services.", FLAGS)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    settings = GatewaySettings(**overrides(args, FLAGS))

    async def serve() -> int:
        return await run_until_signal(GatewayApp(settings))

    return asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
