"""VerifierPool: order, parity with the serial path, metrics, hard limits, recovery, no leaks.

Hostile cases each get their own call on a pool that has all its workers up, and must come back
within timeout + 1 s as an error or incorrect outcome; the pool then keeps working.
"""

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from rewards_support import PLUGINS, REPO, install_example

from rewards import VerifierPool, VerifyRequest
from rewards.base import CORRECT, ERROR, INCORRECT
from rewards.code_verifier import CodeConfig
from rewards.pool import PoolConfig

TIMEOUT_S = 2.0  # below math-verify's own 3 s: `9^{9^{9^{9}}}` is killed by the pool
HOSTILE = [
    f"hostile_verifiers:{name}"
    for name in (
        "sleep_forever",
        "spin_forever",
        "allocate_forever",
        "hard_exit",
        "soft_exit",
        "raises",
        "returns_bool",
        "returns_nan",
        "echo",
        "heavy_modules",
        "whoami",
        "nap",
    )
]


def worker_pids() -> set[int]:
    """Live (not zombie) descendants of this process running rewards.worker, read from /proc:
    the pool's fork server and the workers it forked."""
    children: dict[int, list[int]] = {}
    cmdlines: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdlines[int(entry.name)] = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            if b"rewards.worker" in cmdlines.get(child, b""):
                found.add(child)
    return found


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Two workers with the hostile plug-ins, and the example package installed as an entry
    point (so the workers must find it the way an installed plug-in is found)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(PLUGINS))
        for path in install_example(tmp_path_factory.mktemp("site")):
            mp.syspath_prepend(str(path))
        before = worker_pids()
        config = PoolConfig(num_workers=2, timeout_s=TIMEOUT_S, memory_mb=512, plugins=HOSTILE)
        with VerifierPool(config) as p:
            yield p
    assert worker_pids() == before


MIXED = [
    VerifyRequest("math", r"so $\boxed{\frac{1}{2}}$", "0.5"),
    VerifyRequest("math", r"\boxed{3}", "4"),
    VerifyRequest("arith", "46", "46"),
    VerifyRequest("arith", "046", "46"),
    VerifyRequest("countdown", "<answer>(6 - 2) * 5</answer>", "20", {"numbers": [2, 5, 6]}),
    VerifyRequest("countdown", "<answer>6 * 5</answer>", "20", {"numbers": [2, 5, 6]}),
    VerifyRequest("echo", "same", "same", {"k": [1, 2]}),
    VerifyRequest("raises", "x", "y"),
] * 3


def test_batch_keeps_order_and_matches_the_serial_path(pool):
    expected = [CORRECT, INCORRECT, CORRECT, INCORRECT, CORRECT, INCORRECT, CORRECT, ERROR] * 3
    with VerifierPool(
        PoolConfig(num_workers=0, plugins=["hostile_verifiers:echo", "hostile_verifiers:raises"])
    ) as serial:
        serial_out = serial.verify_batch(MIXED)
    pool_out = pool.verify_batch(MIXED)
    assert [o.status for o in pool_out] == expected
    # (status, reason): error scores are NaN, and NaN != NaN
    assert [(o.status, o.reason) for o in pool_out] == [(o.status, o.reason) for o in serial_out]
    assert pool_out[6].reason == "len=4 row=[('k', [1, 2])]"  # the row reached the worker
    assert pool_out[7].reason == "ValueError: bad plug-in x"
    assert pool.verify_batch([]) == []


def test_metrics_count_calls_outcomes_and_latency(pool):
    before = pool.metrics()
    pool.verify_batch(MIXED)
    after = pool.metrics()

    def delta(key):
        return after[key] - before.get(key, 0.0)

    assert delta("verifier/math/calls") == 6
    assert delta("verifier/math/correct") == 3 and delta("verifier/math/incorrect") == 3
    assert delta("verifier/raises/errors") == 3
    assert delta("verifier/arith/calls") == 6 and delta("verifier/arith/errors") == 0
    assert 0 < after["verifier/math/p50_ms"] <= after["verifier/math/p99_ms"]
    assert after["verifier/pool/workers"] == 2 and after["verifier/pool/ready"] == 2


def test_timeout_counts_from_the_start_of_each_call_not_its_send(pool):
    # Same gold, so both go to one worker: the second waits in its pipe while the first runs.
    # 1.2 s each: 2.4 s in all, beyond the 2 s timeout, yet neither call overran.
    naps = [VerifyRequest("nap", "", "same", {"seconds": 1.2})] * 2
    start = time.monotonic()
    assert [o.status for o in pool.verify_batch(naps)] == [CORRECT, CORRECT]
    assert time.monotonic() - start >= 2.4


def test_unpicklable_row_fails_that_request_only(pool):
    rows = [{"lock": threading.Lock()}, {}]
    outcomes = pool.verify_batch([VerifyRequest("arith", "1", "1", row) for row in rows])
    assert outcomes[0].status == ERROR and "cannot be sent" in outcomes[0].reason
    assert outcomes[1].status == CORRECT


def test_unknown_verifier_fails_fast(pool):
    with pytest.raises(KeyError, match="unknown verifier.*'nope'"):
        pool.verify_batch([VerifyRequest("math", "1", "1"), VerifyRequest("nope", "1", "1")])


def test_workers_load_an_installed_entry_point_plugin(pool):
    outcomes = pool.verify_batch(
        [
            VerifyRequest("multiple_choice", "Answer: (B)", "B"),
            VerifyRequest("multiple_choice", "Answer: (B)", "C"),
        ]
    )
    assert [o.status for o in outcomes] == [CORRECT, INCORRECT]


def test_workers_are_fresh_interpreters_without_torch(pool):
    import torch  # noqa: F401  (the parent holds torch, as the controller will)

    [outcome] = pool.verify_batch([VerifyRequest("heavy_modules", "", "")])
    assert outcome.reason == "none"
    assert "torch" in sys.modules


def test_work_spreads_over_workers(pool):
    outcomes = pool.verify_batch([VerifyRequest("whoami", "", "")] * 20)
    assert len({o.reason for o in outcomes}) == 2


HOSTILE_CASES = [
    # (verifier, completion, gold, allowed statuses, reason must contain)
    ("math", "1" * 1_000_000, "2", {INCORRECT}, ""),
    ("math", "\\boxed{" + "x" * 1_000_000 + "}", "2", {INCORRECT}, ""),
    ("math", "word " * 200_000 + "\\boxed{3", "2", {INCORRECT}, ""),
    ("math", r"\boxed{9^{9^{9^{9}}}}", "3", {ERROR, INCORRECT}, ""),
    ("math", "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}", "1", {INCORRECT}, ""),
    ("math", "{" * 10_000 + "\\boxed{3}", "2", {INCORRECT}, ""),
    ("math", "\x00" * 1000 + "\\boxed{3\x00}" + "\x00", "2", {INCORRECT, ERROR}, ""),
    ("math", "\ud800 \\boxed{3} \udfff\udc80", "2", {INCORRECT}, ""),
    ("countdown", "\ud800<answer>1+\x00</answer>", "1", {INCORRECT}, ""),
    ("sleep_forever", "", "", {ERROR}, "timeout after 2 s"),
    ("allocate_forever", "", "", {ERROR}, "MemoryError"),
    ("hard_exit", "", "", {ERROR}, "worker exited with code 7"),
    ("returns_bool", "", "", {ERROR}, "returned bool"),
    ("returns_nan", "", "", {ERROR}, "non-finite"),
]


@pytest.mark.parametrize("case", HOSTILE_CASES, ids=lambda c: f"{c[0]}-{c[1][:12]!r}")
def test_hostile_call_returns_in_time(pool, case):
    verifier, completion, gold, allowed, reason = case
    pool.wait_ready()
    start = time.monotonic()
    [outcome] = pool.verify_batch([VerifyRequest(verifier, completion, gold, {"numbers": [1]})])
    elapsed = time.monotonic() - start
    assert elapsed < TIMEOUT_S + 1.0
    assert outcome.status in allowed, outcome
    assert reason in outcome.reason
    assert len(outcome.reason) <= 200


def test_pool_recovers_after_hostile_calls_in_one_batch(pool):
    good = VerifyRequest("math", r"\boxed{7}", "7")
    batch = [
        good,
        VerifyRequest("hard_exit", "", ""),
        good,
        VerifyRequest("soft_exit", "", ""),
        good,
        VerifyRequest("returns_bool", "", ""),
        good,
        good,
    ]
    restarts = pool.metrics()["verifier/pool/restarts"]
    outcomes = pool.verify_batch(batch)
    assert [o.status for o in outcomes] == [CORRECT, ERROR] * 3 + [CORRECT, CORRECT]
    assert outcomes[1].reason == "worker exited with code 7 (crashed)"
    assert outcomes[3].reason == "SystemExit: 3"
    metrics = pool.metrics()
    # os._exit is a crash; after SystemExit the worker answers, then exits and is replaced
    assert metrics["verifier/pool/restarts"] == restarts + 2
    assert metrics["verifier/hard_exit/crashes"] >= 1
    pool.wait_ready()
    assert {w.pid for w in pool._workers} <= worker_pids()  # replacements are up


def test_spin_in_c_code_is_killed_and_nothing_leaks(pool):
    # 9 ** (9 ** 9 ** 9) holds the GIL in one C call, where no signal handler can run.
    # (`pool`, the module's shared pool, is only asked for so its workers are counted out.)
    others = worker_pids()
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(PLUGINS))
        pool = VerifierPool(
            PoolConfig(num_workers=1, timeout_s=1.0, plugins=["hostile_verifiers:spin_forever"])
        )
    start = time.monotonic()
    [outcome] = pool.verify_batch([VerifyRequest("spin_forever", "", "")])
    assert time.monotonic() - start < 2.0 and outcome.reason == "timeout after 1 s"
    pool.wait_ready()
    assert len(worker_pids() - others) == 2  # its fork server and the replacement worker
    with pytest.raises(KeyboardInterrupt):  # an exception inside `with` still closes the pool
        with pool:
            raise KeyboardInterrupt
    assert worker_pids() == others and multiprocessing.active_children() == []
    with pytest.raises(RuntimeError, match="closed"):
        pool.verify_batch([])


def test_garbage_collected_pool_kills_its_workers(pool):
    others = worker_pids()
    local = VerifierPool(PoolConfig(num_workers=1))
    assert len(worker_pids() - others) == 2  # fork server and worker
    del local
    gc.collect()
    assert worker_pids() == others


PARENT = textwrap.dedent("""
    import os, signal, sys
    from rewards.pool import PoolConfig, VerifierPool
    pool = VerifierPool(PoolConfig(num_workers=1))
    print(pool._server[0].proc.pid, pool._workers[0].pid, flush=True)
    if sys.argv[1] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no finalizer: PDEATHSIG must act
""")


def test_workers_die_with_their_parent():
    """A parent that exits without close() (atexit finalizer) or is SIGKILLed (no Python code
    runs; the workers' PDEATHSIG acts) leaves no worker behind. Both run at once to save time."""
    parents = {
        ending: subprocess.Popen(
            [sys.executable, "-c", PARENT, ending], cwd=REPO, text=True, stdout=subprocess.PIPE
        )
        for ending in ("exit", "kill")
    }
    for ending, parent in parents.items():
        out, _ = parent.communicate(timeout=120)
        assert parent.returncode == (-signal.SIGKILL if ending == "kill" else 0)
        for pid in map(int, out.split()):  # fork server, worker
            deadline = time.monotonic() + 5
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not alive(pid), ending


def alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (dead, waiting for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_plugin_that_fails_to_import_fails_the_constructor(pool):
    others = worker_pids()
    with pytest.raises(ModuleNotFoundError):
        VerifierPool(PoolConfig(num_workers=1, plugins=["no_such_module_xyz:f"]))
    assert worker_pids() == others


def test_memory_cap_too_small_to_start_is_reported(pool):
    others = worker_pids()
    # 64 MB, the smallest cap the config accepts, is below what a worker's interpreter already
    # maps (about 100 MB), so the worker cannot start.
    with pytest.raises(RuntimeError, match="failed to start.*memory_mb=64 leaves no room"):
        VerifierPool(PoolConfig(num_workers=1, memory_mb=64))
    assert worker_pids() == others


def test_config_refuses_bad_limits():
    with pytest.raises(
        ValueError, match=r"memory_mb\s+Input should be greater than or equal to 64"
    ):
        PoolConfig(memory_mb=20)
    with pytest.raises(ValueError, match="timeout_s"):
        PoolConfig(timeout_s=0)
    with pytest.raises(ValueError, match="num_workers"):
        PoolConfig(num_workers=-1)
    assert PoolConfig(memory_mb=None).memory_mb is None  # no cap
    assert PoolConfig().model_dump() == dict(
        num_workers=2, timeout_s=10.0, memory_mb=2048, plugins=[], code=CodeConfig().model_dump()
    )
