#!/usr/bin/env bash
# bench/gpu_check.sh: the CUDA check (issue 10, item 7) as one prepared script, 10 minutes at most.
#
# On a machine with an NVIDIA GPU:
#   1. stops at once, saying so, when there is no GPU;
#   2. puts onnxruntime-gpu (the `gpu` extra of pyproject.toml, with its CUDA and cuDNN wheels) into
#      .venv in place of the CPU build, building .venv first when missing (EXTRAS=gpu,train,dev make venv);
#   3. starts the stack with TENSORGATE_MODEL_DEVICE=cuda and checks (python -m bench.gpu) that every
#      model service reports CUDAExecutionProvider on its /metrics and that served outputs match ONNX
#      Runtime on CPU: samples/mnist/*.png through both classifiers, a few translations, GAN digits
#      with fixed seeds;
#   4. runs the benchmark in quick mode on CUDA (no PyTriton peer: its virtualenv is CPU-only) and
#      writes docs/benchmarks-gpu.md with the checks of step 3 on it.
#
#   bash bench/gpu_check.sh
#   BUDGET_S=600 OUT=docs/benchmarks-gpu.md bash bench/gpu_check.sh
# A machine without internet: bring the wheels and set pip's own PIP_FIND_LINKS=/wheels PIP_NO_INDEX=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUDGET_S=${BUDGET_S:-600}
OUT=${OUT:-docs/benchmarks-gpu.md}
PY=.venv/bin/python
CHECKS=.bench/gpu-check.md
START=$SECONDS

say() { printf 'gpu_check [%3ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
fail() { printf 'gpu_check: FAILED: %s\n' "$*" >&2; exit 1; }
left() {
  local s=$((BUDGET_S - (SECONDS - START)))
  [ "$s" -gt 30 ] || fail "out of time (budget ${BUDGET_S}s)"
  echo "$s"
}

# 1. A GPU, or nothing to check.
command -v nvidia-smi >/dev/null 2>&1 || fail "no nvidia-smi on PATH: this machine has no NVIDIA GPU (or no driver)"
gpus=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1) \
  || fail "nvidia-smi found no usable GPU: $gpus"
[ -n "$gpus" ] || fail "nvidia-smi lists no GPU"
say "GPU: $gpus"

# 2. onnxruntime-gpu in the virtualenv.
if [ ! -x "$PY" ]; then
  say "no .venv: EXTRAS=gpu,train,dev make venv"
  EXTRAS=gpu,train,dev make venv
fi
make protos deps >/dev/null
# The CUDA and cuDNN wheels keep their libraries under site-packages/nvidia/*/lib; the model services
# (children of the stack) find them through LD_LIBRARY_PATH.
add_nvidia_libs() {
  local libs
  libs=$("$PY" -c 'import glob, os, site; print(":".join(p for s in site.getsitepackages() for p in sorted(glob.glob(os.path.join(s, "nvidia", "*", "lib")))))')
  export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
}
cuda_session() {
  # ORT falls back to CPU quietly when the CUDA libraries do not load: insist on CUDA.
  "$PY" -c 'import sys, onnxruntime as o
s = o.InferenceSession("models/mnist_mlp/1/model.onnx", providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
sys.exit(s.get_providers()[0] != "CUDAExecutionProvider")' 2>/dev/null
}
add_nvidia_libs
if ! cuda_session; then
  spec=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"][0])')
  say "installing ${spec} with its CUDA and cuDNN wheels in place of the CPU onnxruntime"
  "$PY" -m pip uninstall -y -q onnxruntime >/dev/null 2>&1 || true
  "$PY" -m pip install -q "${spec/onnxruntime-gpu/onnxruntime-gpu[cuda,cudnn]}"
  add_nvidia_libs
  cuda_session || fail "ONNX Runtime cannot open a CUDA session even after installing ${spec}"
fi
say "onnxruntime-gpu $("$PY" -c 'import onnxruntime; print(onnxruntime.__version__)') opens CUDA sessions"

# 3. The stack on CUDA against CPU.
say "python -m bench.gpu (stack with TENSORGATE_MODEL_DEVICE=cuda; providers; outputs vs CPU)"
budget=$(left)
timeout "$budget" "$PY" -m bench.gpu --device cuda --out "$CHECKS" || fail "the CUDA checks failed (table above)"

# 4. The benchmark on CUDA, quick mode.
extra=()
if [ ! -f data/ding/de-en ]; then
  timeout 120 make data-ding >/dev/null 2>&1 || { say "no Ding data here: the translator part is skipped"; extra+=(--skip-translator); }
fi
say "python -m bench --quick --device cuda -> ${OUT}"
budget=$(left)
timeout "$budget" "$PY" -m bench --quick --device cuda --skip-triton --section "$CHECKS" --out "$OUT" ${extra[@]+"${extra[@]}"} \
  || fail "the benchmark did not finish within the budget or failed"
say "done: ${OUT} (and $(dirname "$OUT")/$(basename "$OUT" .md)-latency.png)"
