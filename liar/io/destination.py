"""Where a run writes, checked before any work, locked for the whole run, and replaced without a window.

Nothing is ever lost: the output is never the input, a folder holding the input, the current, home or root
folder; an existing output is refused, and `--overwrite` replaces only a previous liar output (it holds
`liar_report.json`) or an empty folder;
one run at a time holds the destination (an exclusive `flock` that the kernel releases when the process
dies, so a stale lock of a killed run is taken over, not obeyed); the finished folder is swapped in with one
atomic `renameat2(RENAME_EXCHANGE)` where the filesystem has it, else moved aside, renamed in and rolled back
on failure.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import functools
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = "liar_report.json"  # what makes a folder a liar output that --overwrite may replace


def hidden_sibling(out: Path, suffix: str) -> Path:
    """`.<name>.<suffix>` beside the output: on its filesystem, so renames are atomic."""
    return out.parent / f".{out.name}.{suffix}"


def _refuse(message: str) -> None:
    raise ValueError(message)


def _contains(folder: Path, path: Path) -> bool:
    return folder == path or folder in path.parents


def check_destination(out: str | os.PathLike, inputs: list[Path], overwrite: bool) -> Path:
    """The absolute output path, once every way it could destroy data or fail at the end is ruled out.

    `inputs`: every path the run reads (the folder or file the user named, and a converted cache folder).
    """
    if str(out) in ("", "."):
        _refuse(f"--out {str(out)!r} names the current folder; give the name of a new folder for the output")
    raw = Path(out).expanduser()
    if raw.is_symlink():
        _refuse(f"--out {raw} is a symbolic link; pass the real folder path it should be")
    path = raw.absolute().resolve()
    if path in (Path.home().resolve(), Path("/"), Path.cwd().resolve()):
        _refuse(f"--out {raw} is the {'home' if path == Path.home().resolve() else 'current or root'} folder; "
                "give the name of a new folder for the output")
    for source in inputs:
        src = source.absolute().resolve()
        if _contains(src, path):
            _refuse(f"the output {path} is the input {src} or inside it; choose an --out outside the input")
        if _contains(path, src):
            _refuse(f"the input {src} is inside the output {path}, which --overwrite would replace; choose another "
                    "--out")
    if path.exists() and not path.is_dir():
        _refuse(f"--out {path} is a file, not a folder; choose another --out")
    if path.is_dir():
        if not overwrite:
            raise FileExistsError(f"{path} already exists; choose another --out or pass --overwrite")
        if any(path.iterdir()) and not (path / MARKER).is_file():
            _refuse(f"{path} is not empty and is not a liar output (no {MARKER}); --overwrite replaces only "
                    "previous liar outputs: remove it yourself or choose another --out")
    _check_parent(path)
    return path


def _check_parent(path: Path) -> None:
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        _refuse(f"{existing} is a file, so {path} cannot be created; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{existing} is not writable, so {path} cannot be created; choose another --out")


class OutputLock:
    """An exclusive lock on one output path for the whole run: `.<name>.lock` beside it, `flock`-ed.

    A second run on the same --out is refused with the holder's pid and command. The kernel drops the lock
    when its process dies, so the file of a killed run is taken over (and said so), never obeyed.
    """

    def __init__(self, out: Path, command: str):
        self.path = hidden_sibling(out, "lock")
        self.out, self.command = out, command
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise FileExistsError(
                    f"another liar run (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
                    f"{holder.get('started', '?')}: {holder.get('command', '?')}) is writing {self.out}; wait for "
                    "it to finish or choose another --out") from None
            if _same_file(fd, self.path):  # not unlinked by a finishing holder between open and flock
                break
            os.close(fd)
        stale = _read_holder(fd)
        if stale:
            log.info("taking over the lock of an earlier run that ended without releasing it (pid %s: %s)",
                     stale.get("pid"), stale.get("command"))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still held: a waiting run then locks a fresh file
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


RENAME_EXCHANGE = 2  # linux/fs.h


@functools.cache
def _renameat2():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return getattr(libc, "renameat2", None)


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False where the platform or filesystem cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"could not swap {a} and {b}: {os.strerror(code)}")


def swap_into_place(new: Path, out: Path) -> None:
    """Move the finished folder `new` to `out`, replacing a previous liar output there without ever leaving
    `out` missing: one atomic exchange, else move aside + rename in, rolled back if the second step fails."""
    if not out.exists() or (out.is_dir() and not out.is_symlink() and not any(out.iterdir())):
        os.rename(new, out)  # onto nothing, or onto an empty folder (rename replaces it atomically)
        return
    if not (out / MARKER).is_file():
        _refuse(f"{out} appeared during the run and is not a liar output; the finished checkpoint is kept in "
                f"{new}: move it yourself")
    if exchange(new, out):
        shutil.rmtree(new)  # now the previous output
        return
    old = hidden_sibling(out, f"old-{os.getpid()}")
    os.rename(out, old)
    try:
        os.rename(new, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old)
