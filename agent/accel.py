"""Optional native builds of the per-packet modules (mypyc), used only while they match the sources.

Replay spends nearly all its time in the Python interpreter; compiling the
modules on the per-packet path with mypyc (part of mypy, from these same
annotated sources) makes it about 20% faster.  Set-up builds them into
`<venv>/pktbeat-accel/` (`scripts/accel.py build`).  At import,
`install()` checks a stamp: the hash of every compiled module's source and
the interpreter version.  Any difference (a source edited since the build,
another Python) and the plain Python modules are used, so a stale build can
never run.  PKTBEAT_PURE_PYTHON=1 turns the native modules off.

This module runs at every start: it imports only the standard library and
never raises.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

# The per-packet path, in import order of use.  Not compiled: modules defining dataclasses that
# extend a dataclass of an uncompiled module (the protocols' *Config), which mypyc refuses.  A
# compiled module finds files beside the package from `agent.__file__`, never its own `__file__`
# (its compiled copy lives in the build directory).
MODULES = (
    "agent.capture.pcapfile",
    "agent.capture.decode",
    "agent.capture.flowhash",
    "agent.capture.packet",
    "agent.capture.record",
    "agent.capture.ring",
    "agent.transport.tcp",
    "agent.transport.halfopen",
    "agent.transport.types",
    "agent.transport.dispatcher",
    "agent.protocols.iptext",
    "agent.protocols.http.url",
    "agent.protocols.http.messages",
    "agent.protocols.http.head",
    "agent.protocols.http.parser",
    "agent.protocols.http.fields",
    "agent.protocols.http.session",
    "agent.events.timefmt",
    "agent.events.community_id",
    "agent.events.direction",
    "agent.publisher.types",
    "agent.events.builder",
    "agent.runtime.replay",
    "agent.runtime.topstats",
    "agent.runtime.worksteps",
    "agent.protocols.correlation",
    "agent.protocols.transaction",
    "agent.protocols.buffer",
    "agent.protocols.cursor",
    "agent.protocols.dns.names",
    "agent.protocols.dns.domain",
    "agent.protocols.dns.rdata",
    "agent.protocols.dns.parser",
    "agent.protocols.dns.fields",
    "agent.protocols.dns.transactions",
    "agent.outputs.file",
)
STAMP_FILE = "stamp"
DISABLE_ENV = "PKTBEAT_PURE_PYTHON"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the directory holding `agent/`


def build_dir() -> Path:
    return Path(sys.prefix) / "pktbeat-accel"


def source_path(module: str) -> Path:
    return PACKAGE_ROOT.joinpath(*module.split(".")).with_suffix(".py")


def stamp() -> str:
    """What a build must have been made from: the interpreter and every compiled source."""
    digest = hashlib.sha256(f"{sys.version}|{sys.implementation.cache_tag}".encode())
    for module in MODULES:
        digest.update(module.encode() + b"\0")
        digest.update(source_path(module).read_bytes())
    return digest.hexdigest()


class _NativeFinder:
    """Finds the compiled modules (and mypyc's shared runtime module) in the build directory."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def _native_files(directory: Path) -> dict[str, Path]:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    files: dict[str, Path] = {}
    for file in directory.rglob(f"*{suffix}"):
        relative = file.relative_to(directory).as_posix()[: -len(suffix)]
        files[relative.replace("/", ".")] = file
    return files


def matching_build(directory: Path) -> dict[str, Path] | None:
    """The native files of a build in `directory` made from these very sources, else None."""
    stamp_file = directory / STAMP_FILE
    if not stamp_file.exists() or stamp_file.read_text().strip() != stamp():
        return None
    files = _native_files(directory)
    if not all(module in files for module in MODULES):
        return None
    return files


def install() -> bool:
    """Use the native modules when a build matching these sources exists; True if so."""
    if os.environ.get(DISABLE_ENV) or any(isinstance(f, _NativeFinder) for f in sys.meta_path):
        return False
    try:
        files = matching_build(build_dir())
        if files is None:
            return False
        sys.meta_path.insert(0, _NativeFinder(files))
        return True
    except Exception:  # never a reason not to start: the Python modules are always there
        return False


def active() -> list[str]:
    """The compiled modules actually loaded in this process."""
    loaded = []
    for module in MODULES:
        spec: Any = getattr(sys.modules.get(module), "__spec__", None)
        if spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            loaded.append(module)
    return loaded


def build() -> int:
    """Compile MODULES with mypyc in a scratch copy of the package, then install the results."""
    import shutil
    import subprocess
    import tempfile

    directory = build_dir()
    expected = stamp()
    with tempfile.TemporaryDirectory(prefix="pktbeat-accel-") as tmp:
        scratch = Path(tmp)
        shutil.copytree(PACKAGE_ROOT / "agent", scratch / "agent",
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        sources = [str(source_path(module).relative_to(PACKAGE_ROOT)) for module in MODULES]
        mypyc = Path(sys.executable).with_name("mypyc")
        result = subprocess.run([str(mypyc), *sources], cwd=scratch, capture_output=True, text=True)
        if result.returncode != 0:
            sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
            return 1
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        for file in scratch.rglob(f"*{suffix}"):
            if "build" in file.relative_to(scratch).parts:
                continue
            target = directory / file.relative_to(scratch)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)
        (directory / STAMP_FILE).write_text(expected + "\n")
    return 0


def main(args: list[str]) -> int:
    """`build`, or `check` (exit 0 when the build matches the sources): scripts/accel.py."""
    if args == ["build"]:
        return build()
    if args == ["check"]:
        return 0 if matching_build(build_dir()) is not None else 1
    sys.stderr.write("usage: scripts/accel.py build|check\n")
    return 2
