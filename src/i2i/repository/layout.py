"""The repository's layout on disk: names, version folders, and the error they raise."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)


MANIFEST = "manifest.json"
LOCK = ".lock"
_TMP = ".tmp-"
_OLD = ".old-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION = re.compile(r"^[1-9][0-9]*$")  # "01" is not a version: one folder per number


class RepositoryError(ValueError):
    """A repository, model, version, manifest or artifact is missing or not as expected."""


def _model_folder(repository: str | os.PathLike[str], name: str) -> Path:
    if not isinstance(name, str) or not _NAME.match(name):
        raise RepositoryError(
            f"model name {name!r} is not valid: use letters, digits, '_', '.' and '-', "
            f"starting with a letter or digit"
        )
    return Path(repository) / name


def version_folder(repository: str | os.PathLike[str], name: str, version: int) -> Path:
    """`<repository>/<name>/<version>`, whether or not it exists."""
    return _model_folder(repository, name) / str(version)


def versions(repository: str | os.PathLike[str], name: str) -> list[int]:
    """The published versions of a model, ascending; [] when it has none or no folder.

    Only folders named by a positive integer count; hidden entries (temporary folders of
    running or killed writers, the lock) and anything else are ignored.
    """
    folder = _model_folder(repository, name)
    try:
        with os.scandir(folder) as entries:
            return sorted(int(e.name) for e in entries if _VERSION.match(e.name) and e.is_dir())
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise RepositoryError(f"{folder} is a file, expected a model folder") from None


def next_version(repository: str | os.PathLike[str], name: str) -> int:
    """One more than the latest version, or 1 (`write_version` decides again under its lock)."""
    found = versions(repository, name)
    return found[-1] + 1 if found else 1


def list_models(repository: str | os.PathLike[str]) -> dict[str, list[int]]:
    """Every model with at least one published version, by name, with its versions."""
    root = _repository_folder(repository)
    with os.scandir(root) as entries:
        names = sorted(e.name for e in entries if e.is_dir() and _NAME.match(e.name))
    return {name: found for name in names if (found := versions(root, name))}


def _repository_folder(repository: str | os.PathLike[str]) -> Path:
    root = Path(repository)
    if not root.is_dir():
        raise RepositoryError(f"model repository {root} does not exist or is not a folder")
    return root


def _ranges(numbers: Sequence[int]) -> str:
    """[1, 2, 3, 5] -> "1-3, 5"."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
