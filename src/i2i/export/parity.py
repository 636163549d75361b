"""Parity: does an exported graph compute what the PyTorch translator computes?

Both run on the same fixed, seeded uint8 images (smooth shapes plus noise, like photos
rather than static) at three sizes the shape rule accepts and batches of 1 and 4. Errors are
counted in uint8 levels, the unit clients see:

- ``max_abs_diff``: the largest difference of any channel of any pixel;
- ``fraction_over_1``: the fraction of pixels with some channel off by more than one level
  (one level is a rounding flip of a value near .5, which every runtime may make);
- ``psnr``: PSNR in dB over all values, with a peak of 255; None (JSON null) when the
  outputs are identical (an infinite PSNR).

The report's keys are those of the manifest's ``parity`` object (see
``i2i/schemas/manifest.schema.json``).

FP32 graphs are judged against PyTorch (:func:`parity_ok_fp32`), FP16 graphs against the
FP32 graph (:func:`parity_ok_fp16`), since FP16 is expected to differ by more than rounding.

Multimodal translators get a fixed, seeded style code per image (a different one for each
image of a batch, drawn from N(0, 1) like a served seed's), so the style path is checked
too. A style encoder's graph is judged in the same unit (:func:`check_style_encoder_parity`):
its codes for fixed reference images drive the PyTorch translator, whose outputs are
compared with those of the codes PyTorch's encoder computes; the codes' own largest
difference is reported beside (``max_abs_diff_style``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from i2i.export.onnx import eval_mode
from i2i.models import ShapeRule

Size = int | tuple[int, int]
# (images uint8 [N, H, W, C], style float32 [N, S] or None) -> outputs
Runner = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


def check_parity(
    translator: nn.Module,
    onnx_path: Path,
    shape_rule: ShapeRule,
    channels: int,
    sizes: Sequence[Size] | None = None,
    batches: Sequence[int] = (1, 4),
    seed: int = 0,
    reference_onnx: Path | None = None,
    style_dim: int = 0,
    num_domains: int = 0,
) -> dict[str, Any]:
    """Compare ``onnx_path`` (ONNX Runtime, CPU) with the translator or a reference graph.

    Args:
        translator: the PyTorch translator the graph was exported from; run in eval mode.
        onnx_path: the graph to check.
        shape_rule: the sizes the translator accepts; every size must pass it.
        channels: input channels, 1 or 3.
        sizes: image sizes, ``s`` for s x s or ``(height, width)``; by default three the
            rule accepts, about 32, 48 and 64 px (the fixed size three times for U-Nets).
        batches: batch sizes to run each size at.
        seed: seeds the test images; the same seed gives the same images.
        reference_onnx: judge against this FP32 graph instead of PyTorch (for an FP16
            graph); the report's ``reference`` is then ``"onnx-fp32"``, ``reference_file``
            names the file, and the comparison with PyTorch is added as ``against_pytorch``.
        style_dim: S of a multimodal translator; each image then gets its own seeded style
            code (float32 [N, S]), the same for every runtime.
        num_domains: the number of domains of a multi-domain conditional graph (second
            input ``domain``, int64 [N]); each batch then names targets in turn from a seeded
            start, so every target index is checked. 0 for other graphs.

    Returns:
        A JSON-serialisable report: ``artifact`` (the file name), ``reference``
        (``"pytorch"`` or ``"onnx-fp32"``), ``runtime``, ``seed``, ``cases`` (one per size
        and batch, each with ``batch``, ``height``, ``width`` and the three measures), the
        measures over all cases (``max_abs_diff``, ``fraction_over_1`` over all pixels and
        the lowest ``psnr``), ``styles`` (how many style codes were tried; multimodal
        only) and, with ``reference_onnx``, ``reference_file`` and ``against_pytorch``
        (``cases`` and the overall measures against PyTorch).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    shapes = [_pair(size) for size in (sizes if sizes is not None else default_sizes(shape_rule))]
    for height, width in shapes:
        shape_rule.check(height, width)
    if not batches or min(batches) < 1:
        raise ValueError(f"batches must be positive, got {list(batches)}")

    candidate = onnx_runner(Path(onnx_path))
    pytorch = _pytorch_runner(translator)
    reference = onnx_runner(Path(reference_onnx)) if reference_onnx is not None else pytorch

    cases, pytorch_cases = [], []
    rng = np.random.default_rng(seed)
    for height, width in shapes:
        for batch in batches:
            images = parity_images(rng, batch, height, width, channels)
            style = parity_styles(rng, batch, style_dim)
            if num_domains:  # the second input holds target indices instead of styles
                start = int(rng.integers(num_domains))
                style = (start + np.arange(batch, dtype=np.int64)) % num_domains
            output = candidate(images, style)
            expected = reference(images, style)
            case = {"batch": batch, "height": height, "width": width}
            cases.append({**case, **compare(output, expected)})
            if reference_onnx is not None:
                pytorch_cases.append({**case, **compare(output, pytorch(images, style))})

    report: dict[str, Any] = {
        "artifact": Path(onnx_path).name,
        "reference": "pytorch" if reference_onnx is None else "onnx-fp32",
        "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
        "seed": seed,
        "cases": cases,
        **overall(cases),
    }
    if style_dim:
        report["styles"] = sum(case["batch"] for case in cases)
    if num_domains:
        report["domains"] = num_domains
    if reference_onnx is not None:
        report["reference_file"] = Path(reference_onnx).name
        report["against_pytorch"] = {"cases": pytorch_cases, **overall(pytorch_cases)}
    return report


def check_style_encoder_parity(
    encoder: nn.Module,
    translator: nn.Module,
    onnx_path: Path,
    shape_rule: ShapeRule,
    channels: int,
    style_channels: int,
    sizes: Sequence[Size] | None = None,
    batches: Sequence[int] = (1, 4),
    seed: int = 0,
    reference_onnx: Path | None = None,
) -> dict[str, Any]:
    """Compare a style encoder's graph with PyTorch's encoder (or a reference graph), in
    uint8 levels of the translations its codes give.

    For each case, reference images of the target domain (``style_channels``) are encoded
    by the graph and by the reference; the PyTorch translator then translates fixed source
    images (``channels``) with each set of codes, and the outputs are compared as in
    :func:`check_parity`. The report has the same keys (``reference`` is ``"pytorch"`` or
    ``"onnx-fp32"``), plus ``max_abs_diff_style``: the codes' largest difference.
    """
    shapes = [_pair(size) for size in (sizes if sizes is not None else default_sizes(shape_rule))]
    for height, width in shapes:
        shape_rule.check(height, width)
    candidate = _onnx_encoder(Path(onnx_path))
    if reference_onnx is not None:
        reference = _onnx_encoder(Path(reference_onnx))
    else:

        def reference(images: np.ndarray) -> np.ndarray:
            with eval_mode(encoder), torch.inference_mode():
                return encoder(torch.from_numpy(images)).numpy()

    translate = _pytorch_runner(translator)
    cases = []
    largest = 0.0
    rng = np.random.default_rng(seed)
    for height, width in shapes:
        for batch in batches:
            references = parity_images(rng, batch, height, width, style_channels)
            images = parity_images(rng, batch, height, width, channels)
            codes, expected_codes = candidate(references), reference(references)
            largest = max(largest, float(np.abs(codes - expected_codes).max()))
            case = {"batch": batch, "height": height, "width": width}
            output, expected = translate(images, codes), translate(images, expected_codes)
            cases.append({**case, **compare(output, expected)})
    report: dict[str, Any] = {
        "artifact": Path(onnx_path).name,
        "reference": "pytorch" if reference_onnx is None else "onnx-fp32",
        "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
        "seed": seed,
        "cases": cases,
        **overall(cases),
        "max_abs_diff_style": largest,
    }
    if reference_onnx is not None:
        report["reference_file"] = Path(reference_onnx).name
    return report


def check_graph_parity(
    module: nn.Module,
    onnx_path: Path,
    examples: Callable[[int, int], tuple[torch.Tensor, ...]],
    batches: Sequence[int] = (1, 4),
    seed: int = 0,
    reference_onnx: Path | None = None,
) -> dict[str, Any]:
    """Compare one of a family's extra graphs (``onnx_path``) with its PyTorch module, or
    with a reference FP32 graph, on ``examples(batch, seed + i)`` for each batch size.

    A uint8 output is measured in levels as :func:`compare` does. A float output (for
    example the two-step encoder's z in (-1, 1)) is measured in the same unit, its values
    scaled by 127.5 as [-1, 1] images are to pixels: one level is 2/255. Every output of the
    graph is compared; a case's numbers are those of its worst output. Returns the keys of
    :func:`check_parity`'s report.
    """
    if not batches or min(batches) < 1:
        raise ValueError(f"batches must be positive, got {list(batches)}")
    session = _session(Path(onnx_path))
    names = [value.name for value in session.get_inputs()]
    reference = _session(Path(reference_onnx)) if reference_onnx is not None else None
    cases, pytorch_cases = [], []
    for i, batch in enumerate(batches):
        inputs = examples(batch, seed + i)
        feeds = {name: tensor.numpy() for name, tensor in zip(names, inputs, strict=True)}
        output = session.run(None, feeds)
        with eval_mode(module), torch.inference_mode():
            result = module(*inputs)
        torch_outputs = [t.numpy() for t in (result if isinstance(result, tuple) else (result,))]
        expected = torch_outputs if reference is None else reference.run(None, feeds)
        case = {"batch": batch, "height": 1, "width": 1}  # one "pixel" per row
        cases.append({**case, **_compare_outputs(output, expected)})
        if reference is not None:
            pytorch_cases.append({**case, **_compare_outputs(output, torch_outputs)})
    report: dict[str, Any] = {
        "artifact": Path(onnx_path).name,
        "reference": "pytorch" if reference_onnx is None else "onnx-fp32",
        "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
        "seed": seed,
        "cases": cases,
        **overall(cases),
    }
    if reference_onnx is not None:
        report["reference_file"] = Path(reference_onnx).name
        report["against_pytorch"] = {"cases": pytorch_cases, **overall(pytorch_cases)}
    return report


def _compare_outputs(outputs: Sequence[Any], expected: Sequence[Any]) -> dict[str, Any]:
    """:func:`compare` over every output pair (floats scaled to levels); the worst numbers."""
    if len(outputs) != len(expected):
        raise ValueError(f"{len(outputs)} outputs, expected {len(expected)}")
    worst: dict[str, Any] | None = None
    for out, exp in zip(outputs, expected, strict=True):
        out, exp = np.asarray(out), np.asarray(exp)
        if out.shape != exp.shape:
            raise ValueError(f"output shape {out.shape} differs from expected {exp.shape}")
        if out.dtype == np.uint8:
            found = compare(out, exp)
        else:
            diff = np.abs(out.astype(np.float64) - exp.astype(np.float64)) * 127.5
            diff = diff.reshape(diff.shape[0], -1) if diff.ndim > 1 else diff[:, None]
            mse = float(np.mean(diff**2))
            found = {
                "max_abs_diff": round(float(diff.max(initial=0.0)), 6),
                "fraction_over_1": float(np.mean(diff.max(axis=-1) > 1)),
                "psnr": None if mse == 0 else round(10 * math.log10(255.0**2 / mse), 3),
            }
        if worst is None:
            worst = found
        else:
            psnrs = [p for p in (worst["psnr"], found["psnr"]) if p is not None]
            worst = {
                "max_abs_diff": max(worst["max_abs_diff"], found["max_abs_diff"]),
                "fraction_over_1": max(worst["fraction_over_1"], found["fraction_over_1"]),
                "psnr": min(psnrs) if psnrs else None,
            }
    if worst is None:
        raise ValueError("the graph has no outputs")
    return worst


def parity_styles(rng: np.random.Generator, batch: int, style_dim: int) -> np.ndarray | None:
    """One N(0, 1) style code per image, float32 [N, S]; None for unimodal (S = 0)."""
    if not style_dim:
        return None
    return rng.standard_normal((batch, style_dim)).astype(np.float32)


def parity_ok_fp32(report: dict[str, Any], max_fraction: float = 0.001) -> bool:
    """True if in every case at most ``max_fraction`` of the pixels are off by more than 1."""
    return bool(report["cases"]) and all(
        case["fraction_over_1"] <= max_fraction for case in report["cases"]
    )


# The least PSNR of an FP16 graph or a TensorRT engine against the FP32 graph.
MIN_PSNR_FP16 = 40.0


def parity_ok_fp16(report: dict[str, Any], min_psnr: float = MIN_PSNR_FP16) -> bool:
    """True if every case reaches ``min_psnr`` dB (identical outputs count as infinite)."""
    return bool(report["cases"]) and all(
        case["psnr"] is None or case["psnr"] >= min_psnr for case in report["cases"]
    )


def compare(output: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """The three measures of two uint8 batches [N, H, W, C] of the same shape."""
    if output.shape != expected.shape:
        raise ValueError(f"output shape {output.shape} differs from expected {expected.shape}")
    diff = np.abs(output.astype(np.int16) - expected.astype(np.int16))
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    return {
        "max_abs_diff": int(diff.max(initial=0)),
        "fraction_over_1": float(np.mean(diff.max(axis=-1) > 1)),
        "psnr": None if mse == 0 else round(10 * math.log10(255.0**2 / mse), 3),
    }


def default_sizes(shape_rule: ShapeRule) -> list[tuple[int, int]]:
    """Three sizes the rule accepts: about 32x32, 48x48 and 64x48 (the fixed size thrice)."""
    if shape_rule.fixed_size is not None:
        return [(shape_rule.fixed_size, shape_rule.fixed_size)] * 3
    return [shape_rule.nearest(h, w) for h, w in ((32, 32), (48, 48), (64, 48))]


def parity_images(
    rng: np.random.Generator, batch: int, height: int, width: int, channels: int
) -> np.ndarray:
    """Photo-like uint8 images [N, H, W, C]: gradients, soft discs and a wave, plus noise."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    images = np.empty((batch, height, width, channels), dtype=np.uint8)
    for n in range(batch):
        planes = []
        for _ in range(channels):
            a, b = rng.uniform(-1, 1, 2)
            plane = a * xx + b * yy  # a gradient
            for _ in range(3):  # soft-edged discs
                cy, cx, radius = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.3)
                distance = np.hypot(yy - cy, xx - cx)
                plane += rng.uniform(-1, 1) / (1 + np.exp((distance - radius) * 40))
            frequency, phase = rng.uniform(2, 8), rng.uniform(0, 2 * np.pi)
            plane += 0.2 * np.sin(2 * np.pi * frequency * (xx + yy) + phase)
            planes.append(plane)
        image = np.stack(planes, axis=-1)
        image = (image - image.min()) / max(float(np.ptp(image)), 1e-6) * 255
        image += rng.normal(0, 6, image.shape)
        images[n] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return images


def _pair(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def overall(cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The measures over all cases: the largest error, the fraction over all pixels, the
    lowest PSNR (None when every case is identical)."""
    psnrs = [case["psnr"] for case in cases if case["psnr"] is not None]
    pixels = [case["batch"] * case["height"] * case["width"] for case in cases]
    over = sum(case["fraction_over_1"] * count for case, count in zip(cases, pixels, strict=True))
    return {
        "max_abs_diff": max(case["max_abs_diff"] for case in cases),
        "fraction_over_1": over / sum(pixels),
        "psnr": min(psnrs) if psnrs else None,
    }


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_runner(path: Path) -> Runner:
    """A translator graph in ONNX Runtime's CPU provider: (images (N, H, W, C), style
    (N, S) or None for a graph without a style input) -> outputs."""
    session = _session(path)
    names = [value.name for value in session.get_inputs()]

    def run(images: np.ndarray, style: np.ndarray | None = None) -> np.ndarray:
        feeds = {names[0]: images}
        if len(names) > 1:
            if style is None:
                raise ValueError(f"{path.name} takes a style input ({names[1]}): give one")
            feeds[names[1]] = style
        return np.asarray(session.run(None, feeds)[0])

    return run


def _onnx_encoder(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A style encoder graph in ONNX Runtime's CPU provider: images -> float32 codes."""
    session = _session(path)
    name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: images})[0], dtype=np.float32)

    return run


def _pytorch_runner(translator: nn.Module) -> Runner:
    def run(images: np.ndarray, style: np.ndarray | None = None) -> np.ndarray:
        inputs = [torch.from_numpy(images)]
        if style is not None and np.issubdtype(style.dtype, np.integer):  # target indices
            inputs.append(torch.from_numpy(np.ascontiguousarray(style, dtype=np.int64)))
        elif style is not None:
            inputs.append(torch.from_numpy(np.ascontiguousarray(style, dtype=np.float32)))
        with eval_mode(translator), torch.inference_mode():
            return translator(*inputs).numpy()

    return run
