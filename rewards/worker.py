"""Verifier processes: a fork server and the workers it forks.

`python -m rewards.worker CTRL_FD PARENT_PID` starts the fork server of one VerifierPool. It is a
fresh interpreter (exec, never a fork of the parent, which holds torch, Ray and their threads),
single-threaded, that imports the built-in verifiers and the pool's plug-ins once and warms
math-verify up. For each worker the pool wants it forks a child that is ready in milliseconds
(multiprocessing's forkserver does the same, but would also re-import the parent's `__main__`
script, and with it torch, in every worker).

Nothing a verifier starts outlives its worker (docs/reliability.md#verifier-isolation):
- each worker leads its own process group; when it ends (it exited, crashed, or the pool
  killed it on a timeout) the server SIGKILLs the whole group before reaping it (a zombie's
  pid cannot be reused, so the group id is still the worker's);
- the server is a child subreaper: a descendant that left its worker's group (setsid, a double
  fork) and lost its parent is re-parented to the server, which kills such orphans ORPHAN_GRACE_S
  after a worker ends (time for the code sandbox's supervisor to clean up by itself), and again
  until none is left;
- the server leads a process group of its own, so a signal aimed at the run's group does not
  skip this cleanup: it dies with the pool (PDEATHSIG = SIGTERM) or on the pool's close, and
  first kills every worker group and every orphan.

Control socket (AF_UNIX SOCK_SEQPACKET, one message per packet):
    pool -> server: pickled config {"memory_mb", "plugins", "code"}, then b"spawn" carrying two fds
                    (the worker's request-read end and result-write end)
    server -> pool: b"exit PID CODE" when a worker ends (CODE < 0: killed by signal -CODE),
                    b"init_error TEXT" if the server cannot start
Worker pipes (multiprocessing Connections, pickled tuples):
    pool -> worker: (seq, verifier, completion, gold, row)
    worker -> pool: ("ready", pid) or ("init_error", text), then
                    (seq, status, score, reason, exit_after) per request
A worker verifies in its main thread, so math-verify's signal.alarm timeouts work.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import signal
import socket
import sys
import time
from multiprocessing.connection import Connection

from rewards.base import Outcome, checked, describe

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
ORPHAN_GRACE_S = 1.5  # > rewards.sandbox.CLEANUP_S: an orphaned sandbox supervisor cleans up first


def _prctl(option: int, value: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` when our parent dies, even mid-verification (a stuck verifier
    never reads its pipe, so it would not notice EOF). The chain pool -> server -> worker means
    a killed pool takes everything with it. Elsewhere the pipe EOF is all we have."""
    _prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def _vm_size_mb() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return -1


def _limit_memory(memory_mb: int | None) -> None:
    """Cap this worker's address space; fail now, not on the first call, if the cap is below
    what the (already loaded) interpreter needs."""
    if not memory_mb:
        return
    import resource

    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        bytearray(4 * 1024 * 1024)
    except MemoryError:
        raise MemoryError(
            f"memory_mb={memory_mb} leaves no room: a worker already uses "
            f"{_vm_size_mb()} MB of address space"
        ) from None


def _verify(name: str, completion: str, gold: str, row: dict) -> tuple[Outcome, bool]:
    """(outcome, exit_after). After MemoryError or SystemExit the worker's state is suspect, so
    it answers and then exits; the pool forks a fresh one."""
    from rewards.registry import get_verifier

    try:
        return checked(get_verifier(name)(completion, gold, row)), False
    except MemoryError:
        return Outcome.error("MemoryError: worker memory cap reached"), True
    except Exception as e:
        return Outcome.error(describe(e)), False
    except BaseException as e:  # SystemExit from a plug-in (SIGINT is ignored)
        return Outcome.error(describe(e)), True


def serve(req_fd: int, res_fd: int, memory_mb: int | None) -> int:
    """The worker loop: answer requests until the pool closes the pipe."""
    requests = Connection(req_fd, writable=False)
    results = Connection(res_fd, readable=False)
    try:
        _limit_memory(memory_mb)
    except MemoryError as e:
        results.send(("init_error", str(e)))
        return 1
    results.send(("ready", os.getpid()))
    while True:
        try:
            seq, name, completion, gold, row = requests.recv()
        except (EOFError, OSError):  # the pool closed or died
            return 0
        outcome, exit_after = _verify(name, completion, gold, row)
        results.send((seq, outcome.status, outcome.score, outcome.reason, exit_after))
        if exit_after:
            return 2


def _fork_worker(
    ctrl: socket.socket, wakeup: tuple[int, int], fds: list[int], memory_mb: int | None
) -> int:
    """Fork a worker on the pipes `fds`, leading a process group of its own; returns its pid."""
    server_pid = os.getpid()
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        try:  # also here, so the group exists before the pool can learn the pid
            os.setpgid(pid, pid)
        except OSError:  # it already did (then exec is impossible: it never execs) or died
            pass
        return pid
    code = 1
    try:  # the child: drop the server's plumbing, then serve; never return into the server loop
        os.setpgid(0, 0)
        ctrl.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for fd in wakeup:
            os.close(fd)
        _die_with_parent(server_pid)
        code = serve(fds[0], fds[1], memory_mb)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:  # no member left
        pass


class _Children:
    """The server's children: its workers (each a process-group leader) and adopted orphans."""

    def __init__(self) -> None:
        self.workers: set[int] = set()
        self.sweep_at: float | None = None  # when to kill the orphans still alive

    def reap(self, ctrl: socket.socket | None) -> None:
        """Reap every child that ended; a worker's group is killed first (while its pid is
        still held by the zombie), and its exit is reported to the pool."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            if pid in self.workers:
                _kill_group(pid)
            _, status = os.waitpid(pid, 0)
            if pid in self.workers:
                self.workers.discard(pid)
                self.sweep_at = time.monotonic() + ORPHAN_GRACE_S
                if ctrl is not None:
                    ctrl.send(f"exit {pid} {os.waitstatus_to_exitcode(status)}".encode())

    def orphans(self) -> list[int]:
        """Children that are not workers: descendants re-parented to this subreaper."""
        me = str(os.getpid())
        found = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and int(entry.name) not in self.workers:
                try:
                    with open(f"/proc/{entry.name}/stat", "rb") as f:
                        stat = f.read().decode(errors="replace")
                except OSError:
                    continue
                if stat.rpartition(")")[2].split()[1] == me:
                    found.append(int(entry.name))
        return found

    def sweep(self) -> bool:
        """Kill the orphans (and the groups they lead); True if there were any. Their own
        orphans come to this server in turn: sweep again until none is left."""
        found = self.orphans()
        for pid in found:
            try:
                if os.getpgid(pid) == pid:
                    _kill_group(pid)
                os.kill(pid, signal.SIGKILL)
            except OSError:  # gone already
                pass
        self.sweep_at = time.monotonic() + 0.2 if found else None
        return bool(found)

    def kill_all(self) -> None:
        """Every worker group now; orphans after at most ORPHAN_GRACE_S; reaped."""
        for pid in list(self.workers):
            _kill_group(pid)
        start = time.monotonic()
        while time.monotonic() < start + ORPHAN_GRACE_S + 5.0:  # bounded: never hang the exit
            self.reap(None)
            if not self.orphans() and not self.workers:
                return
            if time.monotonic() >= start + ORPHAN_GRACE_S:
                self.sweep()
            time.sleep(0.02)


def _terminate(signum, frame) -> None:
    raise SystemExit(0)


def fork_server(ctrl_fd: int, parent_pid: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the pool owner's to handle
    signal.signal(signal.SIGTERM, _terminate)  # the pool died: clean up on the way out
    _die_with_parent(parent_pid, signal.SIGTERM)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    ctrl = socket.socket(fileno=ctrl_fd)
    try:
        config = pickle.loads(ctrl.recv(1 << 20))
        from rewards import math_verifier
        from rewards.registry import load_plugin, verifier_names

        verifier_names()  # imports the built-ins; entry points load on first use, per worker
        for spec in config["plugins"]:
            load_plugin(spec)
        math_verifier.warm_up()
        from rewards import code_verifier

        code_verifier.configure(code_verifier.CodeConfig(**config["code"]))
    except BaseException as e:
        try:
            ctrl.send(f"init_error {describe(e)}".encode())
        except OSError:  # the pool is gone (its death's SIGTERM may be what stopped us)
            pass
        return 1
    # Objects loaded so far (SymPy, grammars, plug-ins) live as long as the workers: keep the
    # collector from scanning them in every worker, which would also copy their pages.
    gc.freeze()
    # SIGCHLD wakes the select below through this pipe, so exits are reported at once.
    wakeup = os.pipe()
    os.set_blocking(wakeup[1], False)
    signal.set_wakeup_fd(wakeup[1])
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    children = _Children()
    try:
        while True:
            timeout = None
            if children.sweep_at is not None:
                timeout = max(0.0, children.sweep_at - time.monotonic())
            readable, _, _ = select.select([ctrl, wakeup[0]], [], [], timeout)
            if wakeup[0] in readable:
                os.read(wakeup[0], 4096)
                children.reap(ctrl)
            if children.sweep_at is not None and time.monotonic() >= children.sweep_at:
                children.sweep()
            if ctrl in readable:
                message, fds, _, _ = socket.recv_fds(ctrl, 64, 2)
                if not message:
                    return 0
                children.workers.add(_fork_worker(ctrl, wakeup, fds, config["memory_mb"]))
    except OSError:  # the pool is gone
        return 0
    finally:  # closed, the pool died (SIGTERM) or an error: nothing may outlive the server
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.kill_all()


if __name__ == "__main__":
    sys.exit(fork_server(int(sys.argv[1]), int(sys.argv[2])))
