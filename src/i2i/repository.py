"""Contract 2: the model repository, where export writes and serving reads.

The layout follows Triton's model repository::

    <repository>/<name>/<version>/manifest.json
                                 A2B.onnx, A2B.fp16.onnx, A2B.<gpu>.plan, ...

Versions are positive integers (folders "1", "2", ...). The manifest, whose JSON Schema
ships as `i2i/schemas/manifest.schema.json`, is the only file a server reads to know a
model: family, domains, directions, artifacts, their parity.

Publication is atomic: `write_version` builds a version in a hidden temporary folder inside
`<repository>/<name>/` and renames it into place only once its manifest is valid and every
artifact is on disk, so readers never see a half-written version. Hidden entries (`.tmp-*`,
`.old-*`, `.lock`) are never versions; the next writer cleans up what a killed one left.
Writers of one model are serialised by `fcntl.flock` on `<repository>/<name>/.lock` (POSIX);
readers take no lock. `add_artifacts` adds files made later (TensorRT engines built on the
serving GPU) to a published version under the same lock: readers see its old manifest or
its new one.

A contract module: imports only the standard library and jsonschema.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from i2i._files import fsync_dir, sha256_file
from i2i.shapes import ShapeRule

log = logging.getLogger(__name__)

FORMAT = "i2i.manifest"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
_TMP = ".tmp-"
_OLD = ".old-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION = re.compile(r"^[1-9][0-9]*$")  # "01" is not a version: one folder per number
_MAX_ERRORS = 10

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "RepositoryError",
    "add_artifacts",
    "engine_differences",
    "format_manifest",
    "format_models_table",
    "gpu_slug",
    "list_models",
    "load_schema",
    "next_version",
    "read_manifest",
    "sha256_file",
    "validate_manifest",
    "version_folder",
    "versions",
    "write_version",
]


class RepositoryError(ValueError):
    """A repository, model, version, manifest or artifact is missing or not as expected."""


# --- TensorRT engines: what one is tied to ---------------------------------------------


def gpu_slug(gpu_name: str) -> str:
    """A GPU's name as plan file names spell it: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    return re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")


def engine_differences(
    artifact: Mapping[str, Any], gpu: str, compute_capability: str, tensorrt_version: str
) -> list[str]:
    """Why a TensorRT artifact cannot run on this GPU and TensorRT ([] when it can).

    A plan runs only on the GPU type (name and compute capability) and the TensorRT version
    that built it; the manifest's `tensorrt` entry records all three (names compared as
    `gpu_slug` spells them).
    """
    info = artifact.get("tensorrt")
    if artifact.get("format") != "tensorrt" or not isinstance(info, Mapping):
        raise ValueError(f"{artifact.get('file')}: not a TensorRT artifact (no 'tensorrt' entry)")
    reasons = []
    if gpu_slug(str(info["gpu"])) != gpu_slug(gpu):
        reasons.append(f"built on GPU {info['gpu']!r}, this GPU is {gpu!r}")
    if str(info["compute_capability"]) != compute_capability:
        reasons.append(
            f"built for compute capability {info['compute_capability']}, this GPU has "
            f"{compute_capability}"
        )
    if str(info["version"]).strip() != tensorrt_version.strip():
        reasons.append(
            f"built with TensorRT {info['version']}, this is TensorRT {tensorrt_version}"
        )
    return reasons


# --- the manifest -------------------------------------------------------------------------


def load_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (draft 2020-12), read from the package data."""
    text = resources.files("i2i.schemas").joinpath("manifest.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    return jsonschema.Draft202012Validator(load_schema())


def validate_manifest(manifest: Mapping[str, Any], source: str = "manifest") -> None:
    """Raise RepositoryError, naming `source` and each offending JSON path, unless valid.

    Checks the schema, then what it cannot express: every artifact's direction exists,
    artifact files are unique, a fixed size is a multiple of `multiple_of`, and every
    number is finite (JSON has no NaN or infinity).
    """
    if not isinstance(manifest, Mapping):
        raise RepositoryError(f"{source}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise RepositoryError(
            f"{source}: not an i2i manifest (format {manifest.get('format')!r}, "
            f"expected {FORMAT!r})"
        )
    found = manifest.get("format_version")
    if isinstance(found, int) and not isinstance(found, bool) and found > FORMAT_VERSION:
        raise RepositoryError(
            f"{source}: format_version {found} was written by a newer i2i; this one reads "
            f"format_version {FORMAT_VERSION}: upgrade i2i"
        )
    lines: list[str] = []
    for error in _validator().iter_errors(manifest):
        lines.extend(_describe(error))
    if not lines:
        lines = _cross_check(manifest)
    if lines:
        lines = sorted(dict.fromkeys(lines))
        more = len(lines) - _MAX_ERRORS
        shown = lines[:_MAX_ERRORS] + ([f"... and {more} more"] if more > 0 else [])
        raise RepositoryError(f"{source} is not valid:\n  " + "\n  ".join(shown))


def _child(path: str, key: object) -> str:
    return f"{path}.{key}" if isinstance(key, str) and _NAME.match(key) else f"{path}[{key!r}]"


def _describe(error: Any) -> list[str]:
    """jsonschema's error as lines `$.json.path: what is wrong`."""
    path, kind, instance = error.json_path, error.validator, error.instance
    if kind == "required":
        return [f"{_child(path, k)}: missing" for k in error.validator_value if k not in instance]
    if kind == "additionalProperties" and isinstance(instance, Mapping):
        allowed = sorted(error.schema.get("properties", {}))
        return [
            f"{_child(path, k)}: unexpected key (allowed here: {', '.join(allowed)})"
            for k in instance
            if k not in allowed
        ]
    if kind is None:  # a `false` schema
        return [f"{path}: not allowed here"]
    if kind == "const":
        return [f"{path}: expected {error.validator_value!r}, got {instance!r}"]
    if kind == "not":
        return [f"{path}: not allowed here ({error.schema.get('description', 'see the schema')})"]
    if kind == "pattern" and "description" in error.schema:
        return [f"{path}: {instance!r} is not valid: expected {error.schema['description']}"]
    message = error.message if len(error.message) <= 300 else error.message[:300] + "..."
    return [f"{path}: {message}"]


def _cross_check(manifest: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    directions = manifest["directions"]
    files: dict[str, int] = {}
    for i, artifact in enumerate(manifest["artifacts"]):
        if artifact["direction"] not in directions:
            lines.append(
                f"$.artifacts[{i}].direction: {artifact['direction']!r} is not a direction of "
                f"this manifest (directions: {', '.join(directions)})"
            )
        first = files.setdefault(artifact["file"], i)
        if first != i:
            lines.append(
                f"$.artifacts[{i}].file: {artifact['file']!r} is already the file of "
                f"$.artifacts[{first}]"
            )
    for direction, spec in directions.items():
        try:
            ShapeRule.from_manifest(spec["shape_rule"])
        except ValueError as exc:
            lines.append(f"{_child(_child('$.directions', direction), 'shape_rule')}: {exc}")
    lines.extend(_non_finite(manifest, "$"))
    return lines


def _non_finite(value: Any, path: str) -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path}: {value} is not a finite number (JSON cannot hold it)"]
    if isinstance(value, Mapping):
        return [line for k, v in value.items() for line in _non_finite(v, _child(path, k))]
    if isinstance(value, list):
        return [line for i, v in enumerate(value) for line in _non_finite(v, f"{path}[{i}]")]
    return []


# --- reading ------------------------------------------------------------------------------


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


# --- writing ------------------------------------------------------------------------------


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


@contextlib.contextmanager
def _locked(model: Path) -> Iterator[None]:
    """Hold the model's writer lock; released by the kernel if the process dies."""
    import fcntl  # here, not at the top: reading a repository needs no POSIX

    with open(model / LOCK, "a+b") as lock:
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


# --- what `i2i models list` and `i2i models show` print -----------------------------------

_PARITY_HEADER = ("vs", "max diff", ">1 level", "PSNR dB")


def format_models_table(repository: str | os.PathLike[str]) -> str:
    """Every model with its versions, family and the artifacts and parity of its latest version."""
    models = list_models(repository)
    if not models:
        return f"no models in {repository}"
    rows: list[Sequence[str]] = [
        ("model", "versions", "family", "direction", "artifact", "precision", *_PARITY_HEADER)
    ]
    problems = []
    for name, found in models.items():
        try:
            manifest = read_manifest(repository, name)
        except RepositoryError as exc:
            rows.append((name, _ranges(found), "?", "", "(unreadable, see below)"))
            problems.append(f"{name} version {found[-1]}: {exc}")
            continue
        for i, artifact in enumerate(manifest["artifacts"]):
            first = (name, _ranges(found), manifest["family"]) if i == 0 else ("", "", "")
            rows.append(
                (*first, artifact["direction"], artifact["file"], _precision(artifact))
                + _parity_cells(artifact["parity"])
            )
    text = _table(rows, right={7, 8, 9}) + "\n(artifacts and parity of the latest version)"
    if problems:
        text += "\n\nunreadable:\n" + "\n".join(problems)
    return text


def format_manifest(manifest: Mapping[str, Any]) -> str:
    """One version's manifest, readable: what it translates, from what, and how well."""
    source = manifest["source"]
    lines = [
        f"{manifest['name']} version {manifest['version']}",
        f"  family     {manifest['family']} (domains {', '.join(manifest['domains'])})",
        f"  created    {manifest['created']} by i2i {manifest['i2i_version']}",
        f"  source     {source['checkpoint']} (step {source['step']}, "
        f"sha256 {source['sha256'][:12]}...)",
        "directions",
    ]
    for direction, spec in manifest["directions"].items():
        sizes = ShapeRule.from_manifest(spec["shape_rule"]).describe()
        lines.append(f"  {direction}  {_tensor(spec['input'])} -> {_tensor(spec['output'])}")
        if spec["style"] is not None:
            lines.append(f"  {' ' * len(direction)}  style {_tensor(spec['style'])}")
        lines.append(f"  {' ' * len(direction)}  sizes: {sizes}")
    rows: list[Sequence[str]] = [
        ("artifact", "direction", "precision", "size", "built with", *_PARITY_HEADER)
    ]
    engines = []
    for artifact in manifest["artifacts"]:
        trt = artifact.get("tensorrt")
        built = f"opset {artifact['opset']}" if "opset" in artifact else ""
        if trt is not None:
            built = f"TensorRT {trt['version']}"
            shapes = "; ".join(
                " .. ".join("x".join(map(str, p[k])) for k in ("min", "opt", "max"))
                for p in trt["profiles"]
            )
            engines.append(
                f"  {artifact['file']}: {trt['gpu']} (compute capability "
                f"{trt['compute_capability']}), shapes min .. opt .. max: {shapes}"
            )
        rows.append(
            (artifact["file"], artifact["direction"], _precision(artifact))
            + (_size(artifact["bytes"]), built)
            + _parity_cells(artifact["parity"])
        )
    lines += ["artifacts", _indent(_table(rows, right={3, 6, 7, 8}))]
    if engines:
        lines += ["TensorRT engines run only on this GPU type and TensorRT version:", *engines]
    return "\n".join(lines)


def _precision(artifact: Mapping[str, Any]) -> str:
    return f"{artifact['format']} {artifact['precision']}"


def _parity_cells(parity: Mapping[str, Any]) -> tuple[str, ...]:
    psnr = parity["psnr"]
    return (
        str(parity["reference"]),
        f"{parity['max_abs_diff']:g}",
        f"{100 * parity['fraction_over_1']:.3f}%",
        "inf" if psnr is None else f"{psnr:.1f}",  # null: identical outputs
    )


def _tensor(spec: Mapping[str, Any]) -> str:
    return f"{spec['name']} {spec['dtype']} [{', '.join(map(str, spec['shape']))}]"


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    scaled = float(n)
    for unit in ("KB", "MB", "GB"):
        scaled /= 1000
        if scaled < 1000 or unit == "GB":
            break
    return f"{scaled:.1f} {unit}"


def _ranges(numbers: Sequence[int]) -> str:
    """[1, 2, 3, 5] -> "1-3, 5"."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _table(rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    )


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
