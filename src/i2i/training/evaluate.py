"""`i2i eval`: translate the test split and measure it against the true translation.

Every family is evaluated the same way, through its translators (contract 2: uint8
[N, H, W, C] in and out, the modules that export and serving use), never by reaching into
its generators. A multimodal family's translators take a style code as a second input
(float32 [N, S]); eval draws K codes per test image from a seeded standard normal and
scores the K outputs. On a dataset whose correct answers form a known family (a sample
task such as ``day2dusk-range``, see :func:`i2i.data.sample.translation_ranges`), it also
reports fidelity (how close each output is to the nearest correct answer) and diversity
(how much of the range of correct answers the K outputs cover). README "Evaluate" says
precisely what each number means.

A multi-domain family (``family.multi_domain``: its directions are ``to_<domain>``) is
scored on the labelled test split ``test/<domain>/`` (the ``gradings`` sample task): for
every ordered pair of distinct domains, ``to_<target>`` translates ``test/<source>/<name>``
and is compared with ``test/<target>/<name>``, the same scene in the target domain, beside
the identity baseline (the source image against that truth); see
:func:`evaluate_multi_domain`. A family with a ``metrics`` hook adds its own numbers.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from i2i.checkpoint import load_trained_networks, weights_used
from i2i.data import (
    AlignedDataset,
    DataError,
    TranslationRange,
    domain_folders,
    list_images,
    load_rgb,
    translation_ranges,
)
from i2i.models import ModelFamily, ShapeRule, get_family, options_from_dict, target_direction

from .fid import InceptionScorer
from .metrics import mean_pairwise_l1, nearest_members, psnr, psnr_of_mse, ssim
from .monitor import image_grid

logger = logging.getLogger(__name__)

# Loads one test image of a direction: uint8 (H, W, C) input and its truth (None if absent).
EvalImageLoader = Callable[[], tuple[np.ndarray, np.ndarray | None]]

# Which test folder feeds which direction, and which direction undoes it (for the cycle).
_DIRECTIONS = {"A2B": ("testA", "B2A"), "B2A": ("testB", "A2B")}
# Style streams: default_rng([seed, stream, image index]) per direction, and for the style
# the cycle's back translation uses.
_STYLE_STREAMS = {"A2B": 0, "B2A": 1}
_CYCLE_STREAMS = {"A2B": 2, "B2A": 3}
GRID_SAMPLES = 4  # samples per row of eval_grid.png for a multimodal model


@dataclass
class DirectionReport:
    """One direction's numbers; the multimodal ones stay None where they do not apply."""

    images: int = 0
    psnr: float | None = None
    ssim: float | None = None
    identity_psnr: float | None = None
    identity_ssim: float | None = None
    cycle_psnr: float | None = None
    samples: int = 1
    fidelity_psnr: float | None = None
    fidelity_exact: float | None = None
    coverage: float | None = None
    best_t_mean: float | None = None
    best_t_std: float | None = None
    pairwise_l1: float | None = None
    valid_range: list[float] | None = None
    valid_range_l1: float | None = None
    per_image: list[dict[str, Any]] = field(default_factory=list)


def _add_fid_kid(report: dict[str, Any], scores: dict[str, Any]) -> None:
    """Put FID/KID (fid, kid_mean, kid_std, kid_subset_size) into a direction's or pair's
    report, after the per-image list so the JSON reads numbers first."""
    per_image = report.pop("per_image", None)
    report.update(scores)
    if per_image is not None:
        report["per_image"] = per_image


@dataclass
class PairReport:
    """One ordered pair of domains of a multi-domain model: ``to_<target>`` on the source's
    test images against the same scenes in the target domain."""

    source: str
    target: str
    direction: str
    images: int = 0
    psnr: float | None = None
    ssim: float | None = None
    identity_psnr: float | None = None
    identity_ssim: float | None = None
    cycle_psnr: float | None = None
    per_image: list[dict[str, Any]] = field(default_factory=list)


# The numbers averaged over pairs, per target direction and over the whole model.
_PAIR_NUMBERS = ("psnr", "ssim", "identity_psnr", "identity_ssim", "cycle_psnr")


def pair_name(source: str, target: str) -> str:
    """The key of an ordered pair of domains in eval.json "pairs": ``source->target``."""
    return f"{source}->{target}"


def style_codes(seed: int, stream: int, index: int, count: int, style_dim: int) -> np.ndarray:
    """``count`` style codes float32 [count, S] from a standard normal, reproducible.

    Drawn from ``numpy.random.default_rng([seed, stream, index])``: the first K codes are
    the same whatever the count, so more samples only add codes.
    """
    rng = np.random.default_rng([seed, stream, index])
    return rng.standard_normal((count, style_dim)).astype(np.float32)


def translator_style_dim(translator: nn.Module, family_style_dim: int) -> int:
    """S of a translator: its ``style_dim`` attribute for a multimodal family, else 0."""
    if family_style_dim == 0:
        return 0
    found = getattr(translator, "style_dim", family_style_dim)
    if isinstance(found, bool) or not isinstance(found, int) or found < 1:
        raise ValueError(
            f"{type(translator).__name__}: a multimodal translator's style_dim must be a "
            f"positive integer, got {found!r}"
        )
    return found


def translator_channels(translator: nn.Module, name: str) -> int:
    """A translator's ``in_channels`` or ``out_channels`` (``name``): 1 (gray) or 3 (RGB)."""
    found = getattr(translator, name, None)
    if isinstance(found, bool) or found not in (1, 3):
        raise ValueError(
            f"{type(translator).__name__}: a translator's {name} must be 1 (grayscale) or 3 "
            f"(RGB), got {found!r}"
        )
    return int(found)


def _hwc(image: Image.Image) -> np.ndarray:
    """A decoded image as uint8 (H, W, C): C is 1 for mode "L", 3 for "RGB"."""
    array = np.asarray(image)
    return array[:, :, None] if array.ndim == 2 else array


def load_image(path: str | os.PathLike[str], channels: int) -> np.ndarray:
    """An image file as uint8 (H, W, channels): RGB for 3, grayscale (PIL "L") for 1."""
    return _hwc(load_rgb(path, channels))


def as_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """A uint8 HWC image with ``channels`` channels: gray repeated, or RGB to PIL's "L"."""
    if image.shape[2] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=2)
    return _hwc(Image.fromarray(image).convert("L"))


def side_by_side_test(data_root: Path) -> bool:
    """Whether the test split is ``test/`` of [A | B] pairs: it exists and testA/ does not."""
    return (data_root / "test").is_dir() and not (data_root / "testA").is_dir()


def eval_images(
    data_root: Path, direction: str, in_channels: int, out_channels: int
) -> list[tuple[str, EvalImageLoader]]:
    """A direction's test images, sorted: ``[(file name, load)]``.

    From ``test/`` when :func:`side_by_side_test` (each image split as
    :class:`~i2i.data.AlignedDataset` splits it: the direction's source half is the input
    and the other half its truth), else from testA/ (A2B) or testB/ (B2A) with the truth
    in ``truth/<direction>/`` where it exists. Inputs have ``in_channels`` channels,
    truths ``out_channels``.
    """
    folder = data_root / _DIRECTIONS[direction][0]
    if side_by_side_test(data_root):
        a_to_b = direction == "A2B"
        pairs = AlignedDataset(
            data_root,
            "test",
            channels_a=in_channels if a_to_b else out_channels,
            channels_b=out_channels if a_to_b else in_channels,
        )

        def load_pair(index: int) -> tuple[np.ndarray, np.ndarray | None]:
            img_a, img_b = pairs.load_pair(index)
            source, target = (img_a, img_b) if a_to_b else (img_b, img_a)
            return _hwc(source), _hwc(target)

        return [(path.name, partial(load_pair, i)) for i, (path, _) in enumerate(pairs.pairs)]

    truth_dir = data_root / "truth" / direction

    def load_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        real = load_image(path, in_channels)
        truth_path = truth_dir / path.relative_to(folder)
        if not truth_path.is_file():
            return real, None
        truth = load_image(truth_path, out_channels)
        if truth.shape[:2] != real.shape[:2]:
            raise DataError(
                f"{truth_path}: size {truth.shape[1]}x{truth.shape[0]} differs from {path} "
                f"{real.shape[1]}x{real.shape[0]}"
            )
        return real, truth

    return [(path.name, partial(load_file, path)) for path in list_images(folder)]


def _resize(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a uint8 [N, H, W, C] batch, rounded back to uint8."""
    x = batch.permute(0, 3, 1, 2).to(torch.float32)
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


@torch.no_grad()
def translate_image(
    translator: nn.Module,
    image: np.ndarray,
    rule: ShapeRule,
    device: torch.device,
    styles: np.ndarray | None = None,
) -> np.ndarray:
    """Translate one uint8 HWC image with a translator; uint8 [K, H, W, C] back.

    K is the number of rows of ``styles`` (float32 [K, S], for a multimodal translator,
    which gets the image K times with one code each), else 1. An image size the shape
    rule does not accept is reflect-padded to the next multiple (and the padding cropped
    off the output) or, for a fixed-size rule, resized to it and back (bilinear).
    """
    h, w = image.shape[:2]
    count = 1 if styles is None else styles.shape[0]
    th, tw = rule.nearest(h, w)
    if rule.fixed_size is None:
        ph, pw = (-h) % rule.multiple_of, (-w) % rule.multiple_of
        if ph or pw:
            image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="reflect")
    batch = torch.from_numpy(np.array(image)).unsqueeze(0).to(device)  # a writable copy
    batch = batch.expand(count, *batch.shape[1:]).contiguous()  # (K, H', W', C)
    if rule.fixed_size is not None and (th, tw) != (h, w):
        batch = _resize(batch, (th, tw))
    if styles is None:
        out = translator(batch)
    else:
        out = translator(batch, torch.from_numpy(styles).to(device))
    out = out[:, :h, :w] if rule.fixed_size is None else out
    if rule.fixed_size is not None and (th, tw) != (h, w):
        out = _resize(out, (h, w))
    return out.cpu().numpy()


def _mean_of(items: list[dict[str, Any]], key: str) -> float | None:
    """Mean of the finite values of `key` (identical images have infinite PSNR); None if absent."""
    return _finite_mean([item[key] for item in items if key in item])


def _finite_mean(values: list[float]) -> float | None:
    """Mean of the finite values; inf when all are infinite (identical images); None if none."""
    finite = [v for v in values if math.isfinite(v)]
    if not values:
        return None
    return float(np.mean(finite)) if finite else math.inf


def _strict_json(value: Any) -> Any:
    """JSON has no Infinity: non-finite numbers become null (identical images)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict_json(v) for v in value]
    return value


def _score_range(
    item: dict[str, Any], fakes: np.ndarray, real: np.ndarray, family: TranslationRange
) -> list[tuple[float, float]]:
    """Fit each output to the family of valid translations of `real`; fill `item`."""
    member = partial(family.function, real)
    fits = nearest_members(fakes, member, family.low, family.high)
    ts = [t for t, _ in fits]
    item["best_t"] = ts
    item["fidelity_psnr"] = _finite_mean([psnr_of_mse(e) for _, e in fits])
    item["coverage"] = (max(ts) - min(ts)) / (family.high - family.low)
    ends = np.stack([member(family.low), member(family.high)])
    item["valid_range_l1"] = mean_pairwise_l1(ends)
    return fits


def evaluate(
    checkpoint: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    max_images: int = 0,
    grid_images: int = 4,
    num_samples: int = 8,
    seed: int = 0,
    ema: bool = True,
    inception_weights: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Translate the test split with a checkpoint's translators and report quality.

    The test split is testA/ and testB/ (truth in `truth/<direction>/`), or, in a dataset
    with ``test/`` and no testA/, the [A | B] pairs of ``test/`` (see :func:`eval_images`).
    Images are read with the channels the translators take (1: grayscale) and give.
    For each direction: PSNR/SSIM of the output against `truth/<direction>/` (when the
    dataset has it), the same for the untranslated input (the identity baseline), and
    the PSNR of the cycle reconstruction against the input (when the checkpoint has the
    reverse direction). A multimodal family (style_dim > 0) gets `num_samples` outputs per
    image, one per seeded style code; where the dataset records a family of valid
    translations, every output is also fitted to it (fidelity, coverage). A multi-domain
    model is scored per ordered pair of domains instead (:func:`evaluate_multi_domain`); a
    family with a ``metrics`` hook adds "family_metrics". Writes eval.json and
    eval_grid.png (input | output(s) | truth rows) into `out_dir` when given.
    The generators' moving average is evaluated when the checkpoint has one, unless `ema`
    is False; the report's "weights" says which ("ema" or "raw").

    With ``inception_weights`` (a local FID Inception state dict, see :mod:`.fid`), each
    direction (and each pair and target of a multi-domain model) also gets ``fid``,
    ``kid_mean``, ``kid_std`` (and ``kid_subset_size``): all its outputs against the real
    test images of its target domain (:func:`target_domain_images`).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    # Loaded first: a bad weights file fails before any translating.
    scorer = (
        None if inception_weights is None else InceptionScorer(inception_weights, device, seed=seed)
    )
    data_root = Path(data_root)
    torch_device = torch.device(device)
    ckpt, networks = load_trained_networks(checkpoint, ema=ema)
    weights = weights_used(ckpt, ema)
    family = get_family(ckpt["family"])
    options = options_from_dict(ckpt["family"], ckpt["config"].get("model", {}))
    rule = family.shape_rule(options)
    translators = {
        d: t.to(torch_device).eval() for d, t in family.translators(networks, options).items()
    }
    if family.multi_domain:
        scores, rows = evaluate_multi_domain(
            family,
            options,
            translators,
            rule,
            data_root,
            torch_device,
            max_images,
            grid_images,
            scorer,
        )
        header = {
            "checkpoint": str(checkpoint),
            "step": ckpt["step"],
            "weights": weights,
            "data": str(data_root),
        }
        return _finish(
            {**header, "family": family.name, **scores},
            rows,
            family,
            networks,
            options,
            seed,
            out_dir,
        )
    # S of this model: its translators say (a family's style_dim is that of its defaults).
    style_dims = {d: translator_style_dim(t, family.style_dim) for d, t in translators.items()}
    style_dim = max(style_dims.values(), default=0)
    count = num_samples if style_dim else 1
    ranges = translation_ranges(data_root)
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "step": ckpt["step"],
        "weights": weights,
        "data": str(data_root),
        "family": family.name,
        "style_dim": style_dim,
        "num_samples": count,
        "seed": seed,
        "test_layout": "side_by_side" if side_by_side_test(data_root) else "folders",
        "directions": {},
    }

    def styles(direction: str, stream: int, index: int, k: int) -> np.ndarray | None:
        dim = style_dims[direction]
        return style_codes(seed, stream, index, k, dim) if dim else None

    grid_rows: list[list[np.ndarray]] = []
    if report["test_layout"] == "side_by_side":
        logger.info("%s: evaluating the [A | B] pairs in test/ (no testA/)", data_root)
    for direction, (_, back) in _DIRECTIONS.items():
        if direction not in translators:
            continue
        images = eval_images(
            data_root,
            direction,
            translator_channels(translators[direction], "in_channels"),
            translator_channels(translators[direction], "out_channels"),
        )
        if max_images:
            images = images[:max_images]
        valid = ranges.get(direction)
        rep = DirectionReport(images=len(images), samples=count)
        fits: list[tuple[float, float]] = []
        fake_features: list[torch.Tensor] = []
        for i, (name, load) in enumerate(images):
            real, truth = load()
            fakes = translate_image(
                translators[direction],
                real,
                rule,
                torch_device,
                styles(direction, _STYLE_STREAMS[direction], i, count),
            )  # (K, H, W, C)
            if scorer is not None:
                fake_features.append(scorer.features(list(fakes)))
            item: dict[str, Any] = {"file": name}
            if back in translators:
                back_style = styles(back, _CYCLE_STREAMS[direction], i, 1)
                cycled = translate_image(
                    translators[back], fakes[0], rule, torch_device, back_style
                )
                item["cycle_psnr"] = psnr(cycled[0], real)
            if truth is not None:
                # The identity baseline compares the input in the truth's channels (a
                # grayscale input repeated to RGB, an RGB one reduced to PIL's luma).
                same = as_channels(real, truth.shape[2])
                # A multimodal model's figure is the mean over its K outputs.
                item.update(
                    psnr=_finite_mean([psnr(fake, truth) for fake in fakes]),
                    ssim=float(np.mean([ssim(fake, truth) for fake in fakes])),
                    identity_psnr=psnr(same, truth),
                    identity_ssim=ssim(same, truth),
                )
            if valid is not None:
                fits += _score_range(item, fakes, real, valid)
            if valid is not None or count > 1:
                item["pairwise_l1"] = mean_pairwise_l1(fakes)
            rep.per_image.append(item)
            if i < grid_images:
                row = [real, *fakes[:GRID_SAMPLES]]
                grid_rows.append(row + ([truth] if truth is not None else []))
        rep.psnr, rep.ssim = _mean_of(rep.per_image, "psnr"), _mean_of(rep.per_image, "ssim")
        rep.identity_psnr = _mean_of(rep.per_image, "identity_psnr")
        rep.identity_ssim = _mean_of(rep.per_image, "identity_ssim")
        rep.cycle_psnr = _mean_of(rep.per_image, "cycle_psnr")
        rep.pairwise_l1 = _mean_of(rep.per_image, "pairwise_l1")
        if valid is not None and fits:
            rep.fidelity_psnr = _finite_mean([psnr_of_mse(e) for _, e in fits])
            rep.fidelity_exact = sum(e == 0 for _, e in fits) / len(fits)
            rep.coverage = _mean_of(rep.per_image, "coverage")
            rep.best_t_mean = float(np.mean([t for t, _ in fits]))
            rep.best_t_std = float(np.std([t for t, _ in fits]))
            rep.valid_range = [valid.low, valid.high]
            rep.valid_range_l1 = _mean_of(rep.per_image, "valid_range_l1")
        report["directions"][direction] = rep.__dict__
        if scorer is not None:
            out_channels = translator_channels(translators[direction], "out_channels")
            reals = target_domain_images(data_root, direction, out_channels, max_images)
            _add_fid_kid(
                report["directions"][direction],
                scorer.scores(
                    scorer.features(reals), torch.cat(fake_features), f"FID/KID of {direction}"
                ),
            )
    if scorer is not None:
        report["inception"] = _inception_header(scorer)
    return _finish(report, grid_rows, family, networks, options, seed, out_dir)


def _inception_header(scorer: InceptionScorer) -> dict[str, Any]:
    """How FID/KID were computed: the weights file and KID's subsets."""
    return {
        "weights": str(scorer.weights),
        "kid_subsets": scorer.kid_subsets,
        "kid_max_subset_size": scorer.kid_subset_size,
    }


def target_domain_images(
    data_root: Path, direction: str, channels: int, max_images: int = 0
) -> list[np.ndarray]:
    """The real images FID/KID compare a two-domain direction's outputs with: the test
    images of its target domain (testB/ for A2B, testA/ for B2A; the B or A halves of
    ``test/`` pairs), with ``channels`` channels, the first ``max_images`` if set."""
    other = _DIRECTIONS[direction][1]
    images = eval_images(data_root, other, channels, channels)
    if max_images:
        images = images[:max_images]
    return [load()[0] for _, load in images]


def _finish(
    report: dict[str, Any],
    grid_rows: list[list[np.ndarray]],
    family: ModelFamily,
    networks: dict[str, nn.Module],
    options: Any,
    seed: int,
    out_dir: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    """Add the family's own metrics (if it has the hook) and write eval.json and the grid."""
    if family.metrics is not None:
        report["family_metrics"] = family_metrics(family, networks, options, seed)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(
            json.dumps(_strict_json(report), indent=2, allow_nan=False) + "\n"
        )
        if grid_rows:
            Image.fromarray(image_grid(grid_rows)).save(out / "eval_grid.png")
        report["files"] = {"json": str(out / "eval.json"), "grid": str(out / "eval_grid.png")}
    return report


def family_metrics(
    family: ModelFamily, networks: dict[str, nn.Module], options: Any, seed: int
) -> dict[str, float]:
    """The numbers of a family's ``metrics`` hook (eval-mode networks, no gradients), checked
    to be a mapping of names to real numbers."""
    assert family.metrics is not None
    with torch.no_grad():
        found = family.metrics(networks, options, seed)
    if not isinstance(found, dict):
        raise ValueError(
            f"family {family.name!r}: its metrics hook must return a dict of name -> number, "
            f"got {type(found).__name__}"
        )
    checked: dict[str, float] = {}
    for name, value in found.items():
        if not isinstance(name, str) or isinstance(value, bool):
            raise ValueError(f"family {family.name!r}: bad metric {name!r}: {value!r}")
        try:
            checked[name] = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"family {family.name!r}: metric {name!r} is not a number: {value!r}"
            ) from None
    return checked


def labelled_test_folders(data_root: Path, domains: tuple[str, ...]) -> dict[str, Path]:
    """``{domain: test folder}`` for every domain of a multi-domain model, in its order.

    Raises:
        DataError: the dataset has no labelled test split, or lacks one of the domains.
    """
    try:
        found = domain_folders(data_root, "test")
    except DataError as exc:
        raise DataError(
            f"a multi-domain model is evaluated on test/<domain>/ folders (i2i data sample "
            f"--task gradings writes them): {exc}"
        ) from exc
    missing = [d for d in domains if d not in found]
    if missing:
        raise DataError(
            f"{data_root}: no test images of the model's domain(s) {', '.join(missing)} "
            f"(the test split has: {', '.join(found)})"
        )
    extra = [d for d in found if d not in domains]
    if extra:
        logger.warning(
            "%s: leaving out test folders that are not domains of the model: %s",
            data_root,
            ", ".join(extra),
        )
    return {d: found[d] for d in domains}


def _pair_truth(
    data_root: Path, folders: dict[str, Path], source: str, target: str, relative: Path
) -> Path | None:
    """The true target-domain image of a source test image: the same name in the target's
    test folder, else ``truth/<source>2<target>/<name>`` (a two-domain sample dataset)."""
    for candidate in (
        folders[target] / relative,
        data_root / "truth" / f"{source}2{target}" / relative,
    ):
        if candidate.is_file():
            return candidate
    return None


def _means(reports: list[dict[str, Any]]) -> dict[str, float | None]:
    """The mean of each pair number over ``reports`` (finite values; see _finite_mean)."""
    return {
        key: _finite_mean([r[key] for r in reports if r[key] is not None]) for key in _PAIR_NUMBERS
    }


def evaluate_multi_domain(
    family: ModelFamily,
    options: Any,
    translators: dict[str, nn.Module],
    rule: ShapeRule,
    data_root: Path,
    device: torch.device,
    max_images: int = 0,
    grid_images: int = 4,
    scorer: InceptionScorer | None = None,
) -> tuple[dict[str, Any], list[list[np.ndarray]]]:
    """Score a multi-domain model on every ordered pair of its domains; (report, grid rows).

    For the pair (s, t): ``to_<t>`` translates each image of ``test/<s>/`` (the first
    ``max_images`` if set); PSNR/SSIM against ``test/<t>/<same name>`` (or
    ``truth/<s>2<t>/<name>``) where it exists, the same for the untranslated source (the
    identity baseline), and the cycle PSNR of ``to_<s>`` applied to the output against the
    source (when input and output channels agree). The report has "pairs" (per ordered
    pair, ``s->t``), "directions" (per ``to_<t>``, the mean over its sources) and "mean"
    (over all pairs). Grid: per test scene (the first ``grid_images`` of the first domain),
    one row per source domain: the input, then its translation into every domain in order.
    With a ``scorer``, FID/KID of each pair (its outputs against the real ``test/<t>/``
    images), of each target (the outputs of all its sources pooled) and their mean over
    pairs.
    """
    domains = family.domains_for(options)
    folders = labelled_test_folders(data_root, domains)
    first = translators[target_direction(domains[0])]
    in_channels = translator_channels(first, "in_channels")
    out_channels = translator_channels(first, "out_channels")
    files = {d: list_images(folders[d]) for d in domains}
    if max_images:
        files = {d: paths[:max_images] for d, paths in files.items()}

    def translate(direction: str, image: np.ndarray) -> np.ndarray:
        return translate_image(translators[direction], image, rule, device)[0]

    pairs: dict[str, dict[str, Any]] = {}
    fake_features: dict[str, torch.Tensor] = {}  # per pair, with a scorer
    for source in domains:
        inputs = [
            (p.relative_to(folders[source]), load_image(p, in_channels)) for p in files[source]
        ]
        for target in domains:
            if target == source:
                continue
            rep = PairReport(source, target, target_direction(target), images=len(inputs))
            fakes: list[np.ndarray] = []
            for relative, real in inputs:
                fake = translate(rep.direction, real)
                if scorer is not None:
                    fakes.append(fake)
                item: dict[str, Any] = {"file": relative.as_posix()}
                if in_channels == out_channels:
                    back = translate(target_direction(source), fake)
                    item["cycle_psnr"] = psnr(back, real)
                truth_path = _pair_truth(data_root, folders, source, target, relative)
                if truth_path is not None:
                    truth = load_image(truth_path, out_channels)
                    if truth.shape[:2] != real.shape[:2]:
                        raise DataError(
                            f"{truth_path}: size {truth.shape[1]}x{truth.shape[0]} differs "
                            f"from {folders[source] / relative} {real.shape[1]}x{real.shape[0]}"
                        )
                    same = as_channels(real, out_channels)
                    item.update(
                        psnr=psnr(fake, truth),
                        ssim=ssim(fake, truth),
                        identity_psnr=psnr(same, truth),
                        identity_ssim=ssim(same, truth),
                    )
                rep.per_image.append(item)
            for key in _PAIR_NUMBERS:
                setattr(rep, key, _mean_of(rep.per_image, key))
            pairs[pair_name(source, target)] = rep.__dict__
            if scorer is not None:
                fake_features[pair_name(source, target)] = scorer.features(fakes)
    directions = {}
    for target in domains:
        of_target = [r for r in pairs.values() if r["target"] == target]
        directions[target_direction(target)] = {
            "sources": [r["source"] for r in of_target],
            "images": sum(r["images"] for r in of_target),
            **_means(of_target),
        }
    if scorer is not None:
        _multi_domain_fid_kid(scorer, pairs, directions, fake_features, files, out_channels)
    report: dict[str, Any] = {
        "multi_domain": True,
        "domains": list(domains),
        "test_layout": "labelled",
        "pairs": pairs,
        "directions": directions,
        "mean": {"pairs": len(pairs), **_means(list(pairs.values()))},
    }
    if scorer is not None:
        report["mean"].update(
            {
                key: _finite_mean([p[key] for p in pairs.values()])
                for key in ("fid", "kid_mean", "kid_std")
            }
        )
        report["inception"] = _inception_header(scorer)
    grid_rows: list[list[np.ndarray]] = []
    for path in files[domains[0]][:grid_images]:
        relative = path.relative_to(folders[domains[0]])
        for source in domains:
            if not (folders[source] / relative).is_file():
                continue
            real = load_image(folders[source] / relative, in_channels)
            grid_rows.append([real, *(translate(target_direction(t), real) for t in domains)])
    return report, grid_rows


def _multi_domain_fid_kid(
    scorer: InceptionScorer,
    pairs: dict[str, dict[str, Any]],
    directions: dict[str, dict[str, Any]],
    fake_features: dict[str, torch.Tensor],
    files: dict[str, list[Path]],
    channels: int,
) -> None:
    """FID/KID of every pair and every target of a multi-domain model, into their reports."""
    real_features = {
        domain: scorer.features([load_image(p, channels) for p in paths])
        for domain, paths in files.items()
    }
    for name, rep in pairs.items():
        scores = scorer.scores(
            real_features[rep["target"]], fake_features[name], f"FID/KID of {name}"
        )
        _add_fid_kid(rep, scores)
    for direction, rep in directions.items():
        target = next(p["target"] for p in pairs.values() if p["direction"] == direction)
        pooled = torch.cat(
            [fake_features[n] for n, p in pairs.items() if p["direction"] == direction]
        )
        _add_fid_kid(rep, scorer.scores(real_features[target], pooled, f"FID/KID of {direction}"))


def _fmt(v: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable table of an evaluation report (two for a multimodal one; per
    pair and per target for a multi-domain one), then the family's own metrics if any."""
    lines = (
        _format_multi_domain(report) if report.get("multi_domain") else _format_two_domain(report)
    )
    lines += _format_fid_kid(report)
    extra = report.get("family_metrics")
    if extra:
        width = max(len(name) for name in extra)
        lines += ["", "family metrics"]
        lines += [f"  {name:<{width}}  {value:.6g}" for name, value in extra.items()]
    return "\n".join(lines)


def _format_fid_kid(report: dict[str, Any]) -> list[str]:
    """The FID/KID table (per direction, or per pair and target), when eval computed them."""
    if "inception" not in report:
        return []
    rows = [
        *((pair_name(r["source"], r["target"]), r) for r in report.get("pairs", {}).values()),
        *report["directions"].items(),
    ]
    width = max(len(label) for label, _ in [*rows, ("direction", None)]) + 2
    lines = ["", f"{'direction':<{width}}{'FID':>10}{'KID':>11}{'KID std':>10}{'KID subset':>12}"]
    for label, rep in rows:
        lines.append(
            f"{label:<{width}}{_fmt(rep['fid'], 10, 3)}{_fmt(rep['kid_mean'], 11, 5)}"
            f"{_fmt(rep['kid_std'], 10, 5)}{rep['kid_subset_size']:>12}"
        )
    return lines


def _format_multi_domain(report: dict[str, Any]) -> list[str]:
    """The per-pair table, the mean over pairs, then the per-target table."""
    numbers = f"{'images':>7}{'PSNR':>9}{'SSIM':>8}{'id PSNR':>9}{'id SSIM':>9}{'cycle PSNR':>12}"

    def row(label: str, width: int, rep: dict[str, Any], images: Any) -> str:
        return (
            f"{label:<{width}}{images:>7}{_fmt(rep['psnr'], 9, 2)}{_fmt(rep['ssim'], 8, 3)}"
            f"{_fmt(rep['identity_psnr'], 9, 2)}{_fmt(rep['identity_ssim'], 9, 3)}"
            f"{_fmt(rep['cycle_psnr'], 12, 2)}"
        )

    labels = [f"{r['source']} -> {r['target']}" for r in report["pairs"].values()]
    mean_label = f"mean of {report['mean']['pairs']} pairs"
    width = max(len(x) for x in [*labels, mean_label, "source -> target"]) + 2
    lines = [f"{'source -> target':<{width}}{numbers}"]
    for label, rep in zip(labels, report["pairs"].values(), strict=True):
        lines.append(row(label, width, rep, rep["images"]))
    lines.append(row(mean_label, width, report["mean"], ""))
    width = max(len(d) for d in [*report["directions"], "direction"]) + 2
    lines += ["", f"{'direction':<{width}}{'sources':>8}{numbers}"]
    for direction, rep in report["directions"].items():
        lines.append(
            f"{direction:<{width}}{len(rep['sources']):>8}" + row("", 0, rep, rep["images"])
        )
    return lines


def _format_two_domain(report: dict[str, Any]) -> list[str]:
    """The per-direction table (and the multimodal one) of a two-domain model."""
    lines = [
        f"{'direction':<10}{'images':>7}{'PSNR':>9}{'SSIM':>8}{'id PSNR':>9}{'id SSIM':>9}{'cycle PSNR':>12}"
    ]
    for direction, rep in report["directions"].items():
        lines.append(
            f"{direction:<10}{rep['images']:>7}{_fmt(rep['psnr'], 9, 2)}{_fmt(rep['ssim'], 8, 3)}"
            f"{_fmt(rep['identity_psnr'], 9, 2)}{_fmt(rep['identity_ssim'], 9, 3)}"
            f"{_fmt(rep['cycle_psnr'], 12, 2)}"
        )
    multimodal = {
        d: rep
        for d, rep in report["directions"].items()
        if rep.get("pairwise_l1") is not None or rep.get("fidelity_psnr") is not None
    }
    if multimodal:
        lines.append("")
        lines.append(
            f"{'direction':<10}{'samples':>8}{'fidelity':>10}{'exact':>7}{'coverage':>10}"
            f"{'best t':>15}{'pair L1':>9}{'range L1':>10}"
        )
        for direction, rep in multimodal.items():
            best_t = (
                f"{'-':>15}"
                if rep["best_t_mean"] is None
                else f"{rep['best_t_mean']:>8.3f}±{rep['best_t_std']:<5.3f}".rjust(15)
            )
            lines.append(
                f"{direction:<10}{rep['samples']:>8}{_fmt(rep['fidelity_psnr'], 10, 2)}"
                f"{_fmt(rep['fidelity_exact'], 7, 2)}{_fmt(rep['coverage'], 10, 3)}{best_t}"
                f"{_fmt(rep['pairwise_l1'], 9, 2)}{_fmt(rep['valid_range_l1'], 10, 2)}"
            )
    return lines
