"""A power-loss simulator: a FUSE file system that forgets every write that was not made durable.

``kill -9`` proves little about power loss: after a process dies the kernel still writes its page
cache out, so a missing ``fsync`` never shows. This file system keeps, in memory, every file's
current contents and the contents its last ``fsync``/``fdatasync`` made durable, and every
directory's current entries and the entries its last ``fsync`` made durable. A *power cut*
freezes the durable picture: from then on every operation fails with ``EIO`` (the machine is
off), and :meth:`PowerLossFS.image` writes what a restart would find into a real directory.

The model is strict POSIX, as a careful program must assume:

- ``fsync`` of a file makes its data (and size) durable, not its name;
- ``fsync`` of a directory makes its current entries durable (creates, renames, unlinks), not
  the data of the files they name;
- a *torn* cut additionally lets a random subset of each file's unsynced 4 KiB pages through
  (a disk that wrote some of its queue before the power went);
- there is no reordering inside a synced file, metadata (mode, times) is taken as current, and
  writes through a shared ``mmap`` are seen only when the kernel writes the pages back (the
  ``-shm`` index SQLite rebuilds; nothing durable is kept that way).

A cut is triggered "before the N-th mutating operation" or "before the K-th fsync" (file or
directory) of the armed round, so a campaign can first count a scenario's operations and then
aim at every window between them. A clean unmount loses nothing (it is all in memory; the
campaign reads rounds through :meth:`PowerLossFS.image`).

Test-only code: run as ``python -m tests.faults.powerfs MOUNTPOINT SOCKET`` (as root, with
``/dev/fuse``, Debian's ``fuse3`` and the ``mfusepy`` bindings); :class:`PowerFS` starts it,
mounts it and drives it over a Unix socket.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import random
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any, TypeVar

PAGE = 4096
AUTHKEY = b"dapi-config power-loss simulator"
ROOT = Path(__file__).resolve().parents[2]


def unavailable_reason() -> str | None:
    """Why this machine cannot mount the simulator, or None when it can."""
    if sys.platform != "linux":
        return "FUSE mounts need Linux"
    if os.geteuid() != 0:
        return "mounting FUSE here needs root"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing (Debian package fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: libfuse3 itself is missing
        return f"the mfusepy bindings cannot load ({exc})"
    return None


@dataclass
class _Node:
    ino: int
    is_dir: bool
    mode: int
    data: bytearray = field(default_factory=bytearray)
    synced: bytes = b""
    entries: dict[str, int] = field(default_factory=dict)
    synced_entries: dict[str, int] = field(default_factory=dict)
    mtime_ns: int = field(default_factory=time.time_ns)


@dataclass
class Trigger:
    """When the next cut falls (0 = never), and whether unsynced pages may get through."""

    at_op: int = 0
    at_fsync: int = 0
    torn_seed: int | None = None


@dataclass
class Stats:
    """What the armed round did: mutating operations, fsyncs, and whether the power went."""

    ops: int = 0
    fsyncs: int = 0
    file_fsyncs: int = 0
    dir_fsyncs: int = 0
    cut: bool = False


F = TypeVar("F", bound=Callable[..., Any])


def _powered(func: F) -> F:
    """After the cut every operation fails with EIO, as on a machine that is off."""

    @functools.wraps(func)
    def wrapper(self: PowerLossFS, *args: Any) -> Any:
        with self.lock:
            if self.stats.cut:
                raise _fuse_error(errno.EIO)
            return func(self, *args)

    return wrapper  # type: ignore[return-value]


def _fuse_error(code: int) -> OSError:
    from mfusepy import FuseOSError

    return FuseOSError(code)


class PowerLossFS:
    """The file system's model and its FUSE operations (path based, ``use_ino``)."""

    use_ns = True

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.nodes: dict[int, _Node] = {1: _Node(1, True, 0o755)}
        self.next_ino = 2
        self.handles: dict[int, int] = {}
        self.next_fh = 1
        self.trigger = Trigger()
        self.stats = Stats()
        self.crash: list[tuple[str, bytes | None, int]] | None = None
        self.cut_event = threading.Event()

    # -- the model ------------------------------------------------------------------------------

    def _new(self, is_dir: bool, mode: int) -> _Node:
        node = _Node(self.next_ino, is_dir, mode & 0o7777)
        self.nodes[node.ino] = node
        self.next_ino += 1
        return node

    def _walk(self, path: str) -> tuple[_Node, str, _Node | None]:
        """(parent, name, node or None) of ``path``, through the current entries."""
        parts = [p for p in path.split("/") if p]
        node = self.nodes[1]
        if not parts:
            return node, "", node
        for part in parts[:-1]:
            ino = node.entries.get(part)
            if ino is None:
                raise _fuse_error(errno.ENOENT)
            node = self.nodes[ino]
            if not node.is_dir:
                raise _fuse_error(errno.ENOTDIR)
        ino = node.entries.get(parts[-1])
        return node, parts[-1], (self.nodes[ino] if ino is not None else None)

    def _get(self, path: str | None, fh: int | None = None) -> _Node:
        if fh is not None and fh in self.handles:
            return self.nodes[self.handles[fh]]
        if path is None:
            raise _fuse_error(errno.EBADF)
        _, _, node = self._walk(path)
        if node is None:
            raise _fuse_error(errno.ENOENT)
        return node

    def _mutation(self) -> None:
        """Count one mutating operation; the power goes *before* the armed one."""
        self.stats.ops += 1
        if self.trigger.at_op and self.stats.ops >= self.trigger.at_op:
            self._cut()

    def _sync_point(self, kind: str) -> None:
        self.stats.fsyncs += 1
        if self.trigger.at_fsync and self.stats.fsyncs >= self.trigger.at_fsync:
            self._cut()
        if kind == "file":
            self.stats.file_fsyncs += 1
        else:
            self.stats.dir_fsyncs += 1

    def _cut(self) -> None:
        self.crash = self._durable_picture(self.trigger.torn_seed)
        self.stats.cut = True
        self.cut_event.set()
        raise _fuse_error(errno.EIO)

    def _durable_picture(self, torn_seed: int | None) -> list[tuple[str, bytes | None, int]]:
        """Every durable path with its durable contents (None for a directory) and mode."""
        rng = random.Random(torn_seed) if torn_seed is not None else None
        out: list[tuple[str, bytes | None, int]] = []

        def visit(node: _Node, prefix: str) -> None:
            for name, ino in sorted(node.synced_entries.items()):
                child = self.nodes[ino]
                path = f"{prefix}/{name}" if prefix else name
                if child.is_dir:
                    out.append((path, None, child.mode))
                    visit(child, path)
                else:
                    out.append((path, _torn(child, rng) if rng else child.synced, child.mode))

        visit(self.nodes[1], "")
        return out

    def _current_picture(self) -> list[tuple[str, bytes | None, int]]:
        out: list[tuple[str, bytes | None, int]] = []

        def visit(node: _Node, prefix: str) -> None:
            for name, ino in sorted(node.entries.items()):
                child = self.nodes[ino]
                path = f"{prefix}/{name}" if prefix else name
                out.append((path, None if child.is_dir else bytes(child.data), child.mode))
                if child.is_dir:
                    visit(child, path)

        visit(self.nodes[1], "")
        return out

    # -- control (the harness, not the kernel) ---------------------------------------------------

    def arm(self, trigger: Trigger) -> None:
        with self.lock:
            self.trigger = trigger
            self.stats = Stats()
            self.crash = None
            self.cut_event.clear()

    def add_round(self, name: str, source: str | None) -> None:
        """A fresh durable top-level folder ``name``, filled (durably) from ``source``."""
        with self.lock:
            root = self.nodes[1]
            if name in root.entries:
                raise FileExistsError(name)
            top = self._new(True, 0o755)
            root.entries[name] = root.synced_entries[name] = top.ino
            if source is None:
                return
            for dirpath, dirnames, filenames in os.walk(source):
                rel = os.path.relpath(dirpath, source)
                parent = top if rel == "." else self._get(f"/{name}/{rel}")
                for d in dirnames:
                    sub = self._new(True, os.stat(os.path.join(dirpath, d)).st_mode)
                    parent.entries[d] = parent.synced_entries[d] = sub.ino
                for f in filenames:
                    full = os.path.join(dirpath, f)
                    node = self._new(False, os.stat(full).st_mode)
                    with open(full, "rb") as handle:
                        node.data = bytearray(handle.read())
                    node.synced = bytes(node.data)
                    parent.entries[f] = parent.synced_entries[f] = node.ino

    def drop_round(self, name: str) -> None:
        with self.lock:
            root = self.nodes[1]
            root.entries.pop(name, None)
            root.synced_entries.pop(name, None)
            reachable = {1}
            stack = [1]
            while stack:
                node = self.nodes[stack.pop()]
                for ino in (*node.entries.values(), *node.synced_entries.values()):
                    if ino not in reachable:
                        reachable.add(ino)
                        stack.append(ino)
            reachable.update(self.handles.values())
            self.nodes = {ino: n for ino, n in self.nodes.items() if ino in reachable}

    def image(self, name: str, dest: str) -> bool:
        """Write round ``name`` as a restart would find it into ``dest``; True if it was cut."""
        with self.lock:
            cut = self.stats.cut
            picture = self.crash if cut and self.crash is not None else self._current_picture()
        prefix = name + "/"
        for path, data, mode in picture:
            if not path.startswith(prefix):
                continue
            target = os.path.join(dest, path[len(prefix) :])
            if data is None:
                os.makedirs(target, exist_ok=True)
                os.chmod(target, mode & 0o7777 or 0o755)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as handle:
                    handle.write(data)
                os.chmod(target, mode & 0o7777)
        return cut

    def control(self, request: tuple[Any, ...]) -> Any:
        command, *args = request
        if command == "round":
            return self.add_round(*args)
        if command == "drop":
            return self.drop_round(*args)
        if command == "arm":
            return self.arm(Trigger(*args))
        if command == "cut":
            with self.lock:
                if not self.stats.cut:
                    with contextlib.suppress(OSError):
                        self._cut()
            return None
        if command == "wait_cut":
            return self.cut_event.wait(args[0])
        if command == "stats":
            with self.lock:
                return dict(vars(self.stats))  # plain data: the daemon's classes live in __main__
        if command == "image":
            return self.image(*args)
        raise ValueError(f"unknown command {command!r}")

    # -- FUSE operations ---------------------------------------------------------------------------

    @_powered
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        node = self._get(path, fh)
        kind = stat.S_IFDIR if node.is_dir else stat.S_IFREG
        size = 4096 if node.is_dir else len(node.data)
        return {
            "st_ino": node.ino,
            "st_mode": kind | node.mode,
            "st_nlink": 2 if node.is_dir else 1,
            "st_size": size,
            "st_blocks": (size + 511) // 512,
            "st_blksize": PAGE,
            "st_uid": os.geteuid(),
            "st_gid": os.getegid(),
            "st_atime": node.mtime_ns,
            "st_mtime": node.mtime_ns,
            "st_ctime": node.mtime_ns,
        }

    @_powered
    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        # With use_ino every entry needs its inode number: readdir(3) hides entries with 0.
        node = self._get(path)
        out = [(".", {"st_ino": node.ino}, 0), ("..", {"st_ino": 1}, 0)]
        for name, ino in node.entries.items():
            child = self.nodes[ino]
            kind = stat.S_IFDIR if child.is_dir else stat.S_IFREG
            out.append((name, {"st_ino": ino, "st_mode": kind | child.mode}, 0))
        return out

    @_powered
    def opendir(self, path: str) -> int:
        return self._open_handle(self._get(path))

    def releasedir(self, path: str | None, fh: int) -> int:
        with self.lock:
            self.handles.pop(fh, None)
        return 0

    @_powered
    def mkdir(self, path: str, mode: int) -> int:
        self._mutation()
        parent, name, existing = self._walk(path)
        if existing is not None:
            raise _fuse_error(errno.EEXIST)
        parent.entries[name] = self._new(True, mode).ino
        return 0

    @_powered
    def rmdir(self, path: str) -> int:
        self._mutation()
        parent, name, node = self._walk(path)
        if node is None:
            raise _fuse_error(errno.ENOENT)
        if node.entries:
            raise _fuse_error(errno.ENOTEMPTY)
        del parent.entries[name]
        return 0

    def _open_handle(self, node: _Node) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = node.ino
        return fh

    @_powered
    def create(self, path: str, mode: int, flags: int = 0) -> int:
        self._mutation()
        parent, name, node = self._walk(path)
        if node is None:
            node = self._new(False, mode)
            parent.entries[name] = node.ino
        return self._open_handle(node)

    @_powered
    def open(self, path: str, flags: int) -> int:
        node = self._get(path)
        if flags & os.O_TRUNC and node.data:
            self._mutation()
            node.data = bytearray()
        return self._open_handle(node)

    def release(self, path: str | None, fh: int) -> int:
        with self.lock:
            self.handles.pop(fh, None)
        return 0

    def flush(self, path: str | None, fh: int) -> int:
        return 0

    @_powered
    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return bytes(self._get(path, fh).data[offset : offset + size])

    @_powered
    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        self._mutation()
        node = self._get(path, fh)
        if offset > len(node.data):
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset : offset + len(data)] = data
        node.mtime_ns = time.time_ns()
        return len(data)

    @_powered
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        self._mutation()
        node = self._get(path, fh)
        if length < len(node.data):
            del node.data[length:]
        else:
            node.data.extend(bytes(length - len(node.data)))
        node.mtime_ns = time.time_ns()
        return 0

    @_powered
    def unlink(self, path: str) -> int:
        self._mutation()
        parent, name, node = self._walk(path)
        if node is None:
            raise _fuse_error(errno.ENOENT)
        del parent.entries[name]
        return 0

    @_powered
    def rename(self, old: str, new: str) -> int:
        self._mutation()
        old_parent, old_name, node = self._walk(old)
        if node is None:
            raise _fuse_error(errno.ENOENT)
        new_parent, new_name, target = self._walk(new)
        if target is not None and target.is_dir and target.entries:
            raise _fuse_error(errno.ENOTEMPTY)
        del old_parent.entries[old_name]
        new_parent.entries[new_name] = node.ino
        return 0

    @_powered
    def link(self, target: str, source: str) -> int:
        """``ln source target``: a second name for the same file (made durable like any entry)."""
        self._mutation()
        node = self._get(source)
        parent, name, existing = self._walk(target)
        if existing is not None:
            raise _fuse_error(errno.EEXIST)
        parent.entries[name] = node.ino
        return 0

    @_powered
    def chmod(self, path: str | None, mode: int) -> int:
        self._get(path).mode = mode & 0o7777
        return 0

    @_powered
    def chown(self, path: str | None, uid: int, gid: int) -> int:
        return 0

    @_powered
    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        self._get(path).mtime_ns = times[1] if times else time.time_ns()
        return 0

    @_powered
    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        self._sync_point("file")
        node = self._get(path, fh)
        node.synced = bytes(node.data)
        return 0

    @_powered
    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        self._sync_point("dir")
        node = self._get(path, fh)
        node.synced_entries = dict(node.entries)
        return 0

    @_powered
    def statfs(self, path: str) -> dict[str, int]:
        blocks = 1 << 24  # 64 GiB of 4 KiB blocks: never "disk full" (that is another test)
        return {
            "f_bsize": PAGE,
            "f_frsize": PAGE,
            "f_blocks": blocks,
            "f_bfree": blocks,
            "f_bavail": blocks,
            "f_files": 1 << 20,
            "f_ffree": 1 << 20,
            "f_namemax": 255,
        }

    @_powered
    def access(self, path: str, amode: int) -> int:
        self._get(path)
        return 0


def _torn(node: _Node, rng: random.Random) -> bytes:
    """The durable contents plus a random subset of the unsynced pages (and maybe the new size)."""
    data, synced = bytes(node.data), node.synced
    if data == synced:
        return synced
    length = rng.choice((len(data), len(synced)))
    out = bytearray(synced[:length].ljust(length, b"\0"))
    for start in range(0, length, PAGE):
        page = data[start : start + PAGE]
        if page != synced[start : start + PAGE] and rng.random() < 0.5:
            end = min(start + PAGE, length)
            out[start:end] = data[start:end].ljust(end - start, b"\0")
    return bytes(out)


# -- the daemon ------------------------------------------------------------------------------------


def _serve_control(fs: PowerLossFS, listener: Listener) -> None:
    while True:
        try:
            conn = listener.accept()
        except OSError:
            return
        with conn:
            while True:
                try:
                    request = conn.recv()
                except (EOFError, OSError):
                    break
                try:
                    conn.send(("ok", fs.control(request)))
                except Exception as exc:  # the harness sees the error, the daemon lives on
                    conn.send(("error", f"{type(exc).__name__}: {exc}"))


def serve(mountpoint: str, socket_path: str) -> None:
    """Mount the simulator at ``mountpoint`` (foreground, one thread) and obey ``socket_path``."""
    import mfusepy

    class _Fuse(mfusepy.FUSE):  # type: ignore[misc]
        # mfusepy drops the handle of a libfuse 3 truncate; an ftruncate needs it (hard_remove
        # leaves an open, unlinked file without a path).
        def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
            if fip:
                return int(self.ftruncate(path, length, fip))
            return int(super().truncate_fuse_3(path, length, fip))

    fs = PowerLossFS()
    listener = Listener(socket_path, family="AF_UNIX", authkey=AUTHKEY)
    threading.Thread(target=_serve_control, args=(fs, listener), daemon=True).start()
    operations = _Operations(fs)
    _Fuse(
        operations,
        mountpoint,
        foreground=True,
        nothreads=True,
        use_ino=True,
        hard_remove=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
        fsname="powerloss",
    )
    listener.close()


class _Operations:
    """mfusepy looks operations up by name on this object; it forwards to the model."""

    use_ns = True

    def __init__(self, fs: PowerLossFS) -> None:
        self._fs = fs

    def __getattr__(self, name: str) -> Any:
        if name in _OPERATIONS:
            return getattr(self._fs, name)
        raise AttributeError(name)


_OPERATIONS = frozenset({
    "getattr", "readdir", "opendir", "releasedir", "mkdir", "rmdir", "create", "open",
    "release", "flush", "read", "write", "truncate", "unlink", "rename", "link", "chmod",
    "chown", "utimens", "fsync", "fsyncdir", "statfs", "access",
})  # fmt: skip


# -- the harness's handle --------------------------------------------------------------------------


class PowerFS:
    """The simulator mounted at ``mountpoint`` by a daemon process, driven over a Unix socket."""

    def __init__(self, workdir: Path) -> None:
        self.mountpoint = workdir / "mnt"
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        socket_path = workdir / "control.sock"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self._log = open(workdir / "powerfs.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.powerfs", str(self.mountpoint), str(socket_path)],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._conn: Connection | None = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if socket_path.exists() and os.path.ismount(self.mountpoint):
                self._conn = Client(str(socket_path), family="AF_UNIX", authkey=AUTHKEY)
                return
            time.sleep(0.02)
        self.close()
        log = (workdir / "powerfs.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the power-loss file system did not mount:\n{log}")

    def _call(self, *request: Any) -> Any:
        assert self._conn is not None
        self._conn.send(request)
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"simulator: {value}")
        return value

    def new_round(self, name: str, source: Path | None = None) -> Path:
        """A fresh, durable folder on the mount (filled durably from ``source``)."""
        self._call("round", name, None if source is None else str(source))
        return self.mountpoint / name

    def drop_round(self, name: str) -> None:
        self._call("drop", name)

    def arm(self, at_op: int = 0, at_fsync: int = 0, torn_seed: int | None = None) -> None:
        """Reset the counters; cut before the ``at_op``-th operation or ``at_fsync``-th fsync."""
        self._call("arm", at_op, at_fsync, torn_seed)

    def cut_now(self) -> None:
        """The power goes now, between whatever two operations the writer is at."""
        self._call("cut")

    def wait_cut(self, timeout: float) -> bool:
        return bool(self._call("wait_cut", timeout))

    def stats(self) -> Stats:
        return Stats(**self._call("stats"))

    def image(self, name: str, dest: Path) -> bool:
        """What a restart would find of round ``name``, written to ``dest``; True if cut."""
        return bool(self._call("image", name, str(dest)))

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None
        # Lazy: a killed writer may still hold a file open for a moment.
        subprocess.run(
            ["fusermount3", "-u", "-z", str(self.mountpoint)],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
        self._log.close()

    def __enter__(self) -> PowerFS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def mounted(workdir: Path) -> Iterator[PowerFS]:
    fs = PowerFS(workdir)
    try:
        yield fs
    finally:
        fs.close()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
