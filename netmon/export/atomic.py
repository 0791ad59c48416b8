"""Files that appear whole or not at all, and leave nothing behind if netmon dies.

Used by whichever thread writes the file (the reactor for ``--flows-out``, an export
worker for bundles); one owner per :class:`AtomicFile`. What netmon writes holds
captured addresses and payload-derived statistics, so until it is published the file
is 0600 and, where the kernel allows, has no name at all: an ``O_TMPFILE`` file in
the target directory disappears with the process, ``kill -9`` included. Publishing
links it to a temporary name and renames that over the target. Where ``O_TMPFILE``
is missing (other filesystems or kernels) the file is named from the start; its name
carries netmon's pid, so the next netmon to write into that directory removes the
leftovers of processes that no longer exist.
"""

from __future__ import annotations

import contextlib
import os
import secrets

#: Temporary names: ".netmon-<kind>-<pid>-<random>.tmp".
_PREFIX = ".netmon-"
_SUFFIX = ".tmp"


def _read_umask() -> int:
    # os.umask can only be read by setting it: done once, at import, not per file
    # (another thread creating a file in between would get the wrong mode).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale(directory: str) -> list[str]:
    """Remove netmon temporary files in ``directory`` whose process is gone; return
    their names."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
            continue
        parts = name[len(_PREFIX):-len(_SUFFIX)].split("-")
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid != os.getpid() and not _alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
                removed.append(name)
    return removed


class AtomicFile:
    """A 0600 temporary file in ``path``'s directory, published at ``path`` by
    :meth:`publish` (with the mode a plain ``open`` would give) or dropped by
    :meth:`discard`. Raises OSError when the directory cannot take it."""

    def __init__(self, path: str, kind: str) -> None:
        self.path = path
        self.directory = os.path.dirname(os.path.abspath(path)) or "."
        self._kind = kind
        remove_stale(self.directory)
        self.name = ""  # the temporary name, while the file has one
        try:
            self.fd = os.open(self.directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC,
                              0o600)
        except (AttributeError, OSError) as exc:  # no O_TMPFILE on this OS or filesystem
            if not isinstance(exc, AttributeError) and not os.path.isdir(self.directory):
                raise
            self.name = self._temp_name()
            self.fd = os.open(self.name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC,
                              0o600)

    def _temp_name(self) -> str:
        return os.path.join(self.directory, f"{_PREFIX}{self._kind}-{os.getpid()}-"
                                            f"{secrets.token_hex(4)}{_SUFFIX}")

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def publish(self) -> None:
        """Sync the file and make it appear at ``path`` in one step."""
        os.fsync(self.fd)
        os.fchmod(self.fd, 0o666 & ~_UMASK)  # as open() would have made it
        if not self.name:
            name = self._temp_name()
            # linkat(AT_SYMLINK_FOLLOW) is what gives a nameless file a name; Python
            # calls it only when given a directory fd (plain link() would not follow
            # the /proc link and fail with EXDEV).
            dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.link(f"/proc/self/fd/{self.fd}", os.path.basename(name), dst_dir_fd=dfd,
                        follow_symlinks=True)
            finally:
                os.close(dfd)
            self.name = name
        os.replace(self.name, self.path)
        self.name = ""
        os.close(self.fd)
        self.fd = -1

    def discard(self) -> None:
        """Drop the file (never raises: used on error paths)."""
        if self.name:
            with contextlib.suppress(OSError):
                os.unlink(self.name)
            self.name = ""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
