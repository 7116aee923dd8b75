"""Running one model-written program and its tests in a sandbox: `run(job, limits)`.

Processes (the verifier's worker W; S, I and H are forks of it, H execs a fresh interpreter):

    W  worker: forks S, reads S's report, waits at most start + run + CLEANUP_S
    S  supervisor: own session; a child subreaper; unshares the namespaces; keeps the deadlines;
       kills the whole sandbox when H finishes, overruns, or W dies (W holds a lifeline pipe)
    I  init, pid 1 of the new pid namespace (namespaces only): its death kills every process
       in the namespace, and it dies with S (PDEATHSIG)
    H  the harness (rewards/code_harness.py, run by `python -I -S -B`), which runs the program:
       new process group, rlimits, its own uid when we are root, seccomp, clean environment

Isolation (`probe()` says which applies here):
- "namespaces": new user (when not root), mount, network, pid, ipc and uts namespaces. Every
  mount is read-only except a fresh size-limited tmpfs on /tmp holding the working directory;
  /proc is an empty read-only tmpfs; the network is a loopback that is down. Nothing written
  survives the run; no process survives I.
- "process group": the kernel refused the namespaces (or `namespaces=False`). The program runs
  in its own process group in a fresh temporary directory under S, a child subreaper that kills
  the group and every orphan it adopts. The file system, /proc and other processes of the same
  user are as reachable as for any process of that user (docs/verifiers.md says what that
  means); as root the program still gets its own unprivileged uid.
- In both: seccomp (socket(2) and the other calls in rewards/linux.py fail with EPERM, so no
  network either way), RLIMIT_AS/CPU/NPROC/FSIZE/NOFILE/CORE, a clean environment, and a
  wall clock that kills everything.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field

from rewards import linux
from rewards.isolation import (
    SANDBOX_UID_BASE,
    WORK,
    Isolation,
    Limits,
    enter_namespaces,
    probe,
    start_child,
    tasks_of,
)

__all__ = ["CLEANUP_S", "SANDBOX_UID_BASE", "Isolation", "Limits", "Result", "probe", "run"]
CLEANUP_S = 1.0  # W's allowance beyond S's deadlines, for S to kill, reap and report
_MAX_RECORD_BYTES = 4 << 20


@dataclass
class Result:
    """What happened. `status`: "finished" (the harness exited by itself), "timeout" (the
    program overran timeout_s), "no_start" (the harness did not start within start_timeout_s:
    an error of the sandbox, not of the program), "setup_error", "supervisor_died"."""

    status: str
    started: bool = False
    exit_code: int | None = None
    records: list[list[str]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    log: str = ""
    detail: str = ""
    seconds: float = 0.0
    isolation: str = ""


def run(job: dict, limits: Limits, expected: list[str] | None = None) -> Result:
    """Run `job` (see rewards/code_harness.py; the nonce is added here) in a sandbox. For stdio
    jobs, `expected` are the outputs: S compares them and `outputs` holds "ok" or why not per
    case; they never enter the sandbox. Called in the verifier's worker (W)."""
    isolation = probe(limits.namespaces, limits.python)
    if not isolation.python:
        return Result("setup_error", detail="no Python interpreter the sandbox's user can run")
    status_r, status_w = os.pipe()
    life_r, life_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # S
        code = 0
        try:
            os.close(status_r)
            os.close(life_w)
            result = _supervise(job, limits, expected, isolation, life_r, status_w)
            _send(status_w, "result", result.__dict__)
        except BaseException as e:
            _send(status_w, "result", Result("setup_error", detail=f"supervisor: {e!r}").__dict__)
            code = 1
        finally:
            os._exit(code)
    os.close(status_w)
    os.close(life_r)
    try:
        return _await(pid, status_r, limits)
    finally:
        os.close(life_w)  # S, if still there, takes this as "kill everything and go"
        os.close(status_r)


def _send(fd: int, kind: str, payload) -> None:
    try:
        os.write(fd, (json.dumps([kind, payload]) + "\n").encode())
    except OSError:
        pass


def _await(pid: int, status_r: int, limits: Limits) -> Result:
    """W's side: S's messages until it exits; if S overruns its own deadlines, kill it."""
    deadline = time.monotonic() + limits.start_timeout_s + limits.timeout_s + CLEANUP_S
    buffer, harness_pid, started, result = b"", None, False, None
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([status_r], [], [], max(0.0, left))
        chunk = os.read(status_r, 1 << 16) if ready else None
        if chunk:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                kind, payload = json.loads(line)
                if kind == "harness":
                    harness_pid = payload
                elif kind == "started":
                    started = True
                elif kind == "result":
                    result = Result(**payload)
            continue
        if chunk is None:  # S overran: the sandbox is stuck beyond what S could clean up
            os.kill(pid, signal.SIGKILL)
        break
    os.waitpid(pid, 0)
    if result is not None:
        return result
    if harness_pid:  # S was killed (by the program, outside namespaces): its group is ours now
        _kill_group(harness_pid)
    # With the harness forked, S's death is taken for the program's doing (outside namespaces a
    # program can kill its parent): never an error, which would let a program opt out.
    status = "supervisor_died" if harness_pid else "setup_error"
    return Result(status, started=started, detail="the sandbox supervisor died")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _supervise(job, limits, expected, isolation, life_r, status_w) -> Result:
    """S: set up, start H, enforce the deadlines, clean up. Returns what happened."""
    os.setsid()  # out of W's process group: a group kill aimed at W must not skip our cleanup
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    nonce = secrets.token_hex(16)
    workdir = None
    if isolation.namespaces:
        enter_namespaces(limits.file_mb)
        cwd = WORK
    else:
        workdir = tempfile.mkdtemp(prefix="rlvr-code-", dir=_scratch_root())
        cwd = workdir
    uid = SANDBOX_UID_BASE + os.getpid() % 1_000_000 if isolation.own_uid else None
    if uid is not None:
        os.chown(cwd, uid, uid)
    log_fd = os.open(os.path.join(cwd, ".log"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    if uid is not None:
        os.fchown(log_fd, uid, uid)
    job_r, job_w = os.pipe()
    rec_r, rec_w = os.pipe()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)  # closed by H's exec: a message means setup failed
    if uid is not None:
        nproc_base = 0  # a uid of its own: the program's tasks are all it counts
    elif isolation.namespaces:
        nproc_base = 2  # the user namespace's count also holds S and I
    else:
        nproc_base = tasks_of(os.getuid())  # RLIMIT_NPROC counts every task of this uid
    child = os.fork()
    if child == 0:
        start_child(isolation, limits, uid, cwd, (job_r, rec_w, log_fd, err_w), nproc_base)
    for fd in (job_r, rec_w, err_w):
        os.close(fd)
    _send(status_w, "harness", child)
    fds = (job_w, rec_r, err_r, life_r)
    try:
        job = dict(job, nonce=nonce)
        result = _watch(child, job, nonce, limits, fds, status_w, isolation.namespaces)
        result.log = _tail(log_fd)
        if expected is not None and result.status == "finished":
            result.outputs = [
                _judge(cwd, i, want, result.records, limits.file_mb)
                for i, want in enumerate(expected)
            ]
    finally:
        _kill_all(child, isolation.namespaces)
        if workdir:
            shutil.rmtree(workdir, onerror=_force_remove)
    result.isolation = isolation.describe()
    return result


def _watch(
    child: int, job: dict, nonce: str, limits: Limits, fds, status_w: int, namespaces: bool
) -> Result:
    """S: feed the job, collect the nonce's records, keep the deadlines."""
    job_w, rec_r, err_r, life_r = fds
    payload, sent = json.dumps(job).encode(), 0
    os.set_blocking(job_w, False)
    os.set_blocking(rec_r, False)
    pidfd = os.pidfd_open(child) if hasattr(os, "pidfd_open") else None
    start = time.monotonic()
    deadline, started_at = start + limits.start_timeout_s, None
    reader = _Records(nonce)
    readable = [rec_r, err_r, life_r] + ([pidfd] if pidfd is not None else [])
    try:
        while True:
            writable = [job_w] if job_w is not None else []
            wait = max(0.0, deadline - time.monotonic())
            r, w, _ = select.select(readable, writable, [], wait if pidfd else min(wait, 0.01))
            if w:
                try:
                    sent += os.write(job_w, payload[sent : sent + (1 << 16)])
                except BrokenPipeError:
                    sent = len(payload)
                if sent >= len(payload):
                    os.close(job_w)
                    job_w = None
            if rec_r in r and not reader.feed(os.read(rec_r, 1 << 16)):
                readable.remove(rec_r)
            if reader.started and started_at is None:
                started_at = time.monotonic()
                deadline = started_at + limits.timeout_s
                _send(status_w, "started", True)
            if err_r in r:
                message = os.read(err_r, 1000).decode(errors="replace")
                if message:
                    return Result("setup_error", detail=message)
                readable.remove(err_r)
            if life_r in r:
                return Result("abandoned", started=reader.started)
            code = _exit_code(child)
            if code is not None and code > 128 and namespaces:
                code = 128 - code  # I reports the harness's signal N as 128 + N
            if code is not None:
                _drain(rec_r, reader)
                status = "finished" if reader.started else "setup_error"
                break
            if time.monotonic() >= deadline:
                status = "timeout" if reader.started else "no_start"
                code = None
                break
    finally:
        for fd in (job_w, pidfd):
            if fd is not None:
                os.close(fd)
    seconds = time.monotonic() - (started_at or start)
    return Result(status, reader.started, code, reader.records, seconds=seconds)


class _Records:
    """Lines of the harness that start with the nonce; anything else is ignored."""

    def __init__(self, nonce: str) -> None:
        self.prefix = nonce + " "
        self.buffer = b""
        self.size = 0
        self.records: list[list[str]] = []
        self.started = False

    def feed(self, data: bytes) -> bool:
        """Take `data`; False at end of file."""
        if not data:
            return False
        self.size += len(data)
        if self.size > _MAX_RECORD_BYTES:  # a program flooding fd 4: keep reading, keep nothing
            return True
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if line.startswith(self.prefix):
                fields = line[len(self.prefix) :].split(" ", 3)
                self.started |= fields[0] == "start"
                self.records.append(fields)
        return True


def _drain(fd: int, reader: _Records) -> None:
    """What the harness wrote before it exited (not waiting for EOF: a surviving process of
    the program may hold the pipe open)."""
    while True:
        try:
            if not reader.feed(os.read(fd, 1 << 16)):
                return
        except BlockingIOError:
            return


def _exit_code(child: int) -> int | None:
    """The child's exit code (negative: killed by that signal) if it has exited; it stays a
    zombie, so its pid (and process group id) cannot be reused until _kill_all reaps it."""
    info = os.waitid(os.P_PID, child, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is None or info.si_pid == 0:
        return None
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return -info.si_status


def _kill_all(child: int, namespaces: bool) -> None:
    """Kill and reap everything the program started. In namespaces, killing I ends the pid
    namespace. Otherwise kill H's process group, then, as the subreaper every orphan of the
    program was handed to, every child we have, until none is left."""
    if namespaces:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        return
    _kill_group(child)
    deadline = time.monotonic() + 2 * CLEANUP_S
    while time.monotonic() < deadline:
        for pid in _children():
            _kill_group(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _children() -> list[int]:
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        pass
    kids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == me:
                        kids.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def _tail(fd: int, size: int = 2000) -> str:
    end = os.fstat(fd).st_size
    data = os.pread(fd, size, max(0, end - size))
    return data.decode("utf-8", "replace")


def _judge(cwd: str, index: int, want: str, records: list[list[str]], file_mb: int) -> str:
    """'ok', or why stdio case `index` failed."""
    status = next((r[2] for r in records if r[0] == "case" and r[1] == str(index)), None)
    if status is None:
        return "not run"
    if status != "0":
        return f"exit status {status}"
    try:
        with open(os.path.join(cwd, f"out{index}.txt"), "rb") as f:
            got = f.read(file_mb << 20).decode("utf-8", "replace")
    except OSError:
        return "no output file"
    return "ok" if _lines(got) == _lines(want) else "wrong output"


def _lines(text: str) -> list[str]:
    """Output as judges compare it: trailing spaces of each line and trailing blank lines
    do not matter."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _scratch_root() -> str | None:
    """Parent of the process-group level's work directories: ours and mode 0711, so a program
    with a uid of its own cannot write beside its directory through `../`. None (the system's
    temporary directory) if someone else holds the name."""
    root = os.path.join(tempfile.gettempdir(), f"rlvr-sandbox-{os.geteuid()}")
    try:
        os.mkdir(root, 0o711)
    except FileExistsError:
        pass
    info = os.lstat(root)
    mine = info.st_uid == os.geteuid() and os.path.isdir(root) and not os.path.islink(root)
    return root if mine and info.st_mode & 0o777 == 0o711 else None


def _force_remove(function, path, excinfo) -> None:
    """rmtree's error handler: the program may have made directories unwritable."""
    try:
        os.chmod(os.path.dirname(path), 0o700)
        os.chmod(path, 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=_force_remove)
        else:
            os.unlink(path)
    except OSError:
        pass
