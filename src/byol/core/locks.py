"""One writer per folder byol owns: a second command writing the same run, classifier, compare
or report folder is refused while the first runs.

The lock is a POSIX record lock (`lockf`) on FOLDER/.lock: the kernel releases it when its
process ends however it ends, so a lock left by a killed process never blocks the next
command, and unlike `flock` it is not inherited by forked loader workers, which may outlive
a killed command by a few seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from byol.core.errors import ByolError

LOCK = ".lock"


def acquire(folder: Path, command: str) -> int:
    """The descriptor holding FOLDER/.lock; refused in one line while another process holds it."""
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # EAGAIN or EACCES: another process holds it
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ByolError(f"{folder} is in use by another {command} (process {holder}): wait for it to end "
                        "or stop it, or choose another --out folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@contextlib.contextmanager
def folder_lock(folder: Path, command: str) -> Iterator[None]:
    """Hold FOLDER/.lock for the duration of the block."""
    fd = acquire(folder, command)
    try:
        yield
    finally:
        os.close(fd)
