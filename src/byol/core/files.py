"""How byol writes files (only its own, each whole or not at all) and loads them (never unpickling code).

Every file goes through `replacing`: the content is written to a temporary name beside the
target (`.NAME.byol-XXXXXXXX.tmp`, the only temporaries byol ever cleans up), flushed to
disk, then renamed over the target. A crash, Ctrl-C or a full disk leaves the old file or
the new one, never half of one, and a failed write is one ByolError naming the place and
the cause. Folders byol writes into are marked as its own (`claim_folder`), so that a
user's folder is refused before anything in it is touched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from byol.core.errors import ByolError

TEMPORARY_TAG = ".byol-"  # in every temporary's name: .NAME.byol-XXXXXXXX.tmp
MARKER = ".byol"  # in every folder byol owns; its text says what the folder is (run, report, compare)
JOURNAL = ".byol-writing"  # the renames that make a folder's new files current (write_together)
FIXES = {
    errno.ENOSPC: "free some space there or choose another place",
    errno.EDQUOT: "free some space there or choose another place",
    errno.EFBIG: "the file is larger than this place allows: choose another place",
    errno.EACCES: "choose a place you may write to",
    errno.EPERM: "choose a place you may write to",
    errno.EROFS: "choose a place on a writable disk",
    errno.EISDIR: "a folder has that name: choose another name",
    errno.ENOTDIR: "part of the path is a file, not a folder: choose another place",
    errno.EEXIST: "part of the path is a file, not a folder: choose another place",
}


def _os_error_in(err: BaseException) -> OSError | None:
    """The OSError behind a failed write: the error itself, the one torch.save's RuntimeError
    was raised while handling, or the errno that safetensors names in its message."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return seen
        seen = seen.__cause__ or seen.__context__
    found = re.search(r"os error (\d+)", str(err))
    return OSError(int(found[1]), os.strerror(int(found[1]))) if found else None


def write_failure(path: Path, err: BaseException) -> ByolError:
    """One line for a write to `path` that failed with `err`: the place, the cause, the fix."""
    cause = _os_error_in(err)
    if cause is None:
        return ByolError(f"cannot write {path} ({str(err)[:120] or type(err).__name__}): check the disk has room "
                         "or choose another place")
    fix = FIXES.get(cause.errno, "choose another place")
    return ByolError(f"cannot write {path}: {cause.strerror.lower()}; {fix}")


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_failure(folder, err) from None


def temporary_beside(path: Path) -> Path:
    """An empty file beside `path`, with the mode a new file gets under the user's umask (not
    mkstemp's 0600): what byol writes is shared as the user's other files are."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMPORARY_TAG}", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(name)


def _umask() -> int:
    """The process's umask (read by setting it, so briefly 022: never a looser one)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(path: Path) -> None:
    """Fail now, not after the work, if a file cannot be created beside `path`."""
    make_folder(path.parent)
    try:
        temporary_beside(path).unlink()
    except OSError as err:
        raise write_failure(path, err) from None


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path to write `path`'s new content to; renamed over `path` when the block
    ends, removed (and `path` untouched) when it raises. Failed writes become one ByolError."""
    path = Path(path)
    make_folder(path.parent)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        temporary = temporary_beside(path)
    except OSError as err:
        raise write_failure(path, err) from None
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException as err:
        temporary.unlink(missing_ok=True)
        if isinstance(err, ByolError) or _os_error_in(err) is None:
            raise
        raise write_failure(path, err) from None


def write_with(path: str | Path, write: Callable[[Path], Any]) -> None:
    """`write(temporary)` writes the content; then it replaces `path` (see `replacing`)."""
    with replacing(path) as temporary:
        write(temporary)


def write_together(folder: Path, writers: dict[str, Callable[[Path], Any]]) -> None:
    """Replace the files `writers` names in `folder` as a whole: each is written to a temporary
    beside it, then a journal listing the renames is written, the renames are made and the
    journal removed. A crash before the journal leaves the old files; after it, the next
    `finish_writing` completes the renames: never a mix of old and new files."""
    make_folder(folder)
    finish_writing(folder)  # an earlier write's journal first: this one's replaces it
    moves: dict[str, str] = {}
    try:
        for name, write in writers.items():
            temporary = temporary_beside(folder / name)
            moves[temporary.name] = name
            write(temporary)
            _fsync(temporary)
        write_json(folder / JOURNAL, moves)
    except BaseException as err:
        for temporary in moves:
            (folder / temporary).unlink(missing_ok=True)
        if isinstance(err, ByolError) or _os_error_in(err) is None:
            raise
        raise write_failure(folder / next(iter(writers)), err) from None
    finish_writing(folder)


def finish_writing(folder: Path) -> None:
    """Complete the renames of a `write_together` that a crash interrupted after its journal."""
    try:
        moves = json.loads((folder / JOURNAL).read_text())
    except (OSError, ValueError):
        return
    for temporary, name in moves.items():
        if (folder / temporary).is_file() and TEMPORARY_TAG in temporary and "/" not in name + temporary:
            os.replace(folder / temporary, folder / name)
    (folder / JOURNAL).unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    write_with(path, lambda temporary: temporary.write_text(text, errors="backslashreplace"))


ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}  # in a name written as one line of a list


def name_line(name: str) -> str:
    """A file name as one line of a list byol writes (files.txt, labels.txt, skipped files): a
    backslash, newline or carriage return in it is written \\\\, \\n or \\r, so that line i is row i."""
    return "".join(ESCAPES.get(char, char) for char in name)


def name_from_line(line: str) -> str:
    """The file name a line of such a list stands for (`name_line` undone)."""
    unescaped = {escaped[1]: char for char, escaped in ESCAPES.items()}
    return re.sub(r"\\(.)", lambda found: unescaped.get(found[1], found[0]), line)


def names_text(names: Iterable[str]) -> str:
    return "".join(f"{name_line(name)}\n" for name in names)


def json_text(value: Any) -> str:
    return json.dumps(value, indent=1) + "\n"


def write_json(path: str | Path, value: Any) -> None:
    write_text(path, json_text(value))


def torch_writer(obj: Any) -> Callable[[Path], None]:
    """A writer of `obj` with torch.save through a Python file, so that a failed write keeps its OSError."""
    import torch

    def write(temporary: Path) -> None:
        with temporary.open("wb") as f:
            torch.save(obj, f)

    return write


def save_torch(obj: Any, path: str | Path) -> None:
    write_with(path, torch_writer(obj))


def remove_own_temporaries(folder: Path) -> None:
    """Delete the temporaries a killed write left in `folder` (never another file)."""
    for temporary in folder.glob(f".*{TEMPORARY_TAG}*.tmp"):
        if temporary.is_file():
            temporary.unlink()


def link_into_place(source: Path, path: Path) -> None:
    """`path` as a hard link to `source`, renamed into place (atomic, as `replacing` is); a
    filesystem without hard links is one ByolError."""
    with replacing(path) as link:
        link.unlink()  # the temporary's name, freed for the link
        os.link(source, link)


def keep_newest(folder: Path, pattern: str, keep: int) -> None:
    """Delete all but the `keep` last by name of the files in `folder` that `pattern` matches
    (a pattern only byol's own files match: its numbered checkpoints)."""
    for old in sorted(folder.glob(pattern))[:-keep]:
        old.unlink()


def remove_stale(folder: Path, pattern: str, current: set[str]) -> None:
    """Delete the files in `folder` that `pattern` matches and `current` does not name (a
    pattern only byol's own files match: the shards of an earlier, larger write)."""
    for old in folder.glob(pattern):
        if old.name not in current:
            old.unlink()


def marker_kind(folder: Path) -> str | None:
    try:
        return (folder / MARKER).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def claim_folder(folder: Path, kind: str, was_ours: Callable[[Path], bool] = lambda _: False) -> None:
    """Make `folder` byol's `kind` folder: it may be new, empty, already such a folder, or one
    that `was_ours` recognises (written by an older byol); anything else is the user's, and
    is refused before anything in it is touched."""
    if folder.exists() and not folder.is_dir():
        raise ByolError(f"{folder} is a file, not a folder: choose a new folder for the {kind}")
    kind_there = marker_kind(folder) if folder.is_dir() else None
    if kind_there not in (None, kind):
        raise ByolError(f"{folder} is a byol {kind_there} folder, not a {kind}: choose a new folder")
    if kind_there is None and folder.is_dir() and any(folder.iterdir()) and not was_ours(folder):
        raise ByolError(f"{folder} already holds files that byol did not write: choose a new or empty folder "
                        f"for the {kind} (byol never writes among your own files)")
    if kind_there is None:
        write_text(folder / MARKER, f"{kind}\n")


def refuse_foreign_file(path: Path, is_ours: Callable[[Path], bool], what: str) -> None:
    """Refuse to replace an existing file that byol did not write as `what`."""
    if path.is_dir():
        raise ByolError(f"{path} is a folder: name a file for the {what}")
    if path.exists() and not is_ours(path):
        raise ByolError(f"{path} exists and is not a {what} byol wrote: choose a new name (byol never replaces "
                        "files it did not write)")


def refuse_inside(output: Path, input_: Path, output_flag: str, input_flag: str) -> None:
    """An output folder may be neither the input folder nor inside it (its files would become input)."""
    out, source = output.expanduser().resolve(), input_.expanduser().resolve()
    if out == source or source in out.parents:
        raise ByolError(f"{output_flag} {output} is inside {input_flag} {input_}: byol would write among the "
                        f"images it reads; choose an {output_flag} outside it")


def _reason(err: BaseException) -> str:
    """The line of an exception's message that says what is wrong, short."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    telling = [line for line in lines if "unsupported" in line.lower() or "global" in line.lower()]
    reason = (telling or lines or [type(err).__name__])[0]
    return reason.split(" Please use")[0][:160]  # torch's advice there is to allow the code to run


def safe_load(path: str | Path, mmap: bool = False) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, no code. Anything
    that is not such a file (empty, text, an image, a truncated archive) is one ByolError.
    With `mmap`, tensors are read from the file's pages as they are used, pages that every
    process mapping the file shares."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ByolError(f"checkpoint {path} does not exist: pass a checkpoint file or a run folder")
    if path.stat().st_size == 0:
        raise ByolError(f"{path} is empty, not a checkpoint: pass the checkpoint.pt of a byol run folder")
    if not zipfile.is_zipfile(path):
        raise ByolError(f"{path} is not a PyTorch checkpoint (not a torch.save archive): pass the checkpoint.pt "
                        "of a byol run folder")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise ByolError(f"refused to load {path}: it holds pickled objects beyond tensors and plain data "
                        f"({_reason(err)}); only load checkpoints written by byol") from None
    except Exception as err:  # torch.load's errors on a damaged archive vary by version and damage
        raise ByolError(f"{path} is not a readable checkpoint ({_reason(err)}): pass the checkpoint.pt of a "
                        "byol run folder") from None
