"""Translate image files into a folder: finding inputs, naming outputs, running, reporting.

The engine of `i2i translate`. It knows nothing of where translations come from: it calls
`translate_one(file_bytes) -> [output_bytes, ...]`, a server's client or a local model.
"""

from __future__ import annotations

import collections
import glob
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
# The file extension written for each output format.
FORMAT_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}

TranslateOne = Callable[[bytes], list[bytes]]


class InputError(ValueError):
    """The inputs or outputs of a translation cannot work as given (nothing was translated)."""


@dataclass(frozen=True)
class Job:
    """One input file and the outputs it becomes (one per sample)."""

    source: Path
    outputs: tuple[Path, ...]


@dataclass(frozen=True)
class Failure:
    """An input that could not be translated: the status code's name and the message."""

    source: Path
    code: str
    message: str


@dataclass
class Summary:
    """What a run did: counts, failures, mean latency of the successful translations."""

    translated: int = 0
    written: int = 0
    failures: list[Failure] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def mean_latency_ms(self) -> float:
        return sum(self.latencies_ms) / len(self.latencies_ms) if self.latencies_ms else 0.0


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def collect_inputs(inputs: Sequence[str], *, recursive: bool = False) -> list[Path]:
    """The image files that files, folders and glob patterns name, each once, in order.

    A file is taken as named (whatever its extension); a folder gives the png, jpg, jpeg and
    webp files in it (in subfolders too when `recursive`), sorted; a pattern gives the
    image files it matches (`**` crosses folders when `recursive`).

    Raises:
        InputError: an input that does not exist or gives no images.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            images = sorted(p for p in candidates if _is_image(p))
            if not images:
                where = " or its subfolders" if recursive else " (add --recursive for subfolders)"
                raise InputError(f"{item}: no png, jpg, jpeg or webp images in this folder{where}")
        elif path.is_file():
            images = [path]
        elif glob.has_magic(item):
            images = sorted(
                p for p in map(Path, glob.glob(item, recursive=recursive)) if _is_image(p)
            )
            if not images:
                raise InputError(f"{item}: the pattern matches no png, jpg, jpeg or webp images")
        else:
            raise InputError(f"{item}: no such file or folder")
        found.extend(images)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    if not unique:
        raise InputError("no input images given")
    return list(unique.values())


def plan_outputs(
    sources: Sequence[Path], out: Path, *, extension: str, num_samples: int = 1
) -> list[Job]:
    """Name every output: `<out>/<stem>.<ext>`, or `<stem>_<k>.<ext>` (k from 0) per sample.

    Inputs sharing a stem (from different folders) keep their folders relative to the
    inputs' common folder under `out`, for every input; two that still clash (`x.png` and
    `x.jpg` side by side) get their own extension added to the stem (`x_png.png`, `x_jpg.png`).

    Raises:
        InputError: two inputs would still write the same file.
    """
    stems = [s.stem.casefold() for s in sources]
    mirror = len(set(stems)) < len(stems)
    base = Path(os.path.commonpath([s.resolve().parent for s in sources])) if mirror else None
    folders = [out / s.resolve().parent.relative_to(base) if base else out for s in sources]
    keys = [(str(f).casefold(), s.stem.casefold()) for f, s in zip(folders, sources, strict=True)]
    counts = collections.Counter(keys)
    jobs: list[Job] = []
    taken: dict[str, Path] = {}
    for source, folder, key in zip(sources, folders, keys, strict=True):
        stem = source.stem
        if counts[key] > 1:
            stem = f"{stem}_{source.suffix.lstrip('.').lower()}"
        if num_samples == 1:
            outputs: tuple[Path, ...] = (folder / f"{stem}.{extension}",)
        else:
            outputs = tuple(folder / f"{stem}_{k}.{extension}" for k in range(num_samples))
        for output in outputs:
            other = taken.setdefault(str(output).casefold(), source)
            if other != source:
                raise InputError(f"{other} and {source} would both be written to {output}")
        jobs.append(Job(source, outputs))
    return jobs


def check_overwrite(jobs: Sequence[Job]) -> None:
    """Refuse, before anything is translated, if any output exists (InputError)."""
    existing = [o for job in jobs for o in job.outputs if o.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise InputError(
            f"{existing[0]} exists{more}; pass --overwrite to replace, or choose another --out"
        )


def _describe(exc: BaseException) -> tuple[str, str]:
    """(code, message) of a failure: a gRPC status code's name where the error has one."""
    code = getattr(exc, "code", None)
    name = getattr(code, "name", None)
    message = getattr(exc, "details", None) or getattr(exc, "message", None) or str(exc)
    return (name if isinstance(name, str) else type(exc).__name__), str(message)


def _write(path: Path, data: bytes) -> None:
    """Write through a temporary file, so an interrupted run never leaves half an image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    partial.write_bytes(data)
    os.replace(partial, path)


def _run_one(job: Job, translate_one: TranslateOne) -> float:
    """Translate one file and write its outputs; returns the translation's latency in ms."""
    data = job.source.read_bytes()
    start = time.perf_counter()
    images = translate_one(data)
    latency_ms = (time.perf_counter() - start) * 1000
    if len(images) != len(job.outputs):
        raise RuntimeError(f"expected {len(job.outputs)} output images, got {len(images)}")
    for output, image in zip(job.outputs, images, strict=True):
        _write(output, image)
    return latency_ms


def translate_files(
    jobs: Sequence[Job],
    translate_one: TranslateOne,
    *,
    concurrency: int = 1,
    progress: bool = True,
) -> Summary:
    """Translate every job's file and write its outputs; a failure does not stop the others.

    Args:
        jobs: from `plan_outputs` (checked with `check_overwrite` first, if wanted).
        translate_one: a file's bytes to its output files' bytes, one per sample; raises on
            failure (an error with a gRPC `.code` is reported by its code's name).
        concurrency: how many files are in flight at once (threads).
        progress: show a progress bar on stderr.
    """
    summary = Summary()
    start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
    try:
        with tqdm(total=len(jobs), unit="img", file=sys.stderr, disable=not progress) as bar:
            futures = {pool.submit(_run_one, job, translate_one): job for job in jobs}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    summary.latencies_ms.append(future.result())
                except Exception as exc:  # reported per file at the end; the others go on
                    code, message = _describe(exc)
                    log.debug("%s failed", job.source, exc_info=True)
                    summary.failures.append(Failure(job.source, code, message))
                else:
                    summary.translated += 1
                    summary.written += len(job.outputs)
                bar.update()
    finally:
        # On Ctrl-C, files not started yet are dropped instead of waited for.
        pool.shutdown(wait=True, cancel_futures=True)
    summary.failures.sort(key=lambda f: str(f.source))
    summary.seconds = time.perf_counter() - start
    return summary


def format_summary(summary: Summary, out: Path) -> str:
    """One line for the person who ran the command."""
    total = summary.translated + len(summary.failures)
    return (
        f"translated {summary.translated} of {total} images into {out} "
        f"({summary.written} files written, {len(summary.failures)} failed) in "
        f"{summary.seconds:.1f} s; mean latency {summary.mean_latency_ms:.1f} ms per image"
    )


def format_failures(summary: Summary) -> str:
    """One line per failed input: its path, the status code and the message."""
    return "\n".join(f"failed: {f.source}: {f.code}: {f.message}" for f in summary.failures)
