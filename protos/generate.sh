#!/bin/sh
# Generates tensorgate/proto/*_pb2*.py from protos/ (the same command as `make protos`).
# Run from the repository root; PYTHON must have grpcio-tools (build time only).
set -eu
PYTHON="${PYTHON:-python}"
"$PYTHON" -m grpc_tools.protoc -I protos --python_out=tensorgate/proto --pyi_out=tensorgate/proto \
    --grpc_python_out=tensorgate/proto protos/model_config.proto protos/grpc_service.proto protos/tensorgate.proto
sed -i 's/^import model_config_pb2 as/from . import model_config_pb2 as/' \
    tensorgate/proto/grpc_service_pb2.py tensorgate/proto/grpc_service_pb2.pyi
sed -i 's/^import grpc_service_pb2 as/from . import grpc_service_pb2 as/' tensorgate/proto/grpc_service_pb2_grpc.py
sed -i 's/^import tensorgate_pb2 as/from . import tensorgate_pb2 as/' tensorgate/proto/tensorgate_pb2_grpc.py
