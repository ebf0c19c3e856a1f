"""python -m services.modelservice --name mnist_mlp: one replica of one model."""

from __future__ import annotations

import asyncio
import sys

from services.modelservice.app import ModelServiceApp
from services.process import overrides, run_until_signal, settings_parser, setup_logging
from services.settings import ModelServiceSettings

FLAGS = {
    "name": "name",
    "version": "version",
    "model-repository": "model_repository",
    "port": "grpc_port",
    "metrics-port": "metrics_port",
    "redis-url": "redis_url",
    "device": "device",
    "consumer": "consumer",
    "intra-op-threads": "intra_op_threads",
}


def main(argv: list[str] | None = None) -> int:
    parser = settings_parser(ModelServiceSettings, "python -m services.modelservice", "Serve one model from the repository: consume its Redis stream in "
                             "dynamic batches and answer direct KServe gRPC calls.", FLAGS)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    settings = ModelServiceSettings(**overrides(args, FLAGS))

    async def serve() -> int:
        return await run_until_signal(ModelServiceApp(settings))

    return asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
