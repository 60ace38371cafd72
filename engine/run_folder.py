"""One training process per run folder.

Two runs writing `last.pt` into one folder would overwrite each other's
checkpoints, so a run holds an exclusive lock on `<out>/.lock` while it
trains. The operating system drops the lock when the process ends, however
it ends, so a kill -9 leaves no stale lock. Holding the lock also makes it
safe to delete the temporary files that a killed run left mid-write: no
other process can be writing them.
"""

import logging
import os
from contextlib import contextmanager
from pathlib import Path

from engine.errors import PixelCNNError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


@contextmanager
def hold_run_folder(out: str | os.PathLike, create: bool = True):
    """Locks `out` for this process, removes leftover temporary files, yields the folder.

    With `create` false (a resume) a missing folder is an error rather than made.
    """
    out = Path(out)
    if not create and not out.is_dir():
        raise PixelCNNError(f"{out} does not exist, so there is no run to resume; check --out.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        stream = open(out / LOCK_NAME, "a+b")  # noqa: SIM115 - held for the whole run
    except OSError as error:
        raise PixelCNNError(
            f"run folder {out} could not be made ({error}); choose another --out."
        ) from error
    try:
        if not try_lock(stream):
            raise PixelCNNError(
                f"another training process is using {out}; wait for it to finish, stop it, "
                "or choose another --out."
            )
        remove_leftovers(out)
        yield out
    finally:
        # closing the file releases the lock
        stream.close()


def remove_leftovers(out: Path):
    """Deletes the `<name>.pt.<random>.tmp` files of writes that never finished."""
    for leftover in sorted(out.glob("*.pt.*.tmp")):
        try:
            leftover.unlink()
        except OSError as error:
            log.warning("could not remove %s left by an interrupted save: %s", leftover, error)
        else:
            log.info("removed %s, left by a save that was interrupted", leftover.name)


if os.name == "nt":
    import msvcrt

    def try_lock(stream) -> bool:
        # Windows locks byte ranges: the first byte stands for the folder
        stream.seek(0)
        try:
            msvcrt.locking(stream.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def try_lock(stream) -> bool:
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
