"""python -m services.modelservice --name mnist_mlp: one replica of one model."""

import sys

from services import process
from services.modelservice.app import ModelServiceApp
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

if __name__ == "__main__":
    sys.exit(process.main(
        ModelServiceSettings, ModelServiceApp, "python -m services.modelservice",
        "Serve one model from the repository: consume its Redis stream in dynamic batches and answer direct "
        "KServe gRPC calls.",
        FLAGS,
    ))
