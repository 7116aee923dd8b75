"""Linux primitives for the code sandbox through ctypes: namespaces, mounts, prctl, seccomp.

Each function raises OSError (with the errno and what was attempted) when the kernel refuses;
the sandbox decides what that means (rewards/sandbox.py). Linux only; nothing here runs at
import time except loading libc.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
_CLONE_NEW_ANY = 0x7E020080  # every CLONE_NEW* flag, CLONE_NEWTIME and CLONE_NEWCGROUP too

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
_MOUNT_OPTION_FLAGS = {
    "ro": MS_RDONLY,
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
}

PR_SET_PDEATHSIG, PR_SET_SECCOMP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 22, 36, 38


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    def arg(text: str | None):
        return None if text is None else text.encode()

    result = _libc.mount(
        arg(source), arg(target), arg(fstype), ctypes.c_ulong(flags), arg(data or None)
    )
    _check(result, f"mount {fstype or source or ''} on {target}")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option}, {value})")


def map_own_ids(uid: int, gid: int) -> None:
    """In a new user namespace: map our uid and gid to themselves (the one mapping an
    unprivileged process may write)."""
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{uid} {uid} 1"),
        ("gid_map", f"{gid} {gid} 1"),
    ):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def remount_all_readonly() -> tuple[int, int]:
    """Bind-remount every mount of this (private) mount namespace read-only, keeping the flags
    that a less privileged namespace may not drop. Returns (remounted, failed)."""
    with open("/proc/self/mountinfo") as f:
        entries = [line.split() for line in f]
    done = failed = 0
    for fields in sorted(entries, key=lambda fields: fields[4].count("/")):
        target = fields[4].replace("\\040", " ")
        options = fields[5].split(",")
        if "ro" in options:
            continue
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        for option in options:
            flags |= _MOUNT_OPTION_FLAGS.get(option, 0)
        try:
            mount(None, target, None, flags)
            done += 1
        except OSError:
            failed += 1  # e.g. a mount hidden under another one; counted, reported by the probe
    return done, failed


# seccomp: a BPF filter that fails chosen syscalls with EPERM.
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# Sockets (the network), other processes' memory and tracing, io_uring (it can open sockets
# without socket(2)), namespaces and mounts, kernel keyrings, BPF, perf, modules, kexec.
_DENIED = {
    "x86_64": dict(
        socket=41, ptrace=101, process_vm_readv=310, process_vm_writev=311,
        io_uring_setup=425, io_uring_enter=426, io_uring_register=427, unshare=272, setns=308,
        mount=165, umount2=166, pivot_root=155, chroot=161, open_tree=428, move_mount=429,
        fsopen=430, fsconfig=431, fsmount=432, fspick=433, mount_setattr=442, bpf=321,
        perf_event_open=298, userfaultfd=323, keyctl=250, add_key=248, request_key=249,
        kexec_load=246, init_module=175, finit_module=313, open_by_handle_at=304,
    ),
    "aarch64": dict(
        socket=198, ptrace=117, process_vm_readv=270, process_vm_writev=271,
        io_uring_setup=425, io_uring_enter=426, io_uring_register=427, unshare=97, setns=268,
        mount=40, umount2=39, pivot_root=41, chroot=51, open_tree=428, move_mount=429,
        fsopen=430, fsconfig=431, fsmount=432, fspick=433, mount_setattr=442, bpf=280,
        perf_event_open=241, userfaultfd=282, keyctl=219, add_key=217, request_key=218,
        kexec_load=104, init_module=105, finit_module=273, open_by_handle_at=265,
    ),
}  # fmt: skip
_CLONE = {"x86_64": 56, "aarch64": 220}
_KILL = {"x86_64": 62, "aarch64": 129}
_CLONE3 = 435
_X32_BIT = 0x40000000

_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_KILL = 0x7FFF0000, 0x80000000
_EPERM, _ENOSYS = 1, 38


def seccomp_supported() -> bool:
    return platform.machine() in _AUDIT_ARCH


def _filter(arch: str) -> list[tuple[int, int, int, int]]:
    """(code, jt, jf, k) instructions; jumps are relative to the next instruction."""
    deny_errno = 0x00050000 | _EPERM
    denied = sorted(_DENIED[arch].values())
    prog = [(_LD_W_ABS, 0, 0, 4), (_JEQ, 1, 0, _AUDIT_ARCH[arch]), (_RET, 0, 0, _RET_KILL)]
    prog.append((_LD_W_ABS, 0, 0, 0))  # the syscall number
    if arch == "x86_64":  # x32 syscalls share the arch value; refuse them all
        prog.append((_JGE, 0, 1, _X32_BIT))
        prog.append((_RET, 0, 0, deny_errno))
    # clone3 takes its flags in memory, out of the filter's sight: ENOSYS makes libc use clone.
    prog += [(_JEQ, 0, 1, _CLONE3), (_RET, 0, 0, 0x00050000 | _ENOSYS)]
    # clone with any CLONE_NEW* flag, and kill(-1, ...), which signals every process the
    # caller may signal (outside namespaces: all of the user's). Both test the low word of the
    # first argument.
    prog += [(_JEQ, 0, 3, _CLONE[arch]), (_LD_W_ABS, 0, 0, 16), (_JSET, 0, 1, _CLONE_NEW_ANY)]
    prog += [(_RET, 0, 0, deny_errno), (_LD_W_ABS, 0, 0, 0)]
    prog += [(_JEQ, 0, 3, _KILL[arch]), (_LD_W_ABS, 0, 0, 16), (_JEQ, 0, 1, 0xFFFFFFFF)]
    prog += [(_RET, 0, 0, deny_errno), (_LD_W_ABS, 0, 0, 0)]
    for i, nr in enumerate(denied):
        prog.append((_JEQ, len(denied) - i, 0, nr))  # to the deny return after the allow
    prog += [(_RET, 0, 0, _RET_ALLOW), (_RET, 0, 0, deny_errno)]
    return prog


def install_seccomp() -> None:
    """Deny the syscalls in _DENIED (EPERM) for this process and every descendant, for good.
    Sets no_new_privs first, as an unprivileged filter requires."""
    arch = platform.machine()
    if arch not in _AUDIT_ARCH:
        raise OSError(0, f"seccomp: no syscall table for {arch}")
    prog = _filter(arch)
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buffer = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(buffer))
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    result = _libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(2), ctypes.byref(fprog), 0, 0)
    _check(result, "seccomp filter")
