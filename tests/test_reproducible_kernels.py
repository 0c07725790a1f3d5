"""agents.utils.reproducible_cpu_kernels: the example scripts' pin of torch's CPU kernels to AVX2."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 only")

PROBE = """
import sys
import torch  # imported first, as the scripts do: the settings are read at the first operation
from agents.utils import reproducible_cpu_kernels
print(reproducible_cpu_kernels())
print(torch.backends.cpu.get_cpu_capability())
"""


def run_probe(**env_overrides) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
    env.update(env_overrides)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()


def test_kernels_are_pinned_to_avx2_after_torch_is_imported():
    settings, capability = run_probe()
    assert "'MKL_CBWR': 'AVX2'" in settings
    if capability != "DEFAULT":  # a processor without AVX2 keeps its baseline kernels
        assert capability == "AVX2"


def test_a_setting_from_the_environment_wins():
    settings, capability = run_probe(ATEN_CPU_CAPABILITY="default")
    assert "'ATEN_CPU_CAPABILITY': 'default'" in settings
    assert capability == "DEFAULT"
