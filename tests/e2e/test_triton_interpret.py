"""The Triton kernel's parity with the reference, on CPU under Triton's interpreter.

TRITON_INTERPRET must be set before triton decorates the kernels, so the checks run as a
script in a subprocess (tests/gpu/test_kernels_triton.py holds them; on CUDA they run as the
`gpu` tests). triton comes with the dev extra on x86-64 Linux.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_triton_kernel_matches_reference_under_the_interpreter():
    import importlib.util

    assert importlib.util.find_spec("triton"), (
        "triton missing: pip install -e '.[dev]' brings it (x86-64 Linux)"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "gpu" / "test_kernels_triton.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
