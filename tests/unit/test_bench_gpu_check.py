"""bench/gpu_check.sh: valid bash, and what it calls exists (no GPU needed); bench.gpu's parsing."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

from bench import gpu, serving

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def module_call(module: str) -> list[str]:
    """The arguments the script passes to `python -m <module>`, shell variables as plain words."""
    (line,) = [line for line in SCRIPT.read_text().splitlines() if f'"$PY" -m {module} ' in line]
    words = line.split(f'"$PY" -m {module} ', 1)[1]
    words = re.split(r"\$\{extra|\|\||\\$", words)[0]  # up to the optional extras, `|| fail` or a continuation
    return shlex.split(re.sub(r'"\$\{?(\w+)\}?"', lambda m: m.group(1).lower() + ".md", words))


def test_script_is_valid_bash() -> None:
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run([bash, "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_bench_accepts_the_flags_the_script_passes() -> None:
    args = serving.parse_args(module_call("bench"))
    assert args.quick and args.device == "cuda" and args.skip_triton
    assert args.section == "checks.md" and args.out == "out.md"
    assert serving.parse_args(["--skip-translator"]).skip_translator  # added when the Ding data is missing


def test_bench_gpu_accepts_the_flags_the_script_passes() -> None:
    args = gpu.parse_args(module_call("bench.gpu"))
    assert args.device == "cuda" and args.out == "checks.md"


def test_the_script_uses_existing_make_targets_and_files() -> None:
    text = SCRIPT.read_text()
    makefile = (ROOT / "Makefile").read_text()
    names = {name for call in re.findall(r"\bmake ((?:[a-z-]+ ?)+)", text) for name in call.split()}
    assert {"venv", "protos", "deps", "data-ding"} <= names
    for name in names:
        assert re.search(rf"^{re.escape(name)}:", makefile, re.M), f"no make target {name}"
    assert (ROOT / "models" / "mnist_mlp" / "1" / "model.onnx").exists()  # the CUDA session probe
    assert '"gpu"' in text and "onnxruntime-gpu" in (ROOT / "pyproject.toml").read_text()  # the extra it installs


def test_the_script_fails_clearly_without_a_gpu(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    # a PATH without nvidia-smi: the script must stop at step 1, before installing anything
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("dirname", "printf"):
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    result = subprocess.run([bash, str(SCRIPT)], capture_output=True, text=True, env={"PATH": str(tools)}, timeout=30)
    assert result.returncode == 1
    assert "no nvidia-smi" in result.stderr


def test_providers_on_metrics() -> None:
    page = ('# HELP tensorgate_execution_provider_info 1 for the ONNX Runtime execution provider a model runs on.\n'
            '# TYPE tensorgate_execution_provider_info gauge\n'
            'tensorgate_execution_provider_info{model="mnist_mlp",provider="CUDAExecutionProvider"} 1.0\n'
            'tensorgate_execution_provider_info{model="mnist_cnn",provider="CPUExecutionProvider"} 1.0\n'
            'tensorgate_execution_provider_info{model="old",provider="CUDAExecutionProvider"} 0.0\n')
    assert gpu.providers_on(page) == {"mnist_mlp": {"CUDAExecutionProvider"}, "mnist_cnn": {"CPUExecutionProvider"}}
    assert gpu.close_translation(("a", -1.0), ("b", -1.02), 0.05)
    assert not gpu.close_translation(("a", -1.0), ("a", -1.2), 0.05)
    table = gpu.render([gpu.Check("x", "1", True), gpu.Check("y", "2", False)])
    assert "| x | 1 | ok |" in table and "| y | 2 | **FAILED** |" in table
