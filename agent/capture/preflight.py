"""Checks before live capture: privileges, BCC, kernel headers, BPF ring buffers.

Each failure is one actionable line and a distinct reason, which the runner
turns into a distinct exit code, instead of a BCC traceback.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
import platform
from collections.abc import Callable, Mapping
from pathlib import Path

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

BPF_MAP_CREATE = 0
BPF_MAP_TYPE_RINGBUF = 27
SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351, "riscv64": 280}


class Missing(enum.Enum):
    PRIVILEGES = "privileges"
    BPF = "bpf"
    HEADERS = "headers"


class PreflightError(Exception):
    def __init__(self, missing: Missing, message: str) -> None:
        super().__init__(message)
        self.missing = missing
        self.message = message


def effective_caps(status: Path = Path("/proc/self/status")) -> int:
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def check_privileges(euid: int | None = None, caps: int | None = None) -> None:
    euid = os.geteuid() if euid is None else euid
    caps = effective_caps() if caps is None else caps

    def has(cap: int) -> bool:
        return bool(caps >> cap & 1)

    if has(CAP_NET_ADMIN) and (has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON))):
        return
    who = "root" if euid == 0 else f"uid {euid}"
    raise PreflightError(Missing.PRIVILEGES,
                         f"live capture needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN) to load the eBPF "
                         f"program and attach it with TC; running as {who} without them: use sudo, or read a "
                         f"file with -I")


def check_bcc(importer: Callable[[str], object] = __import__) -> None:
    try:
        importer("bcc")
    except ImportError:
        raise PreflightError(Missing.BPF,
                             "BCC's Python module is missing: apt-get install python3-bpfcc, and run pktbeat from "
                             "a venv made with --system-site-packages (scripts/setup.sh does both)") from None


def headers_dir(release: str, modules: Path = Path("/lib/modules"),
                env: Mapping[str, str] | None = None) -> Path | None:
    """Where BCC will find kernel headers, or None (BCC_KERNEL_SOURCE wins, as in BCC)."""
    env = os.environ if env is None else env
    override = env.get("BCC_KERNEL_SOURCE")
    candidates = [Path(override)] if override else [modules / release / "build", modules / release / "source"]
    for path in candidates:
        if (path / "include").is_dir():
            return path
    return None


def check_headers(release: str | None = None, modules: Path = Path("/lib/modules"),
                  env: Mapping[str, str] | None = None, kheaders: Path = Path("/sys/kernel/kheaders.tar.xz")) -> None:
    release = release or os.uname().release
    env = os.environ if env is None else env
    if headers_dir(release, modules, env) is not None:
        return
    if not env.get("BCC_KERNEL_SOURCE") and kheaders.exists():
        return  # CONFIG_IKHEADERS: BCC unpacks the kernel's own headers
    where = env.get("BCC_KERNEL_SOURCE") or str(modules / release / "build")
    raise PreflightError(Missing.HEADERS,
                         f"kernel headers for {release} are missing ({where} has no include/): run "
                         f"scripts/setup.sh, or install linux-headers-{release} (or a close version and link "
                         f"{modules / release}/build to it)")


def check_ringbuf(machine: str | None = None) -> None:
    """Create (and close) a tiny BPF ring buffer: proves the bpf() syscall and ring buffers (Linux 5.8+)."""
    number = SYS_BPF.get(machine or platform.machine())
    if number is None:
        return  # unknown architecture: let the load report it
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 32)()
    attr[0] = BPF_MAP_TYPE_RINGBUF
    attr[1] = 0  # key size
    attr[2] = 0  # value size
    attr[3] = 4096 * 4  # max entries: the ring size in bytes, a power-of-two number of pages
    fd = libc.syscall(number, BPF_MAP_CREATE, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd >= 0:
        os.close(fd)
        return
    err = ctypes.get_errno()
    if err == errno.ENOSYS:
        raise PreflightError(Missing.BPF, "this kernel has no bpf() system call (CONFIG_BPF_SYSCALL is off): "
                                          "live capture needs a kernel with eBPF; read a file with -I instead")
    if err == errno.EPERM:
        raise PreflightError(Missing.PRIVILEGES, "the kernel refused to create a BPF map (EPERM): run as root, or "
                                                 "check kernel.unprivileged_bpf_disabled and the lockdown mode")
    if err == errno.EINVAL:
        raise PreflightError(Missing.BPF, f"this kernel ({os.uname().release}) has no BPF ring buffers: "
                                          "live capture needs Linux 5.8 or later")
    raise PreflightError(Missing.BPF, f"creating a BPF ring buffer failed: {os.strerror(err)}")


def run_all() -> None:
    """Every check, in the order a user is most likely to need them."""
    check_privileges()
    check_bcc()
    check_headers()
    check_ringbuf()
