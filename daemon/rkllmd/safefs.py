"""Race-free file access below a folder other local users may rename entries in.

The models directory is writable by the ``rkllm`` group: a member can swap any
entry for a symlink between the moment the daemon checks it and the moment it
uses it. So nothing here trusts a path twice. A folder is opened once, with
``O_NOFOLLOW | O_DIRECTORY``, and every later call names entries relative to that
descriptor (``openat``, ``mkdirat``, ``renameat``, ``unlinkat``): an entry swapped
for a link makes the call fail (``ELOOP``/``ENOTDIR``) instead of leading elsewhere.

Files are opened ``O_NONBLOCK | O_NOFOLLOW`` and checked with ``fstat`` before
anything reads them: a FIFO or a device named like a model or a metadata file is
refused at once instead of blocking a thread forever in ``open()``.

Blocking calls: worker threads only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path
from types import TracebackType

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITE = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeEntry(OSError):
    """An entry that is a symlink, or not the kind of file it must be."""


def _not_regular(name: str) -> UnsafeEntry:
    return UnsafeEntry(errno.EINVAL, "not a regular file", name)


def is_link_error(exc: OSError) -> bool:
    """What opening a symlink (or a non-folder) with O_NOFOLLOW|O_DIRECTORY raises."""
    return isinstance(exc, UnsafeEntry) or exc.errno in (errno.ELOOP, errno.ENOTDIR)


def parts_of(rel: str) -> list[str]:
    """The components of a relative path; refuses '', '.', '..' and absolute paths."""
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UnsafeEntry(errno.EINVAL, "not a plain relative path", rel)
    return parts


def open_regular(
    path: Path | str, dir_fd: int | None = None, *, follow: bool = False, devices: bool = False
) -> int:
    """A read-only descriptor of a regular file; never blocks on a FIFO or device.

    ``follow``: the last component may be a symlink (a configured file such as the
    config or token file, which the administrator may link; never below the models dir).
    ``devices``: a character device is accepted too (``--config /dev/null``).
    """
    flags = _READ & ~os.O_NOFOLLOW if follow else _READ
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or (devices and stat.S_ISCHR(mode))):
            raise _not_regular(str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_limited(fd: int, limit: int, name: str = "") -> bytes:
    """At most ``limit`` bytes of an open file; ValueError when there are more."""
    chunks: list[bytes] = []
    size = 0
    while chunk := os.read(fd, min(limit + 1 - size, 1 << 20)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ValueError(f"{name or 'file'} is larger than {limit} bytes")
    return b"".join(chunks)


def read_file(
    path: Path | str, limit: int, *, follow: bool = False, devices: bool = False
) -> bytes:
    """A small regular file's bytes (configured files: ``follow`` allows a symlink)."""
    fd = open_regular(path, follow=follow, devices=devices)
    try:
        return read_limited(fd, limit, Path(path).name)
    finally:
        os.close(fd)


class Folder:
    """An open folder: every operation is relative to its descriptor."""

    def __init__(self, fd: int, label: str = ".") -> None:
        self.fd = fd
        self.label = label  # for messages: the path relative to the root it came from

    @classmethod
    def open(cls, path: Path | str) -> Folder:
        """The root itself: a configured path, which may be a link the administrator made."""
        return cls(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), ".")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Folder:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def path_of(self, name: str) -> str:
        return name if self.label == "." else f"{self.label}/{name}"

    # --- folders -------------------------------------------------------------------

    def child(self, name: str, *, create: bool = False, mode: int = 0o755) -> Folder:
        """The subfolder ``name``; a symlink there raises (ELOOP/ENOTDIR)."""
        parts_of(name)
        try:
            fd = os.open(name, _DIR, dir_fd=self.fd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):  # another thread made it: fine
                os.mkdir(name, mode, dir_fd=self.fd)
                self.fsync()
            fd = os.open(name, _DIR, dir_fd=self.fd)
        return Folder(fd, self.path_of(name))

    def walk(self, rel: str, *, create: bool = False, mode: int = 0o755) -> Folder:
        """The folder ``rel`` below this one, every component opened without following."""
        current = Folder(os.dup(self.fd), self.label)
        if not rel:
            return current
        for part in parts_of(rel):
            try:
                nxt = current.child(part, create=create, mode=mode)
            finally:
                current.close()
            current = nxt
        return current

    def names(self) -> list[str]:
        return os.listdir(self.fd)  # noqa: PTH208 - a descriptor, not a path

    def fsync(self) -> None:
        os.fsync(self.fd)

    def stat(self) -> os.stat_result:
        return os.fstat(self.fd)

    # --- entries -------------------------------------------------------------------

    def lstat(self, name: str) -> os.stat_result:
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def regular_size(self, name: str) -> int | None:
        """The size of ``name`` if it is a regular file (not a link), else None."""
        try:
            st = self.lstat(name)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def open_read(self, name: str) -> int:
        return open_regular(name, self.fd)

    def read_bytes(self, name: str, limit: int) -> bytes:
        fd = self.open_read(name)
        try:
            return read_limited(fd, limit, name)
        finally:
            os.close(fd)

    def open_write(self, name: str, *, append: bool = False, mode: int = 0o644) -> int:
        """A regular file for writing and reading back (created if missing); links and
        FIFOs refused."""
        fd = os.open(name, _WRITE | (os.O_APPEND if append else 0), mode, dir_fd=self.fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _not_regular(self.path_of(name))
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def write_atomic(self, name: str, payload: bytes, mode: int = 0o644) -> None:
        """Write a temporary file, fsync it, rename it over ``name``, fsync the folder."""
        tmp = f".{name}.{os.getpid()}.tmp"
        self.remove(tmp)  # a leftover, or something planted under that name
        fd = os.open(tmp, _WRITE | os.O_EXCL | os.O_TRUNC, mode, dir_fd=self.fd)
        try:
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.fd)
            raise
        self.fsync()

    def rename(self, name: str, dest: Folder, dest_name: str) -> None:
        os.rename(name, dest_name, src_dir_fd=self.fd, dst_dir_fd=dest.fd)

    def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd)

    def rmdir(self, name: str) -> None:
        os.rmdir(name, dir_fd=self.fd)

    def remove(self, name: str) -> None:
        """Remove ``name`` whatever it is; a folder with its content (fd-based rmtree),
        a link as a link. Missing is fine."""
        try:
            st = self.lstat(name)
        except FileNotFoundError:
            return
        try:
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=self.fd)
            else:
                os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return
