"""Reading and writing versions: manifests checked against their folders, atomic publication."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from i2i._files import fsync_dir, sha256_file
from i2i.repository.layout import (
    _OLD,
    _TMP,
    MANIFEST,
    RepositoryError,
    _model_folder,
    _ranges,
    _repository_folder,
    list_models,
    versions,
)
from i2i.repository.locking import _clean_up, _fsync_tree, _locked, _publish
from i2i.repository.schema import validate_manifest

log = logging.getLogger(__name__)


def read_manifest(
    repository: str | os.PathLike[str],
    name: str,
    version: int | None = None,
    *,
    verify: bool = False,
) -> dict[str, Any]:
    """Read and check one version's manifest (the latest when `version` is None).

    Args:
        repository: the repository folder.
        name: the model's name (its folder).
        version: which version; default the latest.
        verify: also compare every artifact's sha256 with the manifest (reads every byte);
            without it only existence and size are checked.

    Raises:
        RepositoryError: the model or version does not exist (the message lists what does),
            the manifest is invalid or disagrees with its folder, or an artifact is missing
            or differs from what the manifest records.
    """
    root = _repository_folder(repository)
    found = versions(root, name)
    if not found:
        known = ", ".join(f"{m} (versions {_ranges(v)})" for m, v in list_models(root).items())
        raise RepositoryError(f"no model {name!r} in {root}; models there: {known or 'none'}")
    if version is None:
        version = found[-1]
    elif version not in found:
        raise RepositoryError(
            f"model {name!r} in {root} has no version {version}; versions: {_ranges(found)}"
        )
    folder = root / name / str(version)
    path = folder / MANIFEST
    manifest = _load_json(path)
    validate_manifest(manifest, source=str(path))
    if (manifest["name"], manifest["version"]) != (name, version):
        raise RepositoryError(
            f"{path} says name {manifest['name']!r} version {manifest['version']} but sits in "
            f"{name}/{version}: move the folder back or re-export it under this name"
        )
    problems = _artifact_problems(folder, manifest, verify)
    if problems:
        raise RepositoryError(
            f"{folder}: artifacts do not match {MANIFEST}:\n  "
            + "\n  ".join(problems)
            + "\nRestore the files or re-export this version."
        )
    return manifest


def _load_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RepositoryError(
            f"{path} is missing: every version folder needs one (was it written by i2i-export?)"
        ) from None
    except UnicodeDecodeError as exc:
        raise RepositoryError(f"{path} is not UTF-8 text: {exc}") from None
    try:
        loaded: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RepositoryError(
            f"{path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    return loaded


def _artifact_problems(folder: Path, manifest: Mapping[str, Any], verify: bool) -> list[str]:
    problems = []
    for artifact in manifest["artifacts"]:
        path = folder / artifact["file"]
        if not path.is_file():
            problems.append(f"{artifact['file']}: missing")
        elif (size := path.stat().st_size) != artifact["bytes"]:
            problems.append(
                f"{artifact['file']}: {size} bytes, the manifest says {artifact['bytes']}"
            )
        elif verify and (digest := sha256_file(path)) != artifact["sha256"]:
            problems.append(
                f"{artifact['file']}: sha256 {digest}, the manifest says {artifact['sha256']}"
            )
    return problems


def write_version(
    repository: str | os.PathLike[str],
    name: str,
    build: Callable[[Path], Mapping[str, Any]],
    version: int | None = None,
    force: bool = False,
) -> Path:
    """Publish a new version atomically; returns its folder.

    Under the model's lock: picks the version, makes a hidden temporary folder in
    `<repository>/<name>/`, calls `build(folder)`, validates the manifest it returns,
    checks every artifact against it (size and sha256), writes `manifest.json`, fsyncs
    and renames the folder into place. If anything fails or the process dies, no version
    appears; what a killed writer leaves is hidden and removed by the next writer.

    Args:
        repository: the repository folder (created if missing).
        name: the model's name: letters, digits, '_', '.', '-'.
        build: writes the artifacts into the folder it is given and returns the manifest;
            `name` and `version` may be left out (they are filled in) or must match.
        version: the version to write; default one more than the latest.
        force: replace `version` if it exists: the old folder is renamed aside, the new
            one renamed in, then the old one deleted.

    Raises:
        RepositoryError: the version exists (without `force`), or the manifest is invalid
            or disagrees with the files `build` wrote. Whatever `build` raises is re-raised
            after the temporary folder is removed.
    """
    model = _model_folder(repository, name)
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise RepositoryError(f"version {version!r} is not valid: versions are integers >= 1")
    try:
        model.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RepositoryError(f"{model} or a folder above it is a file, expected folders") from None
    with _locked(model):
        _clean_up(model)
        existing = versions(repository, name)
        if version is None:
            version = existing[-1] + 1 if existing else 1
        elif version in existing and not force:
            raise RepositoryError(
                f"{model / str(version)} already exists: pass force=True (i2i-export --force) "
                f"to replace it, or leave the version out to write version {existing[-1] + 1}"
            )
        final = model / str(version)
        tmp = model / f"{_TMP}{version}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            manifest = _complete(build(tmp), name, version)
            validate_manifest(manifest, source=f"manifest built for {name}/{version}")
            problems = _artifact_problems(tmp, manifest, verify=True)
            if problems:
                raise RepositoryError(
                    f"the files built for {name}/{version} do not match its manifest:\n  "
                    + "\n  ".join(problems)
                )
            (tmp / MANIFEST).write_bytes(_manifest_text(manifest))
            _fsync_tree(tmp)
            _publish(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("published %s", final)
    return final


def _complete(manifest: Any, name: str, version: int) -> dict[str, Any]:
    """The manifest with `name` and `version` filled in (early, for readability), or an error."""
    if not isinstance(manifest, Mapping):
        raise RepositoryError(
            f"build for {name}/{version} returned {type(manifest).__name__}, expected the "
            f"manifest dict"
        )
    for key, expected in (("name", name), ("version", version)):
        given = manifest.get(key, expected)
        if given != expected or type(given) is not type(expected):
            raise RepositoryError(
                f"the manifest built for {name}/{version} says {key} {given!r}, expected "
                f"{expected!r} (leave it out to have it filled in)"
            )
    head = {k: manifest[k] for k in ("format", "format_version") if k in manifest}
    return {**head, "name": name, "version": version, **manifest}


def add_artifacts(
    repository: str | os.PathLike[str],
    name: str,
    version: int,
    files: Mapping[str, str | os.PathLike[str]],
    artifacts: Sequence[Mapping[str, Any]],
    *,
    replace: Sequence[str] = (),
) -> dict[str, Any]:
    """Add artifacts made after publication (TensorRT engines) to a version, atomically.

    Under the model's writer lock: re-reads the manifest, copies each file into the version
    folder under a hidden name and checks it against its entry (size and sha256), validates
    the new manifest, moves the files to their names (which the manifest does not list yet)
    and replaces `manifest.json` with one rename. Readers, who take no lock, see the old
    manifest or the new one, each matching the files on disk (a reader that read the
    manifest just before a file in `replace` is swapped can find that file changed, as with
    `write_version(force=True)`). On any failure the old manifest and files are left as
    they were.

    Args:
        repository: the repository folder.
        name: the model's name.
        version: the published version to add to.
        files: file name inside the version folder -> the file to copy there; each the
            `file` of exactly one of `artifacts`.
        artifacts: the new manifest entries.
        replace: files whose entries (and files) the new ones replace, e.g. an engine
            rebuilt with --force. A listed file may be overwritten only if named here; while
            it is swapped, the manifest lists neither the old nor the new entry (readers
            then use the version's other artifacts).

    Returns:
        The new manifest.

    Raises:
        RepositoryError: the version does not exist or is broken, a file is already listed
            and not in `replace`, the new manifest is invalid, or a file does not match its
            entry. Nothing is changed.
    """
    model = _model_folder(repository, name)
    read_manifest(repository, name, version)  # its errors list what exists; no lock needed
    folder = model / str(version)
    with _locked(model):
        current = read_manifest(repository, name, version)
        original = (folder / MANIFEST).read_bytes()
        _clean_up_version(folder)
        dropped = set(replace)
        listed = {a["file"] for a in current["artifacts"]}
        unknown = sorted(dropped - listed)
        if unknown:
            raise RepositoryError(
                f"cannot replace {', '.join(unknown)}: {folder / MANIFEST} does not list it "
                f"(it lists {', '.join(sorted(listed))})"
            )
        taken = sorted((set(files) & listed) - dropped)
        if taken:
            raise RepositoryError(
                f"{folder / MANIFEST} already lists {', '.join(taken)}: name it in `replace` to "
                f"replace it"
            )
        kept = [a for a in current["artifacts"] if a["file"] not in dropped]
        added = [dict(a) for a in artifacts]
        new = {**current, "artifacts": kept + added}
        validate_manifest(new, source=f"{folder / MANIFEST} with the new artifacts")
        if sorted(a["file"] for a in added) != sorted(files):
            raise RepositoryError(
                f"the new artifacts name files {sorted(a['file'] for a in added)} but the files "
                f"given are {sorted(files)}: give each new artifact's file, once"
            )
        swapped = sorted(set(files) & listed)  # listed now and overwritten: out of the manifest
        staged: dict[str, Path] = {}
        placed: list[str] = []
        aside: dict[str, Path] = {}
        changed = False
        try:
            for file, source in files.items():
                staged[file] = folder / f"{_TMP}{file}-{secrets.token_hex(4)}"
                _copy_synced(Path(source), staged[file])
            renamed = [{**a, "file": staged[a["file"]].name} for a in added]
            problems = _artifact_problems(folder, {"artifacts": renamed}, verify=True)
            if problems:
                raise RepositoryError(
                    f"the files given for {name}/{version} do not match their artifacts:\n  "
                    + "\n  ".join(problems)
                )
            if swapped:
                interim = {**current, "artifacts": [a for a in kept if a["file"] not in swapped]}
                validate_manifest(interim, source=f"{folder / MANIFEST} while replacing files")
                _replace_manifest(folder, _manifest_text(interim))
                changed = True
                for file in swapped:
                    aside[file] = folder / f"{_OLD}{file}-{secrets.token_hex(4)}"
                    os.rename(folder / file, aside[file])
            for file, path in staged.items():
                os.replace(path, folder / file)
                placed.append(file)
            fsync_dir(folder)
            _replace_manifest(folder, _manifest_text(new))
        except BaseException:
            for file in placed:
                (folder / file).unlink(missing_ok=True)
            for path in staged.values():
                path.unlink(missing_ok=True)
            for file, path in aside.items():
                os.rename(path, folder / file)
            if changed:
                _replace_manifest(folder, original)
            raise
        stale = [folder / a["file"] for a in current["artifacts"] if a["file"] in dropped]
        for path in [*aside.values(), *(p for p in stale if p.name not in files)]:
            with contextlib.suppress(OSError):
                path.unlink()
    log.info("added %s to %s", ", ".join(sorted(files)), folder)
    return new


def _clean_up_version(folder: Path) -> None:
    """Remove hidden files a killed `add_artifacts` left; the manifest never lists them."""
    for path in folder.iterdir():
        if path.name.startswith((_TMP, _OLD)) and path.is_file():
            path.unlink()
            log.warning("removed %s, left by an interrupted write", path)


def _copy_synced(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    with open(target, "rb") as f:
        os.fsync(f.fileno())


def _manifest_text(manifest: Mapping[str, Any]) -> bytes:
    text = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return text.encode("utf-8")


def _replace_manifest(folder: Path, data: bytes) -> None:
    """Write `manifest.json` by one rename, so a reader sees the old bytes or the new."""
    tmp = folder / f"{_TMP}{MANIFEST}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / MANIFEST)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(folder)
