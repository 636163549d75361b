"""Built-in sample datasets whose true translation is known, made without any download.

Images are random crops of the colour photos that ship inside scikit-image's package
folder (read with Pillow; skimage itself is never imported) and of procedurally drawn
images. Each task renders a source crop into domain A and into domain B with a known,
per-pixel function, so the true translation of every test image is kept in `truth/`
and models can be scored with PSNR/SSIM instead of by eye.

The source photos (and procedural seeds) are partitioned by scene between the training
split and the test split, so the test images come from scenes never seen in training.
The two training domains share the training scenes, but never a crop: the training crops
are drawn from one stream and dealt alternately to trainA and trainB (each crop is rendered
into one domain only, and no source, box and flip is drawn twice; dataset.json "crops"
records them). So the domains show the same kind of content and the only systematic
difference between them is the translation itself: a discriminator cannot tell the
domains apart by what the photos show, only by their grade. (Dealing whole photos to one
domain each, as in version 1 of this format, made the domains differ more in content than
in grade, and CycleGAN's discriminators learnt the content.)

The unaligned layout (the default; dataset.json "layout": "unaligned")::

    <out>/trainA/  trainB/  testA/  testB/       the unaligned layout UnalignedDataset reads
    <out>/truth/A2B/<name of a testA file>       the true domain-B rendering of that image
    <out>/truth/B2A/<name of a testB file>       the true domain-A rendering of that image
    <out>/dataset.json                           task, seed, counts, sources, crops

The aligned layout (``aligned=True``, ``i2i data sample --aligned``; "layout": "aligned"),
the paired format of the reference pix2pix code: one source crop is rendered into both
domains and the two renderings are stored side by side, A on the left::

    <out>/train/pair_0000.png ...   [A | B], width 2 * size: columns [0, size) are A,
    <out>/test/pair_0000.png ...    [size, 2 * size) are B; B is the true translation of A
    <out>/testA/<name>, testB/<name>             the two halves of test/<name>
    <out>/truth/A2B/<name>, truth/B2A/<name>     the true translations, as above
    <out>/dataset.json

Training pairs come from the training scenes (those of trainA and trainB); test pairs from
the test scenes only. The test crops are the unaligned layout's testA
crops for the same seed, size and count, so both layouts score a model on the same images.
Both halves of a pair are the same crop (and flip): nothing is cropped or flipped apart.

A multimodal task (``day2dusk-range``) has many correct answers: its domain-B images are
`TranslationRange.function(A, t)` with a strength t drawn uniformly from [low, high] per
image (recorded in dataset.json "strengths"), so every member of that family is a valid
translation of a domain-A image. truth/A2B holds the member at ``truth`` (mid-range) for
single-output metrics; "valid_translations" in dataset.json names the family, which
`i2i eval` reads through :func:`translation_ranges` to score fidelity and diversity.

A multi-domain task (``gradings``, :data:`MULTI_DOMAIN_TASKS`) renders one source crop into
any number of named domains (day, dusk, night, sepia: fixed colour gradings of the day
photo, see :data:`GRADES`), in the labelled layout the multi-domain families read
(:mod:`i2i.data.labelled`; dataset.json "layout": "labelled")::

    <out>/train/<domain>/<domain>_0000.png ...   the training scenes, each crop in one domain
    <out>/test/<domain>/scene_0000.png ...       the same test scenes in every domain, under
                                                 equal names: test/<t>/<name> is the true
                                                 translation of test/<s>/<name> into t
    <out>/dataset.json                           "domains" is the list of domain names

The photo groups and procedural seeds are dealt to the test split and the training split;
the training crops are dealt round-robin to the domains, so every domain trains on the
same scenes but no crop (source, box, flip) is in two domains.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image

from i2i.data.folders import DataError

FORMAT = "i2i.sample_dataset"
# 2: the training domains share the training scenes (each crop in one domain only);
# "sources" is {"train": [...], "test": [...]} and "crops" records every crop's box.
FORMAT_VERSION = 2

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
_PARTITION_STREAM, _PROCEDURAL_STREAM, _CROP_STREAM, _STRENGTH_STREAM = 0, 1, 2, 3
# The crop stream (under _CROP_STREAM) of the training crops that are dealt to the domains.
_TRAIN_DEAL = 4
_FOLDERS = ("trainA", "trainB", "testA", "testB")
_ALIGNED_FOLDERS = ("train", "test")
LAYOUTS = ("unaligned", "aligned")

# The dusk grade: y = lift + (gain - lift) * x**gamma per channel (x, y in [0, 1]); strictly
# increasing in x, so it is invertible. Darker, warmer highlights, bluish lifted shadows.
_DUSK_LIFT = np.array([0.03, 0.01, 0.06])
_DUSK_GAIN = np.array([0.92, 0.58, 0.40])
_DUSK_GAMMA = np.array([1.3, 1.7, 2.1])
_LUMA_601 = np.array([0.299, 0.587, 0.114])


_LEVELS = np.arange(256, dtype=np.float64)[:, None] / 255.0  # (256, 1)
_DUSK_CURVE = _DUSK_LIFT + (_DUSK_GAIN - _DUSK_LIFT) * _LEVELS**_DUSK_GAMMA  # (256, 3)


def _apply_curve(rgb: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Map uint8 RGB pixels (..., 3) through a (256, 3) curve in [0, 1], rounded once."""
    lut = np.rint(curve * 255.0).astype(np.uint8)
    return np.stack([lut[rgb[..., c], c] for c in range(3)], axis=-1)


def dusk_grade(rgb: np.ndarray) -> np.ndarray:
    """The day2dusk colour grading of uint8 RGB pixels (..., 3): a per-channel tone curve."""
    return _apply_curve(rgb, _DUSK_CURVE)


def dusk_grade_strength(rgb: np.ndarray, t: float) -> np.ndarray:
    """The dusk grade at strength t in [0, 1]: per channel y = (1 - t) x + t dusk(x), rounded.

    t = 0 is the identity, t = 1 is :func:`dusk_grade` exactly; every strength is strictly
    increasing in x, and for a pixel the output moves monotonically with t.
    """
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"the dusk strength t must be in [0, 1], got {t!r}")
    return _apply_curve(rgb, (1.0 - t) * _LEVELS + t * _DUSK_CURVE)


# The night grade: desaturate toward the 601 luma (keep _NIGHT_SATURATION of the colour,
# rounded), then a dark, blue per-channel tone curve of the same form as the dusk grade.
_NIGHT_SATURATION = 0.35
_NIGHT_LIFT = np.array([0.01, 0.02, 0.05])
_NIGHT_GAIN = np.array([0.22, 0.32, 0.55])
_NIGHT_GAMMA = np.array([1.5, 1.35, 1.1])
_NIGHT_CURVE = _NIGHT_LIFT + (_NIGHT_GAIN - _NIGHT_LIFT) * _LEVELS**_NIGHT_GAMMA
# The sepia grade: the rounded 601 luma through a warm brown per-channel tone curve.
_SEPIA_LIFT = np.array([0.08, 0.05, 0.02])
_SEPIA_GAIN = np.array([1.0, 0.86, 0.64])
_SEPIA_GAMMA = np.array([0.9, 1.0, 1.15])
_SEPIA_CURVE = _SEPIA_LIFT + (_SEPIA_GAIN - _SEPIA_LIFT) * _LEVELS**_SEPIA_GAMMA


def night_grade(rgb: np.ndarray) -> np.ndarray:
    """The night grading of uint8 RGB pixels (..., 3): desaturated, then dark and blue.

    Each pixel becomes round(0.35 x + 0.65 luma(x)) per channel (ITU-R 601 luma), then goes
    through the tone curve y = lift + (gain - lift) * x**gamma per channel, lift (0.01,
    0.02, 0.05), gain (0.22, 0.32, 0.55), gamma (1.5, 1.35, 1.1), rounded once.
    """
    x = rgb.astype(np.float64)
    luma = x @ _LUMA_601
    mixed = _NIGHT_SATURATION * x + (1.0 - _NIGHT_SATURATION) * luma[..., None]
    return _apply_curve(np.clip(np.rint(mixed), 0, 255).astype(np.uint8), _NIGHT_CURVE)


def sepia_grade(rgb: np.ndarray) -> np.ndarray:
    """The sepia grading of uint8 RGB pixels (..., 3): the luma of :func:`gray3` through a
    warm tone curve per channel, lift (0.08, 0.05, 0.02), gain (1.0, 0.86, 0.64), gamma
    (0.9, 1.0, 1.15). Colour is lost: sepia -> day has many plausible answers."""
    return _apply_curve(gray3(rgb), _SEPIA_CURVE)


def gray3(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of uint8 RGB pixels (..., 3), rounded, repeated into R = G = B."""
    luma = np.rint(rgb.astype(np.float64) @ _LUMA_601).astype(np.uint8)
    return np.repeat(luma[..., None], 3, axis=-1)


def _identity(rgb: np.ndarray) -> np.ndarray:
    return rgb


@dataclass(frozen=True)
class TranslationRange:
    """A one-parameter family of valid translations: ``function(image, t)``, t in [low, high].

    ``image`` is the input of the direction (uint8 HWC); ``truth`` is the t whose member
    is stored in truth/<direction>/ for the single-output metrics (PSNR/SSIM).
    """

    function: Callable[[np.ndarray, float], np.ndarray]
    low: float
    high: float
    truth: float
    parameter: str = "t"

    def __post_init__(self) -> None:
        if not self.low < self.high or not self.low <= self.truth <= self.high:
            raise ValueError(
                f"a translation range needs low < high and truth within them, got "
                f"[{self.low}, {self.high}] with truth {self.truth}"
            )

    def __call__(self, image: np.ndarray, t: float) -> np.ndarray:
        """The member of the family at parameter ``t``."""
        return self.function(image, t)

    def to_json(self) -> dict[str, Any]:
        """How dataset.json records the family."""
        return {
            "function": f"{self.function.__module__}.{self.function.__qualname__}",
            "parameter": self.parameter,
            "low": self.low,
            "high": self.high,
            "truth": self.truth,
        }


@dataclass(frozen=True)
class SampleTask:
    """A translation with a known answer: how a source crop looks in domain A and in B.

    With ``a2b_range`` the task is multimodal: a domain-B image is
    ``a2b_range(render_a(crop), t)`` for a t drawn uniformly from the range per image, and
    ``render_b`` (the truth/A2B rendering) is the member at ``a2b_range.truth``.
    """

    name: str
    domains: tuple[str, str]
    description: str
    directions: Mapping[str, str]
    render_a: Callable[[np.ndarray], np.ndarray]
    render_b: Callable[[np.ndarray], np.ndarray]
    a2b_range: TranslationRange | None = field(default=None)


_DUSK_RANGE = TranslationRange(function=dusk_grade_strength, low=0.2, high=1.0, truth=0.6)


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
        "day2dusk-range": SampleTask(
            name="day2dusk-range",
            domains=("day", "dusk"),
            description=(
                "Multimodal: photos (A) and photos graded toward dusk (B) at a random strength "
                "t ~ U(0.2, 1.0) per image (t = 1 is the day2dusk grade); every strength in "
                "the range is a correct translation of a day photo."
            ),
            directions={
                "A2B": (
                    "apply the dusk grade at any strength t in [0.2, 1.0] "
                    "(i2i.data.sample.dusk_grade_strength); truth/A2B holds t = 0.6"
                ),
                "B2A": "undo the grade (truth: the ungraded source crop)",
            },
            render_a=_identity,
            render_b=partial(dusk_grade_strength, t=_DUSK_RANGE.truth),
            a2b_range=_DUSK_RANGE,
        ),
    }
)


@dataclass(frozen=True)
class MultiDomainTask:
    """A task with any number of named domains: ``grades[d](crop)`` is a crop in domain d.

    Every domain is a known function of one source crop, so for the test scenes (shown in
    every domain) each ordered pair of domains has its true translation.
    """

    name: str
    description: str
    grades: Mapping[str, Callable[[np.ndarray], np.ndarray]]
    grade_descriptions: Mapping[str, str]

    @property
    def domains(self) -> tuple[str, ...]:
        """The domain names, in the order the task lists them (sorted, as folders sort)."""
        return tuple(self.grades)


# The gradings of the `gradings` task, by domain: uint8 RGB (..., 3) -> uint8 RGB.
GRADES: Mapping[str, Callable[[np.ndarray], np.ndarray]] = MappingProxyType(
    {"day": _identity, "dusk": dusk_grade, "night": night_grade, "sepia": sepia_grade}
)

MULTI_DOMAIN_TASKS: Mapping[str, MultiDomainTask] = MappingProxyType(
    {
        "gradings": MultiDomainTask(
            name="gradings",
            description=(
                "Multi-domain: the same kind of photos in four fixed colour gradings (day, "
                "dusk, night, sepia); the test scenes appear in every domain under equal names, "
                "so every ordered pair of domains has its true translation."
            ),
            grades=GRADES,
            grade_descriptions={
                "day": "the photo as it is",
                "dusk": "the day2dusk grade (i2i.data.sample.dusk_grade)",
                "night": "desaturated, dark and blue (i2i.data.sample.night_grade)",
                "sepia": "601 luma through a warm brown curve (i2i.data.sample.sepia_grade)",
            },
        )
    }
)


def sample_task_names() -> list[str]:
    """The names of the built-in sample tasks (two-domain, then multi-domain)."""
    return [*SAMPLE_TASKS, *MULTI_DOMAIN_TASKS]


def make_sample_dataset(
    task: str,
    out: str | os.PathLike[str],
    seed: int = 0,
    size: int = 64,
    n_train: int = 200,
    n_test: int = 24,
    overwrite: bool = False,
    aligned: bool = False,
) -> dict[str, Any]:
    """Write the sample dataset `task` to `out` and return its description (dataset.json).

    The same arguments give byte-identical files.

    Args:
        task: one of `sample_task_names()`.
        out: the dataset folder (created if needed).
        seed: chooses the partition of sources, the crops and the procedural images.
        size: the side of the square images, in pixels (of each half, when aligned).
        n_train: images in each of trainA and trainB (aligned: pairs in train/); the
            2 * n_train training crops are all different (source, box, flip).
        n_test: images in each of testA and testB (and so in truth/A2B and truth/B2A;
            aligned: pairs in test/, whose halves are testA and testB).
        overwrite: replace a dataset already in `out` (otherwise that is an error).
        aligned: write the aligned layout (see the module docstring) instead of the
            unaligned one.

    A multi-domain task (:data:`MULTI_DOMAIN_TASKS`) writes the labelled layout instead:
    `n_train` images in each train/<domain>/ and `n_test` test scenes, each in every
    test/<domain>/ (see the module docstring); it has no aligned layout.

    Raises:
        ValueError: unknown task or bad sizes or counts, or `aligned` for a multi-domain task.
        FileExistsError: `out` already holds a dataset and `overwrite` is False.
        ModuleNotFoundError: scikit-image (the source of the photos) is not installed.
    """
    if task not in SAMPLE_TASKS and task not in MULTI_DOMAIN_TASKS:
        raise ValueError(
            f"unknown sample task {task!r}; known tasks: {', '.join(sample_task_names())}"
        )
    checks = (("seed", seed, 0), ("size", size, 8), ("n_train", n_train, 1), ("n_test", n_test, 1))
    for name, value, least in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if task in MULTI_DOMAIN_TASKS:
        if aligned:
            raise ValueError(
                f"{task!r} is a multi-domain task: it is written in the labelled layout "
                "(train/<domain>/, test/<domain>/) and has no aligned layout"
            )
        return _make_multi_domain(
            MULTI_DOMAIN_TASKS[task], Path(out), seed, size, n_train, n_test, overwrite
        )
    spec = SAMPLE_TASKS[task]
    out = Path(out)
    _prepare_folder(out, overwrite)

    photo_dir = photo_folder()
    partition = _partition_sources(seed)
    images = _load_sources(photo_dir, partition, seed)
    writer = _Writer(spec, out, images, seed, size)
    if aligned:
        counts = {"train": n_train, "test": n_test}
        sources = {
            "train": sorted(partition["trainA"] + partition["trainB"]),
            "test": partition["test"],
        }
        # The test pairs use testA's crop stream, so they are the unaligned testA crops.
        for split, stream in (("train", 0), ("test", 2)):
            writer.write_pairs(split, sources[split], counts[split], stream)
    else:
        counts = {"trainA": n_train, "trainB": n_train, "testA": n_test, "testB": n_test}
        sources = {
            "train": sorted(partition["trainA"] + partition["trainB"]),
            "test": partition["test"],
        }
        writer.write_training_domains(sources["train"], n_train)
        # Test streams 2 and 3, as in format version 1: the same test images as before.
        for folder, stream in (("testA", 2), ("testB", 3)):
            writer.write_domain(folder, sources["test"], counts[folder], stream)

    info: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task,
        "layout": "aligned" if aligned else "unaligned",
        "description": spec.description,
        "domains": {"A": spec.domains[0], "B": spec.domains[1]},
        "directions": dict(spec.directions),
        "seed": seed,
        "size": size,
        "counts": counts,
        "truth": {"A2B": "truth/A2B", "B2A": "truth/B2A"},
        "photos_from": f"scikit-image {_skimage_version()} (skimage/data)",
        "sources": sources,
        "files": writer.files,
        "crops": writer.crops,
    }
    if aligned:
        info["aligned"] = {
            "folders": ["train", "test"],
            "pair": f"[A | B] side by side, {2 * size}x{size} (width x height): columns "
            f"0-{size - 1} are domain A, {size}-{2 * size - 1} domain B, the same crop",
            "halves": "testA/<name> and testB/<name> are the halves of test/<name>",
        }
    if spec.a2b_range is not None:
        info["valid_translations"] = {"A2B": spec.a2b_range.to_json()}
        info["strengths"] = writer.strengths
    (out / "dataset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _make_multi_domain(
    spec: MultiDomainTask,
    out: Path,
    seed: int,
    size: int,
    n_train: int,
    n_test: int,
    overwrite: bool,
) -> dict[str, Any]:
    """Write a multi-domain task in the labelled layout; return its dataset.json."""
    _prepare_folder(out, overwrite)
    domains = spec.domains
    # The partition of format version 1 (so the same test scenes), its training splits merged.
    partition = _partition_sources(seed, ("test", *(f"train/{d}" for d in domains)))
    sources = {
        "train": sorted(
            name for split in partition if split != "test" for name in partition[split]
        ),
        "test": partition["test"],
    }
    images = _load_sources(photo_folder(), partition, seed)
    files: dict[str, dict[str, str]] = {}
    crops: dict[str, dict[str, list[Any]]] = {}
    counts: dict[str, int] = {}

    width = max(4, len(str(n_test - 1)))
    rng = np.random.default_rng([seed, _CROP_STREAM, 0])
    for i, (box, crop) in enumerate(
        islice(_crop_stream(images, sources["test"], size, rng), n_test)
    ):
        name = f"scene_{i:0{width}d}.png"
        for domain in domains:
            _save_png(spec.grades[domain](crop), out / "test" / domain / name)
            files.setdefault(f"test/{domain}", {})[name] = box.source
            crops.setdefault(f"test/{domain}", {})[name] = box.to_json()
    for domain in domains:
        counts[f"test/{domain}"] = n_test
    # The training crops: one stream of different crops, dealt round-robin to the domains.
    width = max(4, len(str(n_train - 1)))
    rng = np.random.default_rng([seed, _CROP_STREAM, _TRAIN_DEAL])
    drawn = _crop_stream(images, sources["train"], size, rng, unique=set())
    for domain in domains:
        files[f"train/{domain}"], crops[f"train/{domain}"] = {}, {}
        counts[f"train/{domain}"] = n_train
    for k, (box, crop) in enumerate(islice(drawn, len(domains) * n_train)):
        domain, i = domains[k % len(domains)], k // len(domains)
        split, name = f"train/{domain}", f"{domain}_{i:0{width}d}.png"
        _save_png(spec.grades[domain](crop), out / split / name)
        files[split][name] = box.source
        crops[split][name] = box.to_json()
    info: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": spec.name,
        "layout": "labelled",
        "description": spec.description,
        "domains": list(domains),
        "grades": dict(spec.grade_descriptions),
        "seed": seed,
        "size": size,
        "counts": counts,
        "truth": "test/<target>/<name> is the true translation of test/<source>/<name>, for "
        "every ordered pair of domains",
        "photos_from": f"scikit-image {_skimage_version()} (skimage/data)",
        "sources": sources,
        "files": files,
        "crops": crops,
    }
    (out / "dataset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def translation_ranges(data_root: str | os.PathLike[str]) -> dict[str, TranslationRange]:
    """The families of valid translations a sample dataset records, by direction.

    Empty when the folder has no dataset.json (any user dataset) or its task has a single
    correct answer per image. The function comes from this module (looked up by task, never
    imported by name from the file); the range and truth from dataset.json.

    Raises:
        DataError: dataset.json is unreadable, or names a task or family this i2i lacks.
    """
    path = Path(data_root) / "dataset.json"
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable dataset description ({exc})") from exc
    recorded = info.get("valid_translations") if isinstance(info, dict) else None
    if not recorded:
        return {}
    spec = SAMPLE_TASKS.get(info.get("task", ""))
    ranges: dict[str, TranslationRange] = {}
    for direction, entry in recorded.items():
        known = spec.a2b_range if spec is not None and direction == "A2B" else None
        if known is None or entry.get("function") != known.to_json()["function"]:
            raise DataError(
                f"{path}: the valid translations of {direction} ({entry.get('function')!r} of "
                f"task {info.get('task')!r}) are not a family this i2i knows; remake the "
                "dataset with `i2i data sample`"
            )
        try:
            ranges[direction] = TranslationRange(
                function=known.function,
                low=float(entry["low"]),
                high=float(entry["high"]),
                truth=float(entry["truth"]),
                parameter=str(entry.get("parameter", known.parameter)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: bad valid_translations for {direction}: {exc}") from exc
    return ranges


class _Writer:
    """Renders crops of the sources into the files of one dataset, recording what it wrote."""

    def __init__(
        self, spec: SampleTask, out: Path, images: Mapping[str, Image.Image], seed: int, size: int
    ) -> None:
        self.spec, self.out, self.images, self.seed, self.size = spec, out, images, seed, size
        self.files: dict[str, dict[str, str]] = {}
        self.strengths: dict[str, dict[str, float]] = {}
        self.crops: dict[str, dict[str, list[Any]]] = {}

    def _strength(self, rng: np.random.Generator) -> float | None:
        """A domain-B strength for a multimodal task (None for a task with one answer)."""
        family = self.spec.a2b_range
        if family is None:
            return None
        return round(float(rng.uniform(family.low, family.high)), 6)

    def _crops(
        self, sources: list[str], count: int, stream: int
    ) -> Iterator[tuple[int, CropBox, np.ndarray, float | None]]:
        """(index, box, crop, strength or None) for `count` crops of `sources`."""
        rng = np.random.default_rng([self.seed, _CROP_STREAM, stream])
        strength_rng = np.random.default_rng([self.seed, _STRENGTH_STREAM, stream])
        for i, (box, crop) in enumerate(
            islice(_crop_stream(self.images, sources, self.size, rng), count)
        ):
            yield i, box, crop, self._strength(strength_rng)

    def write_training_domains(self, sources: list[str], count: int) -> None:
        """trainA and trainB of the unaligned layout, `count` images each, from the same
        `sources`: 2 * count different crops of one stream, dealt alternately to A and B."""
        rng = np.random.default_rng([self.seed, _CROP_STREAM, _TRAIN_DEAL])
        strength_rng = np.random.default_rng([self.seed, _STRENGTH_STREAM, _TRAIN_DEAL])
        drawn = _crop_stream(self.images, sources, self.size, rng, unique=set())
        width = max(4, len(str(count - 1)))
        for folder in ("trainA", "trainB"):
            self.files[folder], self.crops[folder] = {}, {}
        for k, (box, crop) in enumerate(islice(drawn, 2 * count)):
            domain, i = k % 2, k // 2
            folder = ("trainA", "trainB")[domain]
            name = f"{self.spec.domains[domain]}_{i:0{width}d}.png"
            if domain == 0:
                image = self.spec.render_a(crop)
            else:
                t = self._strength(strength_rng)
                image = self._render_b(crop, t)
                if t is not None:
                    self.strengths.setdefault(folder, {})[name] = t
            _save_png(image, self.out / folder / name)
            self.files[folder][name] = box.source
            self.crops[folder][name] = box.to_json()

    def _render_b(self, crop: np.ndarray, t: float | None) -> np.ndarray:
        """The domain-B image of a crop: at strength t for a multimodal task."""
        family = self.spec.a2b_range
        if family is None or t is None:
            return self.spec.render_b(crop)
        return family(self.spec.render_a(crop), t)

    def _truth_b(self, crop: np.ndarray) -> np.ndarray:
        """truth/A2B of a crop: the mid-range member for a multimodal task."""
        family = self.spec.a2b_range
        return self._render_b(crop, None if family is None else family.truth)

    def write_domain(self, folder: str, sources: list[str], count: int, stream: int) -> None:
        """One folder of the unaligned layout (and the truth of a test folder)."""
        domain = 0 if folder.endswith("A") else 1
        truth_dir = self.out / "truth" / ("A2B" if domain == 0 else "B2A")
        width = max(4, len(str(count - 1)))
        self.files[folder], self.crops[folder] = {}, {}
        for i, box, crop, t in self._crops(sources, count, stream):
            name = f"{self.spec.domains[domain]}_{i:0{width}d}.png"
            a = self.spec.render_a(crop)
            b = self._render_b(crop, t)
            own, truth = (a, self._truth_b(crop)) if domain == 0 else (b, a)
            _save_png(own, self.out / folder / name)
            if folder.startswith("test"):
                _save_png(truth, truth_dir / name)
            self.files[folder][name] = box.source
            self.crops[folder][name] = box.to_json()
            if domain == 1 and t is not None:
                self.strengths.setdefault(folder, {})[name] = t

    def write_pairs(self, split: str, sources: list[str], count: int, stream: int) -> None:
        """One folder of the aligned layout; a test folder also gets its halves and truth."""
        width = max(4, len(str(count - 1)))
        self.files[split], self.crops[split] = {}, {}
        for i, box, crop, t in self._crops(sources, count, stream):
            name = f"pair_{i:0{width}d}.png"
            a = self.spec.render_a(crop)
            b = self._render_b(crop, t)
            _save_png(np.concatenate([a, b], axis=1), self.out / split / name)
            if split == "test":
                _save_png(a, self.out / "testA" / name)
                _save_png(b, self.out / "testB" / name)
                _save_png(self._truth_b(crop), self.out / "truth" / "A2B" / name)
                _save_png(a, self.out / "truth" / "B2A" / name)
            self.files[split][name] = box.source
            self.crops[split][name] = box.to_json()
            if t is not None:
                self.strengths.setdefault(split, {})[name] = t


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


def _partition_sources(seed: int, splits: tuple[str, ...] = SPLITS) -> dict[str, list[str]]:
    """Deal the photo groups (shuffled by `seed`) and disjoint procedural numbers to splits."""
    if len(splits) > len(PHOTO_GROUPS):
        raise ValueError(f"at most {len(PHOTO_GROUPS)} splits of the photos, got {len(splits)}")
    order = np.random.default_rng([seed, _PARTITION_STREAM]).permutation(len(PHOTO_GROUPS))
    partition: dict[str, list[str]] = {}
    for k, split in enumerate(splits):
        photos = sorted(name for g in order[k :: len(splits)] for name in PHOTO_GROUPS[g])
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


@dataclass(frozen=True)
class CropBox:
    """Where a crop comes from: a square of side `side` at (x, y) of `source`, maybe flipped."""

    source: str
    x: int
    y: int
    side: int
    flipped: bool

    def to_json(self) -> list[Any]:
        """How dataset.json "crops" records it: [source, x, y, side, flipped]."""
        return [self.source, self.x, self.y, self.side, self.flipped]


def _crop_stream(
    images: Mapping[str, Image.Image],
    sources: list[str],
    size: int,
    rng: np.random.Generator,
    unique: set[CropBox] | None = None,
) -> Iterator[tuple[CropBox, np.ndarray]]:
    """Endless random crops of `sources` drawn from `rng`; with `unique`, a crop already in
    it (same source, box and flip) is drawn again, and each crop yielded is added to it."""
    while True:
        source = _pick_source(sources, rng)
        box, crop = _random_crop(images[source], source, size, rng)
        if unique is not None:
            if box in unique:
                continue
            unique.add(box)
        yield box, crop


def _random_crop(
    img: Image.Image, source: str, size: int, rng: np.random.Generator
) -> tuple[CropBox, np.ndarray]:
    """A random square crop (side CROP_SCALE of the short side), resized to `size`, maybe
    flipped; with its box."""
    w, h = img.size
    side = max(1, round(rng.uniform(*CROP_SCALE) * min(w, h)))
    x = int(rng.integers(0, w - side + 1))
    y = int(rng.integers(0, h - side + 1))
    crop = img.resize((size, size), Image.Resampling.LANCZOS, box=(x, y, x + side, y + side))
    flipped = bool(rng.random() < 0.5)
    if flipped:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return CropBox(source, x, y, side, flipped), np.asarray(crop)


def _save_png(rgb: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="PNG")


def _prepare_folder(out: Path, overwrite: bool) -> None:
    """Refuse to mix with an existing dataset, or remove exactly what this module writes."""
    ours = [out / name for name in (*_FOLDERS, *_ALIGNED_FOLDERS, "truth", "dataset.json")]
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
