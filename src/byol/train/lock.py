"""One writer per run folder: a second `byol pretrain` on a live run is refused.

The lock is a POSIX record lock (`lockf`) on RUN/.lock: the kernel releases it when its
process ends however it ends, so a lock left by a killed process never blocks a resume, and
unlike `flock` it is not inherited by forked loader workers, which may outlive a killed run
by a few seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from byol.core import distributed
from byol.core.errors import ByolError
from byol.core.files import claim_folder, safe_load
from byol.eval.checkpoints import CHECKPOINT_FORMAT
from byol.train.checkpoint import CHECKPOINT

LOCK = ".lock"


def _was_a_run(folder: Path) -> bool:
    """A run folder written before run folders were marked: it holds a byol checkpoint."""
    try:
        return safe_load(folder / CHECKPOINT).get("format") == CHECKPOINT_FORMAT
    except (ByolError, AttributeError):
        return False


def _acquire(out: Path) -> int:
    claim_folder(out, "run", was_ours=_was_a_run)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # EAGAIN or EACCES: another process holds it
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ByolError(f"{out} is in use by another byol pretrain (process {holder}): wait for it to end "
                        "or stop it, or choose another --out folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@contextlib.contextmanager
def run_folder_lock(out: Path, lead: bool) -> Iterator[None]:
    """Hold RUN/.lock in the lead process for the duration; every process raises if it is taken."""
    fd, refusal = None, None
    if lead:
        try:
            fd = _acquire(out)
        except ByolError as err:
            refusal = str(err)
    refusals = [r for r in distributed.all_ranks(refusal) if r]
    if refusals:
        raise ByolError(refusals[0])
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)
