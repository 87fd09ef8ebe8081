"""Writing the user's files: whole or not at all, and only where a regular file belongs.

Every file jacbench writes (results, reports, comparisons, advice pages) goes through
:func:`write_atomic`: the content goes to a temporary file in the target's directory, is
flushed to disk, and is renamed over the target, so that a reader finds the old file or the
whole new one, never half of one. What it writes over:

* nothing, or a regular file: replaced;
* a symbolic link: written through; the file it points to is replaced under these same rules,
  and the link stays a link;
* a directory, a device (``/dev/null``, ``/dev/full``), a FIFO or a socket: refused, with one
  line. jacbench never turns a device into a regular file.

A missing parent directory is created. :func:`writable` checks all of this, and that the
directory takes a new file, before the work that produces the content begins: a sweep or a
report that cannot be written says so at once, not at the end.

A temporary file is named after its writer (host and process id); one whose writer was
killed is removed by the next write to the same target. Pure Python: no torch.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
from pathlib import Path

_KINDS = {stat.S_ISDIR: "a directory", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
          stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket"}


class OutputError(OSError):
    """A file that cannot be written; the message is one line naming it."""


def _failed(path, e: OSError) -> OutputError:
    return OutputError(f"{path}: cannot write: {e.strerror or e}")


def target(path: Path) -> Path:
    """The regular file that writing ``path`` replaces: ``path``, or the file its symbolic
    links lead to (which need not exist yet). Raises :class:`OutputError` for anything else."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    except OSError as e:
        raise _failed(path, e) from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")
        shown = f"{path} (a link to {real})" if real != path.absolute() else str(path)
        raise OutputError(f"{shown} is {kind}; jacbench writes only regular files, give a file path")
    return real


def directory(path: Path) -> Path:
    """``path`` as a directory that takes new files (created if missing), or :class:`OutputError`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{path} is not a directory") from None
    except OSError as e:
        raise OutputError(f"{path}: cannot create directory: {e.strerror}") from None
    if not path.is_dir():
        raise OutputError(f"{path} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".jacbench-probe.")
    except OSError as e:
        raise OutputError(f"{path}: cannot write here: {e.strerror}") from None
    os.close(fd)
    os.unlink(probe)
    return path


def writable(path: Path) -> Path:
    """Check that ``path`` can be written (see the module's rules) before the work that makes
    its content; returns the file that will be replaced."""
    real = target(path)
    directory(real.parent)
    return real


def temporary(real: Path) -> tuple[int, str]:
    """A new temporary file beside ``real`` to write its content into: an open descriptor
    and its path, named after this writer; first, the ones of writers that are gone go."""
    _remove_orphans(real)
    return tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.{socket.gethostname()}.{os.getpid()}.",
                            suffix=".tmp")


def _remove_orphans(real: Path) -> None:
    """Remove temporary files of ``real`` that a writer on this host left when it was killed."""
    host = socket.gethostname()
    for tmp in real.parent.glob(f".{real.name}.{host}.*.tmp"):
        pid = tmp.name[len(f".{real.name}.{host}."):].split(".", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            tmp.unlink(missing_ok=True)


def alive(pid) -> bool:
    """Whether process ``pid`` exists on this host."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_atomic(path: Path, content: dict | str) -> Path:
    """Write ``content`` (a JSON document, or text) to ``path`` whole, by the module's rules;
    readable like any file the user makes (mkstemp's 0600 would hide results and reports from
    a web server or a colleague). Returns ``path``."""
    path = Path(path)
    real = writable(path)
    try:
        fd, tmp = temporary(real)
    except OSError as e:
        raise _failed(path, e) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if isinstance(content, str):
                f.write(content)
            else:
                json.dump(content, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        target(path)  # still a regular file, or nothing, at the moment it is replaced
        os.replace(tmp, real)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _failed(path, e) from None
        raise
    dir_fd = os.open(real.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path
