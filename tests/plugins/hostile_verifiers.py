"""Misbehaving verifier plug-ins for the pool's isolation tests (loaded as module:function)."""

import os
import sys
import time
from pathlib import Path

from rewards.base import Outcome
from rewards.math_verifier import make_math_verifier


def sleep_forever(completion, gold, row):
    while True:
        time.sleep(3600)


def spin_forever(completion, gold, row):
    """A C-level loop that holds the GIL: only SIGKILL stops it, signals never run."""
    return Outcome.correct() if 9 ** (9**9**9) else Outcome.incorrect()


def allocate_forever(completion, gold, row):
    """Grows until the worker's address-space cap stops it. bytes(n) is calloc'd, so its pages
    are not touched: the cap is reached in microseconds however loaded the machine is
    (bytearray(n) zero-fills, which took 0.3 s to reach 512 MB here and over 1 s under load,
    racing the 2 s timeout the test checks it against)."""
    hoard = []
    while True:
        hoard.append(bytes(64 * 1024 * 1024))


def hard_exit(completion, gold, row):
    os._exit(7)


def soft_exit(completion, gold, row):
    sys.exit(3)


def raises(completion, gold, row):
    raise ValueError("bad plug-in " + completion)


def returns_bool(completion, gold, row):
    return completion == gold


def returns_nan(completion, gold, row):
    return Outcome.correct(score=float("nan"))


def echo(completion, gold, row):
    """Correct iff completion == gold; the reason reports what the worker received."""
    ok = completion == gold
    return Outcome(
        "correct" if ok else "incorrect",
        1.0 if ok else 0.0,
        f"len={len(completion)} row={sorted(row.items())}",
    )


def heavy_modules(completion, gold, row):
    """Reports which heavy frameworks are imported in the worker process."""
    loaded = sorted(
        m for m in ("torch", "ray", "transformers", "vllm", "deepspeed") if m in sys.modules
    )
    return Outcome.incorrect(reason=",".join(loaded) or "none")


def whoami(completion, gold, row):
    return Outcome.incorrect(reason=str(os.getpid()))


# The `math` verifier minus its exact-text shortcut and with patient math-verify timeouts: the
# real-data sweep uses it so reference answers test the parser (not string equality), and the
# verdict does not depend on how loaded the machine is.
math_without_shortcut = make_math_verifier(timeout_s=30, shortcut=False)


def nap(completion, gold, row):
    """Sleeps row["seconds"], then is correct: a slow but well-behaved verifier."""
    time.sleep(row["seconds"])
    return Outcome.correct()


def strays(marker: str) -> int:
    """How many `sleep MARKER` processes (started by the plug-ins below) are alive, zombies
    not counted."""
    want = b"sleep\0" + marker.encode() + b"\0"
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == want:
                count += (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            pass
    return count


def _spawn_sleepers(marker: str, count: int, detach: bool = False) -> None:
    """Start `count` `sleep MARKER` processes; detached ones leave the worker's process group
    (setsid) and lose their parent (a double fork), as a daemon does. Returns once each has
    exec'd (the close-on-exec pipe reads EOF), so a count right after the call sees them."""
    for _ in range(count):
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                if detach:
                    os.setsid()
                    if os.fork():
                        os._exit(0)
                os.execv("/bin/sleep", ["sleep", marker])
            finally:
                os._exit(127)
        os.close(w)
        os.read(r, 1)
        os.close(r)
        if detach:
            os.waitpid(pid, 0)


def _fork_sleepers(row) -> None:
    _spawn_sleepers(row["marker"], 3)
    _spawn_sleepers(row["marker"], 1, detach=True)


def forks_then_crashes(completion, gold, row):
    """Three sleepers in its group and one daemon, then os._exit."""
    _fork_sleepers(row)
    os._exit(5)


def forks_then_hangs(completion, gold, row):
    _fork_sleepers(row)
    while True:
        time.sleep(3600)


def forks_then_returns(completion, gold, row):
    _fork_sleepers(row)
    return Outcome.correct()


def arith_or_crash(completion, gold, row):
    """The `arith` verdict, except that one completion in four (by its text's CRC) starts three
    `sleep $RLVR_STRAY_MARKER` processes and a daemon, then crashes its worker."""
    import zlib

    from rewards.arith import verify_arith

    if zlib.crc32(completion.encode()) % 4 == 0:
        _fork_sleepers({"marker": os.environ["RLVR_STRAY_MARKER"]})
        os._exit(9)
    return verify_arith(completion, gold, row)
