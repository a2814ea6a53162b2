"""Safe outputs: atomic writes, named read/write errors (a full disk says so), run locks.

Every output is written under a temporary name and renamed over its destination only once
complete; :func:`check_not_inputs` refuses to write over an input, :func:`exclusive_lock` keeps
two runs out of one output directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import rasterio
import rasterio.errors
from rasterio._err import CPLE_BaseError
from rasterio.windows import Window

from geochange.errors import DataError, GeochangeError, OutputError

__all__ = [
    "DISK_FULL_FREE_BYTES",
    "atomic_output",
    "check_not_inputs",
    "check_writable_dir",
    "describe_window",
    "error_detail",
    "exclusive_lock",
    "file_identity",
    "output_error",
    "partial_path",
    "read_errors",
    "write_errors",
]


def check_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and check that files can be written in it.

    Args:
        path: a directory.

    Returns:
        The directory as a :class:`~pathlib.Path`.

    Raises:
        OutputError: if the directory cannot be created or written to.
    """
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".geochange-write-test-"):
            pass
    except OSError as err:
        raise OutputError(f"output directory {str(directory)!r} is not writable: {err}") from err
    return directory


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Return the temporary name a file is written under before its final rename."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write to; rename it to ``path`` when the block succeeds.

    On error the temporary file is removed and ``path`` is left untouched.

    Args:
        path: the final destination.

    Yields:
        A temporary path in the same directory (so the rename is atomic).
    """
    final = Path(path)
    check_writable_dir(final.parent if str(final.parent) else ".")
    tmp = partial_path(final)
    if tmp.exists():
        tmp.unlink()
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def describe_window(window: Window) -> str:
    """``"rows 512-1024, cols 0-2048"`` for a pixel window (in error messages)."""
    row, col = int(window.row_off), int(window.col_off)
    return f"rows {row}-{row + int(window.height)}, cols {col}-{col + int(window.width)}"


def error_detail(err: BaseException) -> str:
    """The first informative message along an exception's ``__cause__`` chain.

    rasterio raises ``RasterioIOError("Read failed. See previous exception for details.")`` from
    the GDAL error that says what went wrong.

    Args:
        err: the exception.

    Returns:
        Its message, or that of the first cause that says more.
    """
    current: BaseException | None = err
    first = str(err).strip() or type(err).__name__
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip()
        if text and "See previous exception" not in text:
            return text
        current = current.__cause__
    return first


#: Errors of GDAL and the OS that reading or writing a file can raise.
_IO_ERRORS = (rasterio.errors.RasterioIOError, CPLE_BaseError, OSError)
#: Free space below which a failed write is reported as a full disk. GDAL does not pass the
#: OS error on (it only prints "No space left on device"), so the file system is asked; a
#: write fails when less than one compressed block (at most a few MB) fits.
DISK_FULL_FREE_BYTES = 16 * 2**20


@contextlib.contextmanager
def read_errors(path: str | os.PathLike[str], window: Window | None = None) -> Iterator[None]:
    """Turn GDAL and OS read errors inside the block into a :class:`DataError`.

    The message names the file and, when given, the window being read.

    Args:
        path: the file being read.
        window: the pixel window being read.
    """
    try:
        yield
    except GeochangeError:
        raise
    except _IO_ERRORS as err:
        at = f" at {describe_window(window)}" if window is not None else ""
        raise DataError(
            f"cannot read {str(path)!r}{at} (corrupt or truncated file?): {error_detail(err)}"
        ) from err


def _free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _is_disk_full(err: BaseException, free: int | None) -> bool:
    current: BaseException | None = err
    while current is not None:
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        current = current.__cause__
    return free is not None and free < DISK_FULL_FREE_BYTES


def output_error(
    err: BaseException,
    path: str | os.PathLike[str],
    window: Window | None = None,
    *,
    needed_bytes: Callable[[], int | None] | None = None,
    hint: str = "",
) -> OutputError:
    """An :class:`OutputError` for a failed write of ``path``; a full disk says so.

    Args:
        err: the error raised by the write.
        path: the file being written.
        window: the pixel window being written, if any.
        needed_bytes: returns an estimate of the bytes the writer still needs (for a full
            disk's message).
        hint: appended sentence (e.g. how to continue).

    Returns:
        The error, to be raised ``from err``.
    """
    path = Path(path)
    at = f" ({describe_window(window)})" if window is not None else ""
    directory = path.parent if str(path.parent) else Path(".")
    free = _free_bytes(directory)
    if _is_disk_full(err, free):
        text = f"disk full: cannot write {str(path)!r}{at}"
        if free is not None:
            text += f"; {free / 2**20:.1f} MB free in {str(directory)!r}"
        needed = needed_bytes() if needed_bytes is not None else None
        if needed:
            text += f", need about {needed / 2**20:.1f} MB more"
    else:
        text = f"cannot write {str(path)!r}{at}: {error_detail(err)}"
    if hint:
        text += f". {hint}"
    return OutputError(text)


@contextlib.contextmanager
def write_errors(
    path: str | os.PathLike[str],
    window: Window | None = None,
    *,
    needed_bytes: Callable[[], int | None] | None = None,
    hint: str = "",
) -> Iterator[None]:
    """Turn GDAL and OS errors inside the block into an :class:`OutputError`.

    See :func:`output_error` for the arguments.
    """
    try:
        yield
    except GeochangeError:
        raise
    except _IO_ERRORS as err:
        raise output_error(err, path, window, needed_bytes=needed_bytes, hint=hint) from err


def file_identity(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of an existing file (hard links and symlinks share it), else None."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def check_not_inputs(
    outputs: Sequence[str | os.PathLike[str]],
    inputs: Mapping[str, str | os.PathLike[str] | None],
) -> None:
    """Refuse to write any of ``outputs`` that is one of a run's ``inputs``.

    Paths are compared resolved (symlinks followed) and, for existing files, by device and
    inode, so a hard link or another spelling of an input is caught too.

    Args:
        outputs: every path the run may write, replace or remove.
        inputs: description (``"pre image"``) -> path of each input (None entries are ignored).

    Raises:
        OutputError: an output would be one of the inputs.
    """
    known = []
    for name, value in inputs.items():
        if value is None:
            continue
        path = Path(value)
        known.append((name, path, path.resolve(), file_identity(path)))
    for value in outputs:
        out = Path(value)
        resolved, identity = out.resolve(), file_identity(out)
        for name, path, input_resolved, input_identity in known:
            if resolved == input_resolved or (identity is not None and identity == input_identity):
                raise OutputError(
                    f"output {str(out)!r} would overwrite the {name} {str(path)!r}; "
                    "choose another output directory"
                )


def _lock_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown: it is just starting"


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], *, what: str = "geochange") -> Iterator[Path]:
    """Hold an exclusive lock on the lock file ``path`` for the duration of the block.

    The lock is an OS advisory lock (``flock``): it dies with its process, so a killed run never
    blocks the next one. While held, the file names the holder (pid, host, start time,
    command); the file is removed on release.

    Args:
        path: the lock file (created).
        what: what holds it, for the message (``"geochange predict"``).

    Yields:
        ``path``.

    Raises:
        OutputError: another process holds the lock (the message names it), or the lock file
            cannot be created.
    """
    path = Path(path)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no advisory locks
        yield path
        return
    unsupported: OSError | None = None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise OutputError(f"cannot create lock file {str(path)!r}: {err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise OutputError(
                f"output directory {str(path.parent)!r} is in use by another {what} run "
                f"({holder}); wait for it to finish or choose another output directory"
            ) from None
        except OSError as err:  # e.g. ENOLCK: a file system without locks
            os.close(fd)
            unsupported = err
            break
        # The holder removes the file while it still holds the lock; a file we opened before
        # that is no longer the lock file, so start over.
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    if unsupported is not None:
        import warnings

        warnings.warn(
            f"cannot lock {str(path)!r} ({unsupported}); concurrent runs are not detected",
            stacklevel=3,
        )
        yield path
        return
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    command = " ".join(sys.argv)
    if len(command) > 300:
        command = command[:297] + "..."
    holder = f"pid {os.getpid()} on {socket.gethostname()}, started {started}, command: {command}"
    with contextlib.suppress(OSError):  # a full disk must not stop the lock itself
        os.ftruncate(fd, 0)
        os.write(fd, holder.encode())
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
