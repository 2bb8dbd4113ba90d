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


# The capabilities live capture needs (found by experiment on Linux 6.18, see README "Least privilege"),
# each with what it is for.  CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, as in the kernel.
REQUIRED_CAPS: tuple[tuple[int, str, str], ...] = (
    (CAP_BPF, "CAP_BPF", "create the BPF maps and ring buffers and load the program"),
    (CAP_PERFMON, "CAP_PERFMON", "let the verifier accept the program's pointer arithmetic on packet data"),
    (CAP_NET_ADMIN, "CAP_NET_ADMIN", "load a TC classifier and attach it to the interfaces"),
)
GRANT_HINT = ("AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN in the unit, or "
              "setpriv --ambient-caps +bpf,+perfmon,+net_admin")


def missing_caps(caps: int) -> list[tuple[str, str]]:
    """(name, purpose) of each needed capability absent from `caps`."""

    def has(cap: int) -> bool:
        return bool(caps >> cap & 1) or (cap != CAP_NET_ADMIN and bool(caps >> CAP_SYS_ADMIN & 1))

    return [(name, purpose) for cap, name, purpose in REQUIRED_CAPS if not has(cap)]


def check_privileges(euid: int | None = None, caps: int | None = None) -> None:
    euid = os.geteuid() if euid is None else euid
    caps = effective_caps() if caps is None else caps
    missing = missing_caps(caps)
    if not missing:
        return
    who = "root" if euid == 0 else f"uid {euid}"
    if len(missing) == len(REQUIRED_CAPS):
        raise PreflightError(Missing.PRIVILEGES,
                             f"live capture needs root, or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, to load the eBPF "
                             f"program and attach it with TC; running as {who} without them: use sudo, grant them "
                             f"({GRANT_HINT}), or read a file with -I")
    names = " and ".join(name for name, _ in missing)
    purposes = "; ".join(f"{name} to {purpose}" for name, purpose in missing)
    raise PreflightError(Missing.PRIVILEGES,
                         f"live capture needs {names}, which {who} lacks ({purposes}): grant "
                         f"{'it' if len(missing) == 1 else 'them'} ({GRANT_HINT}), or run as root")


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
