"""The verifier pool's processes, seen from the parent: `ForkServer`, `WorkerHandle`, `shut_down`.

`ForkServer` starts the fork server (`python -m rewards.worker`), asks it for workers and
collects their exit codes; `WorkerHandle` holds the pipes, pid and running jobs of one forked
worker; `shut_down` kills them all. Which request goes to which worker, deadlines and
replacements are rewards/pool.py's; the processes and their messages are described in
rewards/worker.py.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from multiprocessing.connection import Connection, wait

STARTUP_TIMEOUT_S = 120.0  # interpreter + SymPy import + warm-up, on a loaded 2-core machine
SHUTDOWN_TIMEOUT_S = 10.0  # the server's cleanup: worker groups now, orphans after a grace


class ForkServer:
    """Parent-side handle of the fork server: asks it for workers, collects their exit codes."""

    def __init__(self, config: dict) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        # The server sees the parent's import path (worktrees, test plug-ins, dist-infos).
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rewards.worker", str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=2,
                env=env,
                process_group=0,  # its own: a kill aimed at the run's group must not skip cleanup
            )
        finally:
            theirs.close()
        self.sock = ours
        self.exits: dict[int, int] = {}
        self.sock.send(pickle.dumps(config))

    def spawn(self) -> tuple[Connection, Connection] | None:
        """Pipes to a new worker (it reports ready on its own), or None if the server is gone."""
        req_r, req_w = os.pipe()
        res_r, res_w = os.pipe()
        try:
            socket.send_fds(self.sock, [b"spawn"], [req_r, res_w])
        except OSError:
            for fd in (req_w, res_r):
                os.close(fd)
            return None
        finally:
            os.close(req_r)
            os.close(res_w)
        return Connection(req_w, readable=False), Connection(res_r, writable=False)

    def read_reports(self) -> None:
        """Take in the server's pending messages; raises if it failed to start."""
        while True:
            try:
                message = self.sock.recv(4096, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            if not message:
                return
            kind, _, rest = message.decode(errors="replace").partition(" ")
            if kind == "init_error":
                raise RuntimeError(f"verifier fork server failed to start: {rest}")
            pid, code = rest.split()
            self.exits[int(pid)] = int(code)
            if len(self.exits) > 1000:  # codes of killed workers are never asked for
                del self.exits[next(iter(self.exits))]

    def exit_code(self, pid: int, timeout_s: float = 2.0) -> int | None:
        deadline = time.monotonic() + timeout_s
        while pid not in self.exits and time.monotonic() < deadline and self.alive():
            wait([self.sock], deadline - time.monotonic())
            self.read_reports()
        return self.exits.pop(pid, None)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Close the control socket: the server kills every worker group and orphan and exits
        (rewards/worker.py); SIGKILL it if it has not within SHUTDOWN_TIMEOUT_S."""
        self.sock.close()
        try:
            self.proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # stuck in the kernel; nothing more to do here
                pass


class WorkerHandle:
    """Parent-side handle of one forked worker."""

    def __init__(self, pipes: tuple[Connection, Connection]) -> None:
        self.requests, self.results = pipes
        self.pid: int | None = None  # learnt from its "ready" message
        self.ready = False
        self.started = time.monotonic()
        self.jobs: deque[tuple[int, int]] = deque()  # (batch index, seq), oldest running
        self.seq = 0
        self.head_since = 0.0  # when the running (oldest) job started

    def kill(self) -> None:
        """Close the pipes and SIGKILL the worker's process group (it and whatever it started)
        unless it is known to be gone (its pid may already be reaped by the fork server, and
        reused). The fork server kills the group again when it reaps the worker."""
        self.requests.close()
        self.results.close()
        if self.pid is not None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.pid = None


def shut_down(server: list[ForkServer], workers: list[WorkerHandle]) -> None:
    for w in workers:
        if w.pid is None and not w.results.closed and w.results.poll(0):
            try:  # a "ready" not read yet names a pid to kill; others die with the server
                message = w.results.recv()
                w.pid = message[1] if message[0] == "ready" else None
            except (EOFError, OSError):
                pass
        w.kill()
    workers.clear()
    for s in server:
        s.kill()
    server.clear()


def describe_exit(code: int | None) -> str:
    if code is None:
        return "worker died"
    if code < 0:
        try:
            return f"worker killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"worker killed by signal {-code}"
    return f"worker exited with code {code}"
