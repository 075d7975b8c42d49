"""One writer per run folder: a second `byol pretrain` on a live run is refused, in every
process under torchrun (the lead holds the lock: byol.core.locks)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from byol.core import distributed
from byol.core.errors import ByolError
from byol.checkpoint import LATEST, is_checkpoint_file
from byol.core.files import claim_folder
from byol.core.locks import acquire


def _was_a_run(folder: Path) -> bool:
    """An unmarked folder is a run folder when it holds a byol checkpoint."""
    return is_checkpoint_file(folder / LATEST)


@contextlib.contextmanager
def run_folder_lock(out: Path, lead: bool) -> Iterator[None]:
    """Hold RUN/.lock in the lead process for the duration; every process raises if it is taken."""
    fd, refusal = None, None
    if lead:
        try:
            claim_folder(out, "run", was_ours=_was_a_run)
            fd = acquire(out, "byol pretrain")
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
