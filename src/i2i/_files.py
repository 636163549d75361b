"""Small file helpers shared by the contract modules (checkpoints, repositories)."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# atomic_write's temporary files are `.<target name>.<8 random characters>.tmp`, the random
# part drawn by tempfile.mkstemp from lower-case letters, digits and "_".
_TEMPORARY = r"\.(?:{targets})\.[a-z0-9_]{{8}}\.tmp"


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk, where the OS allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Create or replace `path` atomically: `write` fills a temporary file beside it, which is
    fsynced and renamed over `path`, so readers see the old file or the new one, never half.

    A process killed mid-write leaves its temporary file behind (`.<name>.<random>.tmp`);
    `remove_temporary_files` removes such leftovers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def temporary_file_pattern(targets: str) -> re.Pattern[str]:
    """The names of atomic_write's temporary files for targets whose names match `targets`.

    Args:
        targets: a regular expression for the target file names, e.g. r"latest\\.pt".
    """
    return re.compile(_TEMPORARY.format(targets=targets))


def remove_temporary_files(folder: Path, targets: str) -> list[tuple[Path, int]]:
    """Delete the temporary files interrupted atomic_write calls left in `folder` for targets
    named like `targets` (a regular expression); returns each removed file with its size.

    Only regular files whose whole name fits the pattern are touched: never other files,
    links, folders or anything in subfolders.
    """
    pattern = temporary_file_pattern(targets)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for entry in sorted(entries, key=lambda e: e.name):
        if not pattern.fullmatch(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                continue
            os.unlink(entry.path)
        except FileNotFoundError:  # another process removed it meanwhile
            continue
        removed.append((Path(entry.path), info.st_size))
    return removed


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
