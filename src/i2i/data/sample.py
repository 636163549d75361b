"""Built-in sample datasets whose true translation is known, made without any download.

Images are random crops of the colour photos that ship inside scikit-image's package
folder (read with Pillow; skimage itself is never imported) and of procedurally drawn
images. Each task renders a source crop into domain A and into domain B with a known,
per-pixel function, so the true translation of every test image is kept in `truth/`
and models can be scored with PSNR/SSIM instead of by eye.

The source photos (and procedural seeds) are partitioned between trainA, trainB and the
test split: the two training domains never show the same scene, as in a real unpaired
dataset, and the test images come from scenes seen in neither.

    <out>/trainA/  trainB/  testA/  testB/       the unaligned layout UnalignedDataset reads
    <out>/truth/A2B/<name of a testA file>       the true domain-B rendering of that image
    <out>/truth/B2A/<name of a testB file>       the true domain-A rendering of that image
    <out>/dataset.json                           task, seed, counts, sources (see below)
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image

from i2i.data.folders import DataError

FORMAT = "i2i.sample_dataset"
FORMAT_VERSION = 1

# scikit-image's colour photos. A group is one scene and always lands in a single split
# (the two motorcycle photos are a stereo pair of the same scene).
PHOTO_GROUPS: tuple[tuple[str, ...], ...] = (
    ("astronaut.png",),
    ("chelsea.png",),
    ("coffee.png",),
    ("color.png",),
    ("hubble_deep_field.jpg",),
    ("ihc.png",),
    ("motorcycle_left.png", "motorcycle_right.png"),
    ("retina.jpg",),
    ("rocket.jpg",),
)
SPLITS = ("trainA", "trainB", "test")
PROCEDURAL_PER_SPLIT = 4
PROCEDURAL_FRACTION = 0.25  # share of a split's crops taken from procedural images
PROCEDURAL_SIDE = 256
CROP_SCALE = (0.15, 0.6)  # crop side as a fraction of the source's short side

# Independent random streams: default_rng([seed, stream, ...]).
_PARTITION_STREAM, _PROCEDURAL_STREAM, _CROP_STREAM = 0, 1, 2
_FOLDERS = ("trainA", "trainB", "testA", "testB")

# The dusk grade: y = lift + (gain - lift) * x**gamma per channel (x, y in [0, 1]); strictly
# increasing in x, so it is invertible. Darker, warmer highlights, bluish lifted shadows.
_DUSK_LIFT = np.array([0.03, 0.01, 0.06])
_DUSK_GAIN = np.array([0.92, 0.58, 0.40])
_DUSK_GAMMA = np.array([1.3, 1.7, 2.1])
_LUMA_601 = np.array([0.299, 0.587, 0.114])


def dusk_grade(rgb: np.ndarray) -> np.ndarray:
    """The day2dusk colour grading of uint8 RGB pixels (..., 3): a per-channel tone curve."""
    levels = np.arange(256, dtype=np.float64)[:, None] / 255.0  # (256, 1)
    curve = _DUSK_LIFT + (_DUSK_GAIN - _DUSK_LIFT) * levels**_DUSK_GAMMA  # (256, 3)
    lut = np.rint(curve * 255.0).astype(np.uint8)
    return np.stack([lut[rgb[..., c], c] for c in range(3)], axis=-1)


def gray3(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of uint8 RGB pixels (..., 3), rounded, repeated into R = G = B."""
    luma = np.rint(rgb.astype(np.float64) @ _LUMA_601).astype(np.uint8)
    return np.repeat(luma[..., None], 3, axis=-1)


def _identity(rgb: np.ndarray) -> np.ndarray:
    return rgb


@dataclass(frozen=True)
class SampleTask:
    """A translation with a known answer: how a source crop looks in domain A and in B."""

    name: str
    domains: tuple[str, str]
    description: str
    directions: Mapping[str, str]
    render_a: Callable[[np.ndarray], np.ndarray]
    render_b: Callable[[np.ndarray], np.ndarray]


SAMPLE_TASKS: Mapping[str, SampleTask] = MappingProxyType(
    {
        "day2dusk": SampleTask(
            name="day2dusk",
            domains=("day", "dusk"),
            description=(
                "Photos (A) and photos colour-graded toward a warm, dark dusk (B) by a fixed, "
                "strictly increasing per-channel tone curve (gain, gamma, shadow lift)."
            ),
            directions={
                "A2B": "apply the dusk grade (i2i.data.sample.dusk_grade)",
                "B2A": "undo the dusk grade (truth: the ungraded source crop)",
            },
            render_a=_identity,
            render_b=dusk_grade,
        ),
        "gray2color": SampleTask(
            name="gray2color",
            domains=("gray", "color"),
            description=(
                "Grayscale photos stored as RGB with R = G = B (ITU-R 601 luma, rounded) (A) "
                "and colour photos (B)."
            ),
            directions={
                "A2B": "colourise (truth: the colour source crop)",
                "B2A": "convert to grayscale (i2i.data.sample.gray3)",
            },
            render_a=gray3,
            render_b=_identity,
        ),
    }
)


def sample_task_names() -> list[str]:
    """The names of the built-in sample tasks."""
    return list(SAMPLE_TASKS)


def make_sample_dataset(
    task: str,
    out: str | os.PathLike[str],
    seed: int = 0,
    size: int = 64,
    n_train: int = 200,
    n_test: int = 24,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the sample dataset `task` to `out` and return its description (dataset.json).

    The same arguments give byte-identical files.

    Args:
        task: one of `sample_task_names()`.
        out: the dataset folder (created if needed).
        seed: chooses the partition of sources, the crops and the procedural images.
        size: the side of the square images, in pixels.
        n_train: images in each of trainA and trainB.
        n_test: images in each of testA and testB (and so in truth/A2B and truth/B2A).
        overwrite: replace a dataset already in `out` (otherwise that is an error).

    Raises:
        ValueError: unknown task or bad sizes or counts.
        FileExistsError: `out` already holds a dataset and `overwrite` is False.
        ModuleNotFoundError: scikit-image (the source of the photos) is not installed.
    """
    if task not in SAMPLE_TASKS:
        raise ValueError(f"unknown sample task {task!r}; known tasks: {', '.join(SAMPLE_TASKS)}")
    checks = (("seed", seed, 0), ("size", size, 8), ("n_train", n_train, 1), ("n_test", n_test, 1))
    for name, value, least in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    spec = SAMPLE_TASKS[task]
    out = Path(out)
    _prepare_folder(out, overwrite)

    photo_dir = photo_folder()
    partition = _partition_sources(seed)
    images = _load_sources(photo_dir, partition, seed)
    counts = {"trainA": n_train, "trainB": n_train, "testA": n_test, "testB": n_test}
    files: dict[str, dict[str, str]] = {}
    for index, folder in enumerate(_FOLDERS):
        split = folder if folder.startswith("train") else "test"
        domain = 0 if folder.endswith("A") else 1
        own, other = (
            (spec.render_a, spec.render_b) if domain == 0 else (spec.render_b, spec.render_a)
        )
        truth_dir = out / "truth" / ("A2B" if domain == 0 else "B2A")
        rng = np.random.default_rng([seed, _CROP_STREAM, index])
        width = max(4, len(str(counts[folder] - 1)))
        files[folder] = {}
        for i in range(counts[folder]):
            source = _pick_source(partition[split], rng)
            crop = _random_crop(images[source], size, rng)
            name = f"{spec.domains[domain]}_{i:0{width}d}.png"
            _save_png(own(crop), out / folder / name)
            if split == "test":
                _save_png(other(crop), truth_dir / name)
            files[folder][name] = source

    info: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task,
        "description": spec.description,
        "domains": {"A": spec.domains[0], "B": spec.domains[1]},
        "directions": dict(spec.directions),
        "seed": seed,
        "size": size,
        "counts": counts,
        "truth": {"A2B": "truth/A2B", "B2A": "truth/B2A"},
        "photos_from": f"scikit-image {_skimage_version()} (skimage/data)",
        "sources": partition,
        "files": files,
    }
    (out / "dataset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def photo_folder() -> Path:
    """The folder of sample photos inside the installed scikit-image package.

    Raises:
        ModuleNotFoundError: scikit-image is not installed.
        DataError: one of the photos in `PHOTO_GROUPS` is missing from it.
    """
    spec = importlib.util.find_spec("skimage")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the sample datasets are cut from the photos that ship with scikit-image, "
            "which is not installed: pip install scikit-image"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    missing = [name for group in PHOTO_GROUPS for name in group if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder}: scikit-image's sample photos {', '.join(missing)} are missing; "
            "reinstall it: pip install --force-reinstall scikit-image"
        )
    return folder


def procedural_image(seed: int, number: int, side: int = PROCEDURAL_SIDE) -> np.ndarray:
    """A smooth random colour image (gradient, soft blobs, stripes), uint8 (side, side, 3)."""
    rng = np.random.default_rng([seed, _PROCEDURAL_STREAM, number])
    yy, xx = np.mgrid[0:side, 0:side] / side  # (side, side) each, in [0, 1)

    angle = rng.uniform(0, 2 * np.pi)
    ramp = xx * np.cos(angle) + yy * np.sin(angle)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    start, end = rng.uniform(0, 1, size=(2, 3))
    img = start + (end - start) * ramp[..., None]  # (side, side, 3)

    for _ in range(int(rng.integers(3, 9))):
        cx, cy = rng.uniform(-0.1, 1.1, size=2)
        radius = rng.uniform(0.05, 0.3)
        colour = rng.uniform(0, 1, size=3)
        weight = rng.uniform(0.5, 1.0) * np.exp(
            -((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2)
        )
        img = img * (1 - weight[..., None]) + colour * weight[..., None]

    angle = rng.uniform(0, np.pi)
    frequency = rng.uniform(2, 12)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * frequency * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    img = img + rng.uniform(0.05, 0.2) * wave[..., None] * rng.uniform(-1, 1, size=3)

    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


def _partition_sources(seed: int) -> dict[str, list[str]]:
    """Deal the photo groups (shuffled by `seed`) and disjoint procedural numbers to splits."""
    order = np.random.default_rng([seed, _PARTITION_STREAM]).permutation(len(PHOTO_GROUPS))
    partition: dict[str, list[str]] = {}
    for k, split in enumerate(SPLITS):
        photos = sorted(name for g in order[k :: len(SPLITS)] for name in PHOTO_GROUPS[g])
        numbers = range(k * PROCEDURAL_PER_SPLIT, (k + 1) * PROCEDURAL_PER_SPLIT)
        partition[split] = photos + [f"procedural-{n:02d}" for n in numbers]
    return partition


def _load_sources(
    photo_dir: Path, partition: Mapping[str, list[str]], seed: int
) -> dict[str, Image.Image]:
    images: dict[str, Image.Image] = {}
    for name in (name for names in partition.values() for name in names):
        if name.startswith("procedural-"):
            number = int(name.removeprefix("procedural-"))
            images[name] = Image.fromarray(procedural_image(seed, number))
        else:
            with Image.open(photo_dir / name) as img:
                images[name] = img.convert("RGB")
    return images


def _pick_source(sources: list[str], rng: np.random.Generator) -> str:
    procedural = [s for s in sources if s.startswith("procedural-")]
    photos = [s for s in sources if not s.startswith("procedural-")]
    pool = procedural if rng.random() < PROCEDURAL_FRACTION else photos
    return pool[int(rng.integers(len(pool)))]


def _random_crop(img: Image.Image, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (side 0.3-1.0 of the short side), resized to `size`, maybe flipped."""
    w, h = img.size
    side = max(1, round(rng.uniform(*CROP_SCALE) * min(w, h)))
    x = int(rng.integers(0, w - side + 1))
    y = int(rng.integers(0, h - side + 1))
    crop = img.resize((size, size), Image.Resampling.LANCZOS, box=(x, y, x + side, y + side))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(crop)


def _save_png(rgb: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="PNG")


def _prepare_folder(out: Path, overwrite: bool) -> None:
    """Refuse to mix with an existing dataset, or remove exactly what this module writes."""
    ours = [out / name for name in (*_FOLDERS, "truth", "dataset.json")]
    present = [p for p in ours if p.exists()]
    if present and not overwrite:
        raise FileExistsError(
            f"{out}: already holds a dataset ({', '.join(p.name for p in present)}); "
            "choose another folder or pass overwrite=True"
        )
    for path in present:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _skimage_version() -> str:
    try:
        return importlib.metadata.version("scikit-image")
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"
