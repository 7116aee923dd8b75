"""A local Ray dies with the controller that started it.

Ray's GCS and raylet notice a dead driver, but its dashboard and runtime-env agents outlived a
controller killed with SIGKILL by 60-120 s here. Before starting a local Ray the controller tags
its environment (every process Ray starts inherits it) and starts this watcher in its own session:
when the controller is gone the watcher kills every process carrying the tag, then exits.
Linux only (/proc); elsewhere nothing is started.

    python -m rlvr.cluster.reaper <controller pid> <tag>
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

TAG = "RLVR_RAY_OWNER"
_started: list[str] = []


def tag_and_watch() -> str | None:
    """Tag this process's environment for the local Ray about to start and start the watcher
    (once per process). Returns the tag, or None where /proc is missing."""
    if not Path("/proc/self/environ").exists():
        return None
    if not _started:
        tag = f"{os.getpid()}-{time.time_ns()}"
        env = {k: v for k, v in os.environ.items() if k != TAG}
        subprocess.Popen(
            [sys.executable, "-m", "rlvr.cluster.reaper", str(os.getpid()), tag],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a kill of the run's process group leaves it to clean up
        )
        _started.append(tag)
    os.environ[TAG] = _started[0]
    return _started[0]


def tagged(tag: str) -> list[int]:
    """Pids of the processes whose environment holds TAG=tag."""
    needle = f"{TAG}={tag}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:  # gone, or not ours
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_for_exit(pid: int) -> None:
    """Return once process `pid` has exited. A pidfd names that very process, so a pid reused
    by another process after the controller was reaped cannot keep the watcher waiting (pids
    wrap quickly where pid_max is 32768 and a test suite starts thousands of processes)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone
    except (AttributeError, OSError):  # no pidfds (old kernel): poll
        while alive(pid):
            time.sleep(0.5)
        return
    with os.fdopen(fd) as handle:  # readable when the process exits (zombies included)
        select.select([handle], [], [])


def main(pid: int, tag: str) -> None:
    wait_for_exit(pid)
    deadline = time.monotonic() + 20.0
    empty = 0  # two empty sweeps in a row: nothing is left (a dying raylet may still spawn)
    while empty < 2 and time.monotonic() < deadline:
        pids = [p for p in tagged(tag) if p != os.getpid()]
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        empty = 0 if pids else empty + 1
        time.sleep(0.5)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
