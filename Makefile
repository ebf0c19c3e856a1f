# tensorgate: every target installs what it needs first, so each works on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROTO_OUT := services/proto
PROTO_STAMP := $(PROTO_OUT)/grpc_service_pb2.py
EXTRAS ?= cpu,train,dev

.PHONY: help deps venv protos data train train-mlp up test typecheck test-unit test-integration bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

deps:  ## system packages: redis-server (and libb64 for perf_analyzer) through apt-get when missing
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }
	@ldconfig -p | grep -q libb64.so.0d || { apt-get update -qq && apt-get install -y -qq libb64-0d || true; }

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

venv: $(STAMP)  ## the virtualenv with the project and its extras (EXTRAS=cpu,train,dev)

$(PROTO_STAMP): $(STAMP) protos/grpc_service.proto protos/model_config.proto protos/generate.sh
	PYTHON=$(PY) sh protos/generate.sh

protos: $(PROTO_STAMP)  ## generate the gRPC/protobuf code into services/proto (never edited by hand)

data: $(STAMP)  ## download MNIST (checksummed) into data/mnist
	$(PY) -m training.data.mnist

train-mlp: $(STAMP) data  ## train the MNIST MLP, export it to models/mnist_mlp
	$(PY) -m training.mnist_mlp

train: train-mlp  ## train every model

up: deps $(PROTO_STAMP)  ## start redis, the model services, the gateway (+Prometheus) locally; Ctrl-C stops
	$(PY) -m services.stack

test: deps $(PROTO_STAMP) typecheck  ## type-check services/ and run the whole test suite
	$(PY) -m pytest -q

typecheck: $(PROTO_STAMP)  ## mypy over services/ (type hints everywhere there)
	$(PY) -m mypy

test-unit: $(PROTO_STAMP)
	$(PY) -m pytest -q tests/unit

test-integration: deps $(PROTO_STAMP)
	$(PY) -m pytest -q tests/integration tests/e2e

bench: deps $(PROTO_STAMP)  ## perf_analyzer against the local stack vs raw ONNX Runtime -> docs/benchmarks.md
	$(PY) -m bench.serving  # finds libcudart (nvidia-cuda-runtime wheel) for perf_analyzer itself

clean:  ## remove generated code and local state (keeps the virtualenv)
	rm -rf $(PROTO_OUT)/*_pb2*.py $(PROTO_OUT)/*_pb2.pyi .stack .pytest_cache
