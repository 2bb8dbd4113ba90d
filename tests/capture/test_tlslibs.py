"""Finding TLS library files: the usual directories under a root, processes' maps (through /proc/PID/root),
one identity per file however many paths reach it.  A fake /proc tree stands in for the real one."""

from __future__ import annotations

import os
from pathlib import Path

from agent.capture.tlslibs import LibraryFinder


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """A host library, a "container" root with its own copy, and /proc entries for two processes."""
    host_lib = tmp_path / "host" / "usr" / "lib" / "x86_64-linux-gnu"
    host_lib.mkdir(parents=True)
    (host_lib / "libssl.so.3").write_bytes(b"host")
    (host_lib / "libssl3.so").write_bytes(b"nss")  # NSS: another library, not wanted
    proc = tmp_path / "proc"
    for pid, root in ((10, tmp_path / "host"), (20, tmp_path / "container")):
        (proc / str(pid)).mkdir(parents=True)
        os.symlink(root, proc / str(pid) / "root")
    box = tmp_path / "container" / "opt" / "app"
    box.mkdir(parents=True)
    (box / "libssl.so.3").write_bytes(b"bundled")
    (proc / "10" / "maps").write_text(
        "7f00-7f10 r-xp 00000000 fe:00 1 /usr/lib/x86_64-linux-gnu/libssl.so.3\n"
        "7f10-7f20 r--p 00000000 fe:00 1 /usr/lib/x86_64-linux-gnu/libssl.so.3\n"
        "7f20-7f30 r-xp 00000000 fe:00 2 /usr/lib/x86_64-linux-gnu/libssl3.so\n"
        "7f30-7f40 rw-p 00000000 00:00 0 [heap]\n")
    (proc / "20" / "maps").write_text("7f00-7f10 r-xp 00000000 fe:00 3 /opt/app/libssl.so.3\n"
                                      "7f10-7f20 r-xp 00000000 fe:00 4 /opt/app/libcustom.so (deleted)\n")
    return tmp_path / "host", proc


def test_maps_give_each_file_once_through_the_process_root(tmp_path: Path) -> None:
    host, proc = _tree(tmp_path)
    finder = LibraryFinder(proc=str(proc))
    in_host = list(finder.in_process(10))
    assert [f.shown for f in in_host] == ["/usr/lib/x86_64-linux-gnu/libssl.so.3 (pid 10)"]
    assert in_host[0].identity == (os.stat(host / "usr/lib/x86_64-linux-gnu/libssl.so.3").st_dev,
                                   os.stat(host / "usr/lib/x86_64-linux-gnu/libssl.so.3").st_ino)
    bundled = list(finder.in_process(20))
    assert [f.path for f in bundled] == [f"{proc}/20/root/opt/app/libssl.so.3"]
    assert bundled[0].identity != in_host[0].identity
    assert list(finder.in_process(99)) == []  # gone
    assert sorted(finder.all_pids()) == [10, 20]


def test_configured_paths_and_new_programs(tmp_path: Path) -> None:
    _host, proc = _tree(tmp_path)
    finder = LibraryFinder(paths=("/opt/app/libcustom.so",), proc=str(proc))
    (tmp_path / "container" / "opt" / "app" / "libcustom.so").write_bytes(b"custom")
    (proc / "20" / "map_files").mkdir()
    os.symlink(tmp_path / "container" / "opt" / "app" / "libcustom.so", proc / "20" / "map_files" / "7f10-7f20")
    # The deleted (upgraded) library is reached through map_files.
    assert [f.path for f in finder.in_process(20)] == [f"{proc}/20/root/opt/app/libssl.so.3",
                                                        f"{proc}/20/map_files/7f10-7f20"]
    found = list(finder.of_new_program(10))
    assert [f.shown for f in found] == ["pid 10: /usr/lib/x86_64-linux-gnu/libssl.so.3"]
    assert [f.path for f in finder.under_root(str(tmp_path / "container"))] == [
        str(tmp_path / "container" / "opt/app/libcustom.so")]
