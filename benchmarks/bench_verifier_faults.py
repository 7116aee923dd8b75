"""Verifier faults under the default pool settings: time to an error outcome, and processes left.

    python benchmarks/bench_verifier_faults.py [--timeout-s 2]

For each hostile plug-in of tests/plugins/hostile_verifiers.py, one call on a pool of 2 workers
(the default): the seconds until its error outcome comes back, then how many of the processes it
started (`sleep MARKER`) are alive right after the call, 2 s later (after the fork server's
orphan sweep) and after close(). Also the same after SIGKILL of the pool's owner's process group.
Figures are printed; docs/reliability.md#verifier-isolation quotes them.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "plugins"))

from hostile_verifiers import strays  # noqa: E402

from rewards import VerifierPool, VerifyRequest  # noqa: E402
from rewards.pool import PoolConfig  # noqa: E402

CASES = ["hard_exit", "sleep_forever", "spin_forever", "forks_then_crashes", "forks_then_hangs"]


def marker() -> str:
    return f"10000.{uuid.uuid4().int % 10**12:012d}"


def in_pool(timeout_s: float) -> None:
    config = PoolConfig(
        timeout_s=timeout_s,
        plugins=[f"hostile_verifiers:{c}" for c in [*CASES, "forks_then_returns"]],
    )
    print(f"pool: {config.num_workers} workers, timeout_s={timeout_s:g}")
    print(f"{'plug-in':<22} {'outcome':<40} {'seconds':>8} {'left now':>9} {'after 2 s':>9}")
    marks = []
    with VerifierPool(config) as pool:
        for name in CASES:
            mark = marker()
            marks.append(mark)
            start = time.monotonic()
            [out] = pool.verify_batch([VerifyRequest(name, "", "", {"marker": mark})])
            seconds = time.monotonic() - start
            now = strays(mark)
            time.sleep(2.0)
            print(f"{name:<22} {out.reason:<40} {seconds:>8.2f} {now:>9} {strays(mark):>9}")
        healthy = marker()
        pool.verify_batch([VerifyRequest("forks_then_returns", "", "", {"marker": healthy})])
        alive = strays(healthy)
    print(f"forks_then_returns: {alive} processes alive before close(), {strays(healthy)} after")


OWNER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from rewards import VerifierPool, VerifyRequest
    from rewards.pool import PoolConfig
    pool = VerifierPool(PoolConfig(plugins=["hostile_verifiers:forks_then_returns"]))
    pool.verify_batch([VerifyRequest("forks_then_returns", "", "", {"marker": sys.argv[1]})])
    print("verified", flush=True)
    os.kill(-os.getpgid(0), signal.SIGKILL)
""")


def owner_killed() -> None:
    mark = marker()
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, mark, str(ROOT / "tests" / "plugins")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.readline() == "verified\n"
    killed = time.monotonic()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    while strays(mark) and time.monotonic() < killed + 30:
        time.sleep(0.05)
    print(
        f"owner's process group SIGKILLed: {strays(mark)} of 4 processes left, "
        f"{time.monotonic() - killed:.2f} s to clean up"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout-s", type=float, default=2.0)
    args = parser.parse_args()
    in_pool(args.timeout_s)
    owner_killed()


if __name__ == "__main__":
    main()
