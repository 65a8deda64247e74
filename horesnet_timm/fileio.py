"""Outputs that appear complete or not at all, with the permissions the user's umask asks for.

Every command writes under a temporary name beside the target (same filesystem, so the final rename
is atomic) and removes it on any failure, KeyboardInterrupt and SIGTERM included (the CLI turns
SIGTERM and SIGHUP into SystemExit, so these `except BaseException` clauses run). The result gets
the mode an ordinary `open()` / `mkdir` would give.
"""
import contextlib
import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator, Optional, Union

from .errors import HoresnetError

__all__ = ['umask', 'regular_file', 'output_directory', 'atomic_output', 'describe_os_error', 'signalled']

# The exit status of a termination signal the command line has received (130, 129, 143), else None. Its
# handler raises, but where Python swallows that exception (a signal landing in a weakref callback or a
# __del__, where it prints "Exception ignored"), this still keeps an output from appearing (atomic_output).
signalled: Optional[int] = None

PathLike = Union[str, os.PathLike]


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def regular_file(path: PathLike, what: str, error=HoresnetError) -> str:
    """`path` if it is a readable regular file, else `error` saying what it is instead. A FIFO or device
    is refused before anything opens it (opening a FIFO blocks until someone writes to it)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise error(f"{what} '{path}' is a folder, not a file")
    if not os.path.exists(path):
        raise error(f"{what} '{path}' does not exist")
    if not os.path.isfile(path):
        raise error(f"{what} '{path}' is not a regular file (a device, FIFO or socket)")
    if not os.access(path, os.R_OK):
        raise error(f"cannot read {what} '{path}': permission denied")
    return path


def output_directory(target: PathLike) -> Path:
    """The existing, writable directory that will hold `target`, or an error saying which it is not."""
    target = Path(target)
    parent = target.absolute().parent
    if not parent.exists():
        raise HoresnetError(f"cannot write '{target}': folder '{parent}' does not exist; create it first")
    if not parent.is_dir():
        raise HoresnetError(f"cannot write '{target}': '{parent}' is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HoresnetError(f"cannot write '{target}': folder '{parent}' is not writable; choose another output")
    return parent


@contextlib.contextmanager
def atomic_output(target: PathLike, directory: bool = False, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary file (or folder) beside `target`; it becomes `target` when the block succeeds.

    A folder target must not exist yet (a rename cannot replace a non-empty folder); a file target is
    replaced unless `overwrite` is False.
    """
    target = Path(target)
    parent = output_directory(target)
    if target.is_dir() and not directory:
        raise HoresnetError(f"cannot write '{target}': it is a folder; give a file name")
    if target.exists() and (directory or not overwrite):
        raise HoresnetError(f"'{target}' already exists; remove it or choose another name")
    # named before it exists, so that a signal arriving at any point after its creation (SIGTERM is raised
    # as SystemExit) finds it in the clean-up below; created with the mode open() / mkdir give
    tmp = parent / f'.{target.name}.{secrets.token_hex(8)}.tmp'
    try:
        try:
            if directory:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except OSError as e:
            raise HoresnetError(f"cannot write in folder '{parent}': {describe_os_error(e, with_path=False)}") from e
        yield tmp
        if signalled is not None:
            raise SystemExit(signalled)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise


def describe_os_error(e: OSError, with_path: bool = True) -> str:
    """One line for an operating-system error: what failed on which file, and why."""
    path = e.filename if e.filename is not None else ''
    reason = {errno.ENOSPC: 'no space left on the device: free some space or write elsewhere',
              errno.EDQUOT: 'disk quota exceeded: free some space or write elsewhere',
              errno.EACCES: 'permission denied', errno.EROFS: 'the filesystem is read-only'}.get(
        e.errno, e.strerror or str(e))
    return f"'{path}': {reason}" if path and with_path else reason
