"""Setting up a sandboxed process (rewards/sandbox.py runs them): which isolation the kernel
allows here (`probe`), entering the namespaces, and the child that becomes the harness
(`start_child`: init of the pid namespace, process group, uid, rlimits, seccomp, exec).
"""

from __future__ import annotations

import fcntl
import math
import os
import resource
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from rewards import linux
from rewards.code_harness import BOOTSTRAP

HARNESS_TEXT = Path(__file__).with_name("code_harness.py").read_text()
SANDBOX_UID_BASE = 1_500_000_000  # as root, each run gets uid BASE + (S's pid % 1e6)
WORK = "/tmp/work"  # the working directory inside the namespaces (on their own tmpfs)
_SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")


@dataclass(frozen=True)
class Limits:
    """Per program. Timeouts in seconds; sizes in MB."""

    timeout_s: float
    start_timeout_s: float
    memory_mb: int
    max_processes: int
    file_mb: int
    max_open_files: int
    namespaces: bool = True
    python: str = ""  # "" = this interpreter if the sandbox's user can run it, else python3


@dataclass(frozen=True)
class Isolation:
    namespaces: bool
    detail: str
    seccomp: bool
    own_uid: bool
    python: str  # the interpreter the sandbox's user can run ("" if none)

    def describe(self) -> str:
        parts = [
            "namespaces (user, mount, net, pid, ipc, uts)" if self.namespaces else "process group",
            "seccomp" if self.seccomp else "no seccomp",
            "own uid" if self.own_uid else "same uid",
        ]
        return ", ".join(parts) + f" ({self.detail}); python {self.python or 'not found'}"


_PROBED: dict[tuple[bool, str], Isolation] = {}


def probe(namespaces: bool = True, python: str = "") -> Isolation:
    """Which isolation this process's sandboxes get, and which interpreter; tried once per
    process in throwaway children (the same unshare and mounts a run does)."""
    key = (namespaces, python)
    if key not in _PROBED:
        detail = _try_namespaces() if namespaces else "namespaces disabled by configuration"
        ok = namespaces and detail.startswith("ok")
        candidates = [python] if python else [sys.executable, *_SYSTEM_PYTHONS]
        _PROBED[key] = Isolation(
            namespaces=ok,
            detail=detail.removeprefix("ok").strip(),
            seccomp=linux.seccomp_supported(),
            own_uid=os.geteuid() == 0,
            python=next((p for p in candidates if p and _runs_python(p)), ""),
        )
    return _PROBED[key]


def _runs_python(path: str) -> bool:
    """Whether the sandbox's user can start `path` as Python (as root it has its own uid, and
    an interpreter under /root, e.g. pyenv's, is out of its reach)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.closerange(3, 65536)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setresgid(SANDBOX_UID_BASE, SANDBOX_UID_BASE, SANDBOX_UID_BASE)
                os.setresuid(SANDBOX_UID_BASE, SANDBOX_UID_BASE, SANDBOX_UID_BASE)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.execv(path, [path, "-I", "-S", "-c", "import json, ast"])
        finally:
            os._exit(127)
    return os.waitpid(pid, 0)[1] == 0


def _try_namespaces() -> str:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            message = "ok " + enter_namespaces(file_mb=1)
        except BaseException as e:
            message = f"unavailable: {e}"
        os.write(w, message.encode()[:4000])
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        message = f.read().decode()
    os.waitpid(pid, 0)
    return message or "unavailable: probe died"


def enter_namespaces(file_mb: int) -> str:
    """In S: new namespaces, everything read-only, a tmpfs on /tmp with the work directory."""
    flags = linux.CLONE_NEWNS | linux.CLONE_NEWNET | linux.CLONE_NEWPID
    flags |= linux.CLONE_NEWIPC | linux.CLONE_NEWUTS
    root = os.geteuid() == 0
    uid, gid = os.geteuid(), os.getegid()
    linux.unshare(flags if root else flags | linux.CLONE_NEWUSER)
    if not root:
        linux.map_own_ids(uid, gid)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    done, failed = linux.remount_all_readonly()
    size = f"size={max(1, file_mb) * 2}m,nr_inodes=4096,mode=0755"
    linux.mount("tmpfs", "/tmp", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, size)
    os.mkdir(WORK, 0o700)
    return f"{done} mounts read-only" + (f", {failed} could not be" if failed else "")


def start_child(isolation: Isolation, limits: Limits, uid, cwd: str, fds, nproc_base: int) -> None:
    """The fork of S: in namespaces I (pid 1) forking H, else H itself. Never returns."""
    try:
        # Above the fds H will use; close-on-exec, so a message on it means H never started.
        err_w = fcntl.fcntl(fds[3], fcntl.F_DUPFD_CLOEXEC, 10)
        fds = (*fds[:3], err_w)
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        if isolation.namespaces:
            ro = linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
            linux.mount("tmpfs", "/proc", "tmpfs", ro, "size=4k")
            harness = os.fork()
            if harness:
                _init(harness)
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        _exec_harness(limits, uid, cwd, fds, nproc_base, isolation.python)
    except BaseException as e:
        try:
            os.write(err_w, f"{type(e).__name__}: {e}".encode()[:1000])
        except BaseException:
            pass
    finally:
        os._exit(127)


def _init(harness: int) -> None:
    """Pid 1 of the sandbox: reap orphans until the harness exits, then exit with its status
    (128 + N for signal N). The kernel then kills whatever is left in the namespace."""
    os.closerange(3, 65536)
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == harness:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


def _exec_harness(limits: Limits, uid, cwd: str, fds, nproc_base: int, python: str) -> None:
    job_r, rec_w, log_fd, err_w = fds
    os.setpgid(0, 0)  # one group: S kills it as a unit
    null = os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((null, 0), (log_fd, 1), (log_fd, 2), (job_r, 3), (rec_w, 4)):
        os.dup2(fd, target)
    os.closerange(5, err_w)
    os.closerange(err_w + 1, 65536)
    os.chdir(cwd)
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # a uid change clears it
    _set_limits(limits, nproc_base)
    os.nice(10)  # a program that spins many processes must not starve S of the CPU it needs
    if linux.seccomp_supported():
        linux.install_seccomp()
    argv = [python, "-I", "-S", "-B", "-c", BOOTSTRAP, HARNESS_TEXT]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": cwd, "TMPDIR": cwd, "LANG": "C.UTF-8"}
    os.execve(python, argv, env)


def _set_limits(limits: Limits, already: int) -> None:
    def cap(which: int, value: int, hard: int | None = None) -> None:
        _, current = resource.getrlimit(which)
        top = value if hard is None else hard
        if current != resource.RLIM_INFINITY and os.geteuid() != 0:
            value, top = min(value, current), min(top, current)
        resource.setrlimit(which, (value, top))

    mb = 1 << 20
    cpu = math.ceil(limits.timeout_s) + 1
    cap(resource.RLIMIT_AS, limits.memory_mb * mb)
    cap(resource.RLIMIT_CPU, cpu, cpu + 1)
    cap(resource.RLIMIT_FSIZE, limits.file_mb * mb)
    cap(resource.RLIMIT_NOFILE, limits.max_open_files)
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NPROC, limits.max_processes + already)


def tasks_of(uid: int) -> int:
    """Processes and threads owned by `uid` (what RLIMIT_NPROC counts)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                pass
    return count
