# tensorgate: every target installs what it needs first, so each works on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROTO_OUT := tensorgate/proto
PROTO_STAMP := $(PROTO_OUT)/grpc_service_pb2.py
EXTRAS ?= cpu,train,dev
# Validators of the Kubernetes manifests (tests/deploy/test_k8s.py), installed by `make test`;
# not in pyproject's extras, so that serving installs stay small.
DEPLOY_TOOLS := kubernetes-validate==1.37.0 cloudcoil-models-keda==2.16.1.0
DEPLOY_STAMP := $(VENV)/.deploy-tools

.PHONY: soak help deps venv protos data data-ding data-gettext train train-mlp train-cnn train-gan train-translator up demo test typecheck test-unit test-integration bench clean \
	rules lock images images-local test-deploy k8s

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

deps:  ## system packages: redis-server, prometheus (promtool), libb64 for perf_analyzer, through apt-get when missing
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }
	@command -v promtool >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; }
	@ldconfig -p | grep -q libb64.so.0d || { apt-get update -qq && apt-get install -y -qq libb64-0d || true; }

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

venv: $(STAMP)  ## the virtualenv with the project and its extras (EXTRAS=cpu,train,dev)

$(PROTO_STAMP): $(STAMP) protos/grpc_service.proto protos/model_config.proto protos/tensorgate.proto protos/generate.sh
	PYTHON=$(PY) sh protos/generate.sh

protos: $(PROTO_STAMP)  ## generate the gRPC/protobuf code into tensorgate/proto (never edited by hand)

data: $(STAMP)  ## download MNIST (checksummed) into data/mnist
	$(PY) -m training.data.mnist

data-ding: $(STAMP)  ## fetch the Ding German-English dictionary (apt-get download trans-de-en) into data/ding
	$(PY) -m training.data.ding

data-gettext: $(STAMP)  ## German-English pairs from Debian's gettext catalogs into data/gettext (for --extra-parallel)
	$(PY) -m training.data.gettext --out data/gettext

train-mlp: $(STAMP) data  ## train the MNIST MLP, export it to models/mnist_mlp
	$(PY) -m training.mnist mlp

train-cnn: $(STAMP) data  ## train the MNIST CNN, export it to models/mnist_cnn
	$(PY) -m training.mnist cnn --threads 1 --quiet

train-gan: $(STAMP) data  ## train the digit GAN (judged by models/mnist_cnn), export it to models/digit_gan
	$(PY) -m training.gan --epochs 50 --max-seconds 5400 --threads 1 --device cpu

train-translator: $(STAMP) data-ding  ## train the German-English translator, export it to models/translator_de_en
	$(PY) -m training.translator --threads 1 --device cpu --max-seconds 6000
	$(PY) -m training.translator --resume --max-phrases 400000 --sentence-copies 2 --lr 5e-4 \
		--lr-patience 3 --patience 8 --optimized-metric perplexity --threads 2 --device cpu --max-seconds 6000
	$(PY) -m training.translator --resume --max-phrases 400000 --sentence-copies 5 --lr 2e-4 \
		--lr-patience 3 --patience 10 --optimized-metric perplexity --threads 2 --device cpu --max-seconds 6300 \
		--alpha 0.6 1.0 1.4 1.8 2.2
	$(PY) -m training.translator --resume --max-phrases 400000 --sentence-copies 5 --lr 1e-4 \
		--lr-patience 4 --patience 14 --optimized-metric perplexity --threads 2 --device cpu --max-seconds 4800 \
		--alpha 0.6 1.0 1.4 1.8 2.2

train: train-mlp train-cnn train-gan train-translator  ## train every model (the GAN after the CNN that judges it)

up: deps $(PROTO_STAMP)  ## start redis, the model services, the gateway (+Prometheus) locally; Ctrl-C stops
	$(PY) -m services.stack

demo: deps $(PROTO_STAMP)  ## both classifiers on the example photos, TranslateStream, a digit grid, latency table (starts a stack if none is up)
	$(PY) -m services.demo

test: deps $(PROTO_STAMP) typecheck rules $(DEPLOY_STAMP)  ## type-check, check the Prometheus rules, run the whole suite (tests/deploy: with a Docker engine)
	$(PY) -m pytest -q

typecheck: $(PROTO_STAMP)  ## mypy over services/ (type hints everywhere there)
	$(PY) -m mypy

test-unit: $(PROTO_STAMP)
	$(PY) -m pytest -q tests/unit

soak: deps $(PROTO_STAMP)  ## 5 minutes at half the measured capacity: no errors, flat resident memory (make test runs 30 s)
	TENSORGATE_SOAK_S=300 $(PY) -m pytest -q -s tests/integration/test_soak.py

test-integration: deps $(PROTO_STAMP)
	$(PY) -m pytest -q tests/integration tests/e2e

bench: deps $(PROTO_STAMP)  ## raw ORT, gateway, model service, PyTriton, translator side by side -> docs/benchmarks.md (~15 min; BENCH_ARGS=--quick)
	$(PY) -m bench --profile --section docs/benchmarks-notes.md $(BENCH_ARGS)  # builds .bench/pytriton (Debian python3.11) and fetches the Ding test split on first use


$(DEPLOY_STAMP): $(STAMP) Makefile
	$(PY) -m pip install -q $(DEPLOY_TOOLS)
	touch $@

rules: deps  ## promtool: check the recording/alert rules and run their unit tests (deploy/prometheus/tests)
	promtool check rules deploy/prometheus/rules/*.yml
	promtool test rules deploy/prometheus/tests/*.yml

lock: $(STAMP)  ## re-pin the images' requirements (deploy/docker/requirements-*.lock) from pyproject.toml
	$(PY) deploy/docker/lock.py $(if $(PIP_CERT),--cert $(PIP_CERT))

images:  ## build the images from the public bases (Docker Hub): docker compose build
	docker-compose build

images-local:  ## build every image the stack needs from a debootstrap Debian base (no registry; root)
	deploy/docker/local-images.sh

test-deploy: $(PROTO_STAMP) $(DEPLOY_STAMP)  ## build the images, run docker-compose.yml for real and check it (needs dockerd)
	$(PY) -m pytest -q tests/deploy

k8s:  ## render the Kubernetes overlays (deploy/k8s/overlays/cpu and gpu) with kubectl kustomize
	kubectl kustomize deploy/k8s/overlays/cpu > /dev/null
	kubectl kustomize deploy/k8s/overlays/gpu > /dev/null
	@echo "deploy/k8s: cpu and gpu overlays render"

clean:  ## remove generated code and local state (keeps the virtualenv)
	rm -rf $(PROTO_OUT)/*_pb2*.py $(PROTO_OUT)/*_pb2.pyi .stack .pytest_cache
