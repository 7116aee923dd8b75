"""Nothing a verifier starts outlives its worker: process groups, the fork server as a child
subreaper, and its cleanup when the pool closes or its owner is SIGKILLed.

The plug-ins (tests/plugins/hostile_verifiers.py: forks_then_*) each start three `sleep MARKER`
processes in their worker's group and one daemon (setsid + double fork) outside it, then crash,
hang or return. Every test counts the live `sleep MARKER` processes on the machine.
"""

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from rewards_support import PLUGINS, REPO

from rewards import VerifierPool, VerifyRequest
from rewards.base import CORRECT, ERROR
from rewards.pool import PoolConfig
from rewards.worker import ORPHAN_GRACE_S

FORKERS = [f"hostile_verifiers:forks_then_{end}" for end in ("crashes", "hangs", "returns")]
PER_CALL = 4  # sleepers each forks_then_* call starts: 3 in its group, 1 daemon


def new_marker() -> str:
    """A `sleep` argument no other process on the machine has: 10000.<random digits>."""
    return f"10000.{uuid.uuid4().int % 10**12:012d}"


def strays(marker: str) -> int:
    """Live (not zombie) `sleep MARKER` processes, anywhere on the machine."""
    want = b"sleep\0" + marker.encode() + b"\0"
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() != want:
                    continue
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            count += state != "Z"
    return count


def wait_for(marker: str, count: int, timeout_s: float) -> tuple[int, float]:
    """(strays, seconds) once the count is `count` or after `timeout_s`."""
    start = time.monotonic()
    while strays(marker) != count and time.monotonic() < start + timeout_s:
        time.sleep(0.05)
    return strays(marker), time.monotonic() - start


def test_crash_timeout_and_close_kill_the_workers_whole_tree():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(PLUGINS))
        pool = VerifierPool(PoolConfig(num_workers=2, timeout_s=2.0, plugins=FORKERS))
    marker = new_marker()
    row = {"marker": marker}
    start = time.monotonic()
    crashed, hung = pool.verify_batch(
        [
            VerifyRequest("forks_then_crashes", "", "a", row),
            VerifyRequest("forks_then_hangs", "", "b", row),
        ]
    )
    assert time.monotonic() - start < 2.0 + 4.0  # both may run on one worker, in turn
    assert crashed.status == ERROR and crashed.reason == "worker exited with code 5 (crashed)"
    assert hung.status == ERROR and hung.reason == "timeout after 2 s"
    # The groups die with their workers; the two daemons (outside any worker's group) are
    # orphans of the fork server, killed ORPHAN_GRACE_S after the worker ended.
    left, seconds = wait_for(marker, 0, ORPHAN_GRACE_S + 3.0)
    assert left == 0, f"{left} of {2 * PER_CALL} processes still alive"
    assert seconds < ORPHAN_GRACE_S + 1.0
    assert pool.metrics()["verifier/pool/restarts"] == 2  # absorbed and counted

    marker = new_marker()  # a healthy worker's processes live until the pool closes
    [ok] = pool.verify_batch([VerifyRequest("forks_then_returns", "", "", {"marker": marker})])
    assert ok.status == CORRECT
    assert strays(marker) == PER_CALL
    pool.close()
    assert strays(marker) == 0  # close() returns after the fork server's cleanup


OWNER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from rewards import VerifierPool, VerifyRequest
    from rewards.pool import PoolConfig
    pool = VerifierPool(PoolConfig(num_workers=1, plugins=["hostile_verifiers:forks_then_returns"]))
    pool.verify_batch([VerifyRequest("forks_then_returns", "", "", {"marker": sys.argv[1]})])
    print("verified", flush=True)
    os.kill(os.getpgid(0) * -1, signal.SIGKILL)  # the whole group, as a scheduler or kill -9 -PGID
""")


def test_sigkill_of_the_owners_process_group_leaves_nothing():
    """The fork server leads its own group, so a group kill aimed at the run spares it: it sees
    its parent die (PDEATHSIG SIGTERM) and kills every worker group and orphan."""
    marker = new_marker()
    owner = subprocess.run(
        [sys.executable, "-c", OWNER, marker, str(PLUGINS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert owner.returncode == -9 and owner.stdout == "verified\n", owner.stderr[-2000:]
    left, seconds = wait_for(marker, 0, ORPHAN_GRACE_S + 5.0)
    assert left == 0, f"{left} of {PER_CALL} processes alive {seconds:.1f} s after the kill"
