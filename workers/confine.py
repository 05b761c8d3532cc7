"""Confinement of the child process that runs an uploaded model (Linux).

Applied in the child between fork and exec (``preexec_fn``), so the model's
code starts already confined:

- resource limits: address space (memory), CPU seconds, file size, process count;
- a new, empty network namespace (no interface is up: no socket reaches anything),
  where the platform allows it (root, or CAP_SYS_ADMIN);
- Landlock (Linux >= 5.13): the file system is read-only except the job's own
  folder, and only the paths Python and the engine need are readable at all;
  from Landlock ABI 4 on, TCP bind and connect are refused too, so even without
  a network namespace no TCP socket gets anywhere;
- no new privileges, and death with the parent.

What applies on this machine is reported by :func:`capabilities`.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import resource
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNET = 0x40000000
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

# Landlock file-system rights, by the ABI version that introduced them.
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_READ = _EXECUTE | _READ_FILE | _READ_DIR
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1

#: System paths the interpreter, its shared libraries and the engine read. Not the rest of
#: /etc, and of /proc only the child's own entries: other processes' environments (where
#: the worker's credentials live) stay unreadable.
SYSTEM_READ_PATHS = ("/usr", "/lib", "/lib64", "/bin", "/sys", "/etc/ld.so.cache",
                     "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
                     "/proc/self", "/proc/thread-self", "/proc/cpuinfo", "/proc/meminfo",
                     "/proc/stat")
#: Devices the child may use: the harmless ones, and the GPUs.
DEVICE_PATHS = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/shm")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@dataclass(frozen=True)
class Limits:
    """Resource limits of one child; None leaves a limit as it is.

    memory_bytes : address-space limit (RLIMIT_AS). Not set on CUDA workers, whose
        driver reserves far more address space than it uses.
    cpu_seconds : CPU time (RLIMIT_CPU): SIGXCPU, then SIGKILL one second later.
    file_bytes : largest file the child may write (RLIMIT_FSIZE).
    processes : processes of the user (RLIMIT_NPROC; not enforced for root).
    """

    memory_bytes: int | None = None
    cpu_seconds: int | None = None
    file_bytes: int | None = 4 * 1024**3
    processes: int | None = 512


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (or it is disabled)."""
    version = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                            ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return max(0, int(version))


def can_unshare_network() -> bool:
    """Whether this process may create a network namespace (tried in a throwaway child)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0 if _libc.unshare(CLONE_NEWNET) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def capabilities() -> dict[str, object]:
    abi = landlock_abi()
    return {"landlock_abi": abi, "filesystem": abi >= 1, "tcp_blocked": abi >= 4,
            "network_namespace": can_unshare_network()}


def python_read_paths() -> list[str]:
    """The interpreter's prefixes and the folders of the packages the child imports."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             str(Path(sys.executable).resolve().parent)}
    for package in ("layerlens", "workers"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            paths.add(str(Path(spec.origin).resolve().parent))
    return sorted(paths)


def _set_limits(limits: Limits) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for kind, value in ((resource.RLIMIT_AS, limits.memory_bytes),
                        (resource.RLIMIT_FSIZE, limits.file_bytes),
                        (resource.RLIMIT_NPROC, limits.processes)):
        if value is not None:
            resource.setrlimit(kind, (value, value))
    if limits.cpu_seconds is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))


def _landlock(abi: int, readable: Sequence[str], writable: Sequence[str]) -> None:
    fs_rights = _FS_RIGHTS_BY_ABI[max(k for k in _FS_RIGHTS_BY_ABI if k <= abi)]
    attr = _RulesetAttr(fs_rights, (_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0)
    size = ctypes.sizeof(attr) if abi >= 4 else ctypes.sizeof(ctypes.c_uint64)
    ruleset = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr),
                            ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        for paths, rights in ((readable, _READ), (writable, fs_rights)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue  # absent on this system
                try:
                    is_dir = os.path.isdir(path)
                    allowed = rights if is_dir else rights & (_EXECUTE | _WRITE_FILE |
                                                              _READ_FILE | (1 << 14) | (1 << 15))
                    rule = _PathBeneathAttr(allowed & fs_rights, fd)
                    if _libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset,
                                     ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                                     ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                        raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
                finally:
                    os.close(fd)
        if _libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def preexec(limits: Limits, writable: Sequence[str], *, network: bool = False,
            extra_readable: Sequence[str] = ()) -> Callable[[], None]:
    """The ``preexec_fn`` that confines a child; paths are resolved here, in the parent."""
    abi = landlock_abi()
    readable = [*SYSTEM_READ_PATHS, *python_read_paths(), *extra_readable]
    gpus = sorted(str(p) for p in Path("/dev").glob("nvidia*"))
    writable = [*writable, *DEVICE_PATHS, *gpus]

    def confine() -> None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        _set_limits(limits)
        if not network:
            _libc.unshare(CLONE_NEWNET)  # may be refused (no CAP_SYS_ADMIN): Landlock still
            #                              refuses TCP from ABI 4 on
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if abi >= 1:
            _landlock(abi, readable, writable)

    return confine
