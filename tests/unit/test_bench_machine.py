"""What the benchmark page says of the machine: the CPU's generation, which a virtual machine's
model name ("AMD EPYC") may hide, and what one of its cores computes."""

from __future__ import annotations

from bench.machine import amd_core, cpu_model, matmul_gflops

GENOA = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
stepping\t: 0
"""


def test_cpu_model_names_the_generation_of_the_first_cpu() -> None:
    assert cpu_model(GENOA) == "AMD EPYC (family 25 model 17 stepping 1, Zen 4)"
    intel = "vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    assert cpu_model(intel) == "Intel(R) Xeon(R) Platinum 8480+ (family 6 model 143)"
    assert cpu_model("model name\t: Some CPU\n") == "Some CPU"
    assert cpu_model("cpu family\t: ?\nmodel\t\t: 1\nmodel name\t: Odd CPU\n") == "Odd CPU"


def test_amd_core_generations() -> None:
    assert [amd_core(25, m) for m in (0x01, 0x11, 0x21, 0x61, 0xA0)] == ["Zen 3", "Zen 4", "Zen 3", "Zen 4", "Zen 4"]
    assert amd_core(26, 0x02) == "Zen 5" and amd_core(23, 0x31) == "Zen 2" and amd_core(23, 0x01) == "Zen / Zen+"
    assert amd_core(21, 0x02) == ""


def test_matmul_probe_measures_something() -> None:
    assert matmul_gflops(0.2) > 0
