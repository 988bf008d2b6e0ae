"""Atomic, durable writes: nothing half-written, and nothing lost to a crash.

- ``atomic_path(target)``: the caller writes a temp file beside ``target``; on success the file is
  fsynced, renamed onto ``target`` (``os.replace``: readers see the old or the new file, never a
  mix) and the folder is fsynced, so the rename itself survives a power cut.
- ``atomic_dir(target)``: the caller fills a temp dir beside ``target``; on success every file and
  folder in it is fsynced, then it takes ``target``'s place:
  * no ``target`` yet: one rename;
  * ``target`` exists, Linux: ``renameat2(RENAME_EXCHANGE)`` swaps the two in one step, so
    ``target`` is never missing, then the old tree (now at the temp name) is removed;
  * elsewhere (or a filesystem that refuses the exchange): ``target`` is moved to ``.NAME.old``,
    the new dir renamed in; if that second rename fails the old output is moved back and the NEW
    output is kept at its temp path (the error names it), never deleted. A crash between the two
    renames leaves ``.NAME.old``; the next ``atomic_dir`` on the same target puts it back first.
  Only when the body itself raises is the temp dir (an unfinished output) removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_renameat2 = None  # resolved lazily; False when the C library lacks it
_replace = os.replace  # the fallback's renames (a seam for the failure tests)


class SwapError(OSError):
    """The finished output could not be put in place; it was kept at ``kept`` (not deleted)."""

    def __init__(self, message: str, kept: Path):
        super().__init__(message)
        self.kept = kept


def _libc_renameat2():
    global _renameat2
    if _renameat2 is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (AttributeError, OSError):
            _renameat2 = False
    return _renameat2 or None


def rename_exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``). Returns False
    when the OS or the filesystem does not offer it (the caller falls back); raises OSError for
    any other failure."""
    fn = _libc_renameat2()
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, f"renameat2(RENAME_EXCHANGE) {a} <-> {b}: {os.strerror(err)}")


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory (its entries: renames, new files). No-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems refuse fsync on a directory
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every regular file and every folder under ``root`` (root included), deepest first."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for f in files:
            p = os.path.join(dirpath, f)
            if os.path.isfile(p) and not os.path.islink(p):
                fsync_file(p)
        fsync_dir(dirpath)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _umask() -> int:
    """The process's umask, read without changing it (``/proc/self/status``; Linux 4.7+), else by
    setting and restoring it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_modes(root: str | os.PathLike) -> None:
    """Give every folder and file under ``root`` the mode a plain mkdir()/open() gives under the umask
    (0755 / 0644 under 022; executables keep their x bits). Libraries that write through a temp file
    and a rename (transformers' save_pretrained: model.safetensors) leave 0600 files, which the next
    reader running as another user (the image's uid 10001, the next pod on a shared volume) cannot
    open. Symlinks are left alone."""
    mask = _umask()
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.lstat(p)
            if not os.path.islink(p):
                x = 0o111 if st.st_mode & 0o111 else 0
                os.chmod(p, (0o666 | x) & ~mask)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp file path in the target's folder; fsync it, rename it onto ``target`` and
    fsync the folder on success. On an error in the body the temp file is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600: give what open() would (readers run as others)
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            fsync_file(tmp_path)
        os.replace(tmp_path, target)
        fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _old_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def recover(target: str | os.PathLike) -> bool:
    """Put back an output left at ``.NAME.old`` by a crash between the fallback's two renames
    (``target`` missing). Returns True when something was restored."""
    target = Path(target)
    old = _old_name(target)
    if not os.path.lexists(target) and old.exists():
        os.rename(old, target)
        fsync_dir(target.parent)
        log.warning("restored %s from %s (an earlier write was interrupted)", target, old)
        return True
    return False


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp dir beside ``target``; on success it replaces ``target`` with no moment where
    ``target`` is missing (Linux), fsynced. See the module docstring for the fallback."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700: give what mkdir() would
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    try:
        umask_modes(tmp)
        fsync_tree(tmp)
    except BaseException:
        _remove(tmp)
        raise
    _swap_in(tmp, target)


def _swap_in(tmp: Path, target: Path) -> None:
    parent = target.parent
    if not os.path.lexists(target):
        try:
            os.rename(tmp, target)
        except OSError as e:
            raise SwapError(f"could not rename the new output {tmp} to {target}: {e}; the new output is "
                            f"kept at {tmp}", kept=tmp) from e
        fsync_dir(parent)
        return
    try:
        exchanged = rename_exchange(tmp, target)
    except OSError as e:
        raise SwapError(f"could not swap the new output {tmp} with {target}: {e}; {target} is unchanged, "
                        f"the new output is kept at {tmp}", kept=tmp) from e
    if exchanged:
        fsync_dir(parent)  # the swap is durable before the old tree goes
        _remove(tmp)       # tmp now holds the OLD output
        return
    # fallback: keep the old output until the new one is in place
    old = _old_name(target)
    _remove(old)
    _replace(target, old)
    try:
        _replace(tmp, target)
    except OSError as e:
        try:
            _replace(old, target)
        except OSError as e2:
            raise SwapError(f"could not put the new output {tmp} at {target} ({e}) nor restore the old one "
                            f"from {old} ({e2}); the new output is kept at {tmp}, the old at {old}",
                            kept=tmp) from e
        raise SwapError(f"could not put the new output {tmp} at {target}: {e}; the old output is back at "
                        f"{target}, the new one is kept at {tmp}", kept=tmp) from e
    fsync_dir(parent)
    _remove(old)


def write_parquet(df, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def write_json(obj, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
