"""Writing an output file: atomically when it is a regular file, directly when it is anything else.

A regular file (or a new path) is written to a temporary file beside it and renamed over it, so a
crash never leaves a truncated document in place of a good one. Anything else -- a character
device such as ``/dev/null``, a FIFO, ``/dev/stdout``, a process substitution -- is opened and
written in place: renaming over it would replace the device or pipe with a regular file. Every
failure is an :class:`OutputError` that names the path and the reason.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Callable, Union

from .errors import OutputError

#: what can be written: text (UTF-8), bytes, or a function that writes to a binary file
Content = Union[str, bytes, Callable[[IO[bytes]], None]]

#: names of this process's own standard streams: written through the open stream, keeping its offset
STREAMS = {"/dev/stdout": "stdout", "/dev/fd/1": "stdout", "/proc/self/fd/1": "stdout",
           "/dev/stderr": "stderr", "/dev/fd/2": "stderr", "/proc/self/fd/2": "stderr"}
#: paths under these are kernel objects (devices, /dev/stdout, /proc/self/fd/N): never renamed over
SPECIAL_ROOTS = ("/dev/", "/proc/")


def _put(f: IO[bytes], content: Content) -> None:
    if isinstance(content, str):
        f.write(content.encode("utf-8"))
    elif isinstance(content, (bytes, bytearray, memoryview)):
        f.write(content)
    else:
        content(f)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def is_special(path: Union[str, Path]) -> bool:
    """True for an existing path that is not a regular file or directory (device, FIFO, socket), or under /dev or /proc."""
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return True
    return str(Path(path).absolute()).startswith(SPECIAL_ROOTS)


def check_output(path: Union[str, Path, None], what: str = "output") -> None:
    """Refuse an output path that cannot be written, before any work is done (``None`` and ``-`` mean stdout)."""
    if path is None or str(path) == "-":
        return
    path = Path(path)
    label = f"{what} {path}"
    if str(path) in ("", ".") or path.is_dir():
        raise OutputError(f"{label}: is a directory; give a file name")
    if is_special(path):
        return
    parent = Path(os.path.realpath(path)).parent if path.exists() else path.absolute().parent
    if not parent.is_dir():
        raise OutputError(f"{label}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{label}: cannot write in {parent} (permission denied)")


def write_output(path: Union[str, Path], content: Content, *, what: str = "output") -> Path:
    """Write ``content`` to ``path`` (atomically for regular files); ``what`` names the option in errors, e.g. ``-o``."""
    path = Path(path)
    label = f"{what} {path}"
    if str(path) in ("", "."):
        raise OutputError(f"{label}: is a directory; give a file name")
    try:
        st = os.stat(path)  # follows symbolic links: /dev/stdout -> the pipe or terminal
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(f"{label}: cannot write there ({_reason(e)})") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{label}: is a directory; give a file name")
    special = st is not None and not stat.S_ISREG(st.st_mode)
    stream = STREAMS.get(str(path))
    if stream is not None:  # reopening /dev/stdout would truncate a redirected file and lose what was printed
        import sys

        out = getattr(sys, stream)
        out.flush()
        buffer = getattr(out, "buffer", None)
        if buffer is None:  # a text-only stream (a test's capture): hand it text
            import io

            data = io.BytesIO()
            _put(data, content)
            out.write(data.getvalue().decode("utf-8", errors="replace"))
            out.flush()
        else:
            _put(buffer, content)
            buffer.flush()
        return path
    if special or str(path.absolute()).startswith(SPECIAL_ROOTS):
        try:
            with open(path, "wb") as f:  # a device, FIFO or stream: written in place, never replaced
                _put(f, content)
        except OSError as e:
            raise OutputError(f"{label}: cannot write it ({_reason(e)})") from None
        return path
    target = Path(os.path.realpath(path)) if st is not None else path.absolute()
    parent = target.parent
    if not parent.is_dir():
        raise OutputError(f"{label}: the directory {parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise OutputError(f"{label}: cannot write in {parent} ({_reason(e)})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            _put(f, content)
        os.chmod(tmp, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as e:
        _discard(tmp)
        raise OutputError(f"{label}: cannot write it ({_reason(e)})") from None
    except BaseException:
        _discard(tmp)
        raise
    return path


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass
