"""The watcher that takes a local Ray down with its controller waits on the controller itself
(a pidfd), not on its pid number, which another process may get once the controller is reaped."""

import subprocess
import time

from rlvr.cluster.reaper import wait_for_exit


def test_wait_for_exit_returns_when_that_process_ends():
    proc = subprocess.Popen(["sleep", "1"])
    began = time.monotonic()
    wait_for_exit(proc.pid)
    waited = time.monotonic() - began
    assert 0.9 <= waited < 5, waited  # it exited (a zombie until reaped below), not earlier
    proc.wait()
    began = time.monotonic()
    wait_for_exit(proc.pid)  # reaped: no such process any more
    assert time.monotonic() - began < 0.5
