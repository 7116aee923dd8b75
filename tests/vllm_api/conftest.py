"""The vllm_api tier: our code checked against the real vllm package, without a GPU.

vllm 0.33 pins a CUDA torch 2.14 that cannot share the project's CPU venv, so the checks run
as scripts in a separate virtualenv (`make_venv.sh`; default .venv-vllm at the repo root, or
$RLVR_VLLM_VENV) with the source tree on PYTHONPATH. pytest itself runs in the project's venv:
`pytest tests/vllm_api -m vllm_api`. The first run builds the venv (minutes); later runs find
its stamp and reuse it.
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
    venv = Path(os.environ.get("RLVR_VLLM_VENV", ROOT / ".venv-vllm"))
    subprocess.run(["bash", str(HERE / "make_venv.sh"), str(venv)], check=True, timeout=45 * 60)
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
