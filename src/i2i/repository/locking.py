"""Writers of one model take turns (a file lock), publish by rename, clean up after crashes."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from i2i._files import fsync_dir
from i2i.repository.layout import _OLD, _TMP, _VERSION, LOCK

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _locked(model: Path, name: str = LOCK) -> Iterator[None]:
    """Hold the model's writer lock (the file `name` in `model`); released by the kernel if
    the process dies."""
    import fcntl  # here, not at the top: reading a repository needs no POSIX

    with open(model / name, "a+b") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another writer of %s (%s)", model.name, model / LOCK)
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _clean_up(model: Path) -> None:
    """Remove what killed writers left; safe because the caller holds the lock."""
    with os.scandir(model) as entries:
        names = sorted(e.name for e in entries if e.name.startswith((_TMP, _OLD)))
    for entry in names:
        path = model / entry
        number = entry[len(_OLD) :].split("-", 1)[0]
        if entry.startswith(_OLD) and _VERSION.match(number) and not (model / number).exists():
            # Killed between moving the old version aside and moving the new one in.
            os.rename(path, model / number)
            log.warning("restored %s/%s, left aside by an interrupted replacement", model, number)
        else:
            shutil.rmtree(path, ignore_errors=True)
            log.warning("removed %s, left by an interrupted write", path)


def _publish(tmp: Path, final: Path) -> None:
    if final.exists():  # only with force: the caller refused otherwise
        aside = final.parent / f"{_OLD}{final.name}-{secrets.token_hex(4)}"
        os.rename(final, aside)
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(aside, final)
            raise
        fsync_dir(final.parent)
        shutil.rmtree(aside, ignore_errors=True)  # if it stays, the next writer removes it
    else:
        os.rename(tmp, final)
        fsync_dir(final.parent)


def _fsync_tree(folder: Path) -> None:
    """Flush every file `build` wrote, so a published version survives a power cut."""
    for parent, _, files in os.walk(folder):
        for file in files:
            with open(os.path.join(parent, file), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(parent))
