"""Parity reports: fixed inputs, correct measures, and broken exports are caught."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from i2i.export import check_parity, convert_fp16, parity_ok_fp16, parity_ok_fp32
from i2i.export.parity import compare, default_sizes, parity_images
from i2i.models import ShapeRule
from tests.export.conftest import Exported, generator_keys

ExportedFactory = Callable[[str], Exported]


def test_parity_images_are_fixed_and_photo_like() -> None:
    first = parity_images(np.random.default_rng(3), 2, 48, 64, 3)
    again = parity_images(np.random.default_rng(3), 2, 48, 64, 3)
    other = parity_images(np.random.default_rng(4), 2, 48, 64, 3)
    assert first.dtype == np.uint8 and first.shape == (2, 48, 64, 3)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert not np.array_equal(first[0], first[1])
    values = first.astype(float)
    assert values.std() > 30  # uses the range
    # Smooth plus noise: neighbours differ by the noise, far less than in pure noise (~85).
    assert np.abs(np.diff(values, axis=2)).mean() < 15
    assert parity_images(np.random.default_rng(0), 1, 8, 8, 1).shape == (1, 8, 8, 1)


def test_default_sizes_follow_the_shape_rule() -> None:
    assert default_sizes(ShapeRule(multiple_of=4)) == [(32, 32), (48, 48), (64, 48)]
    assert default_sizes(ShapeRule(multiple_of=16)) == [(32, 32), (48, 48), (64, 48)]
    assert default_sizes(ShapeRule(multiple_of=5)) == [(30, 30), (50, 50), (65, 50)]
    assert default_sizes(ShapeRule(fixed_size=128)) == [(128, 128)] * 3


def test_compare_measures() -> None:
    expected = np.full((1, 10, 10, 3), 100, np.uint8)
    same = compare(expected.copy(), expected)
    assert same == {"max_abs_diff": 0, "fraction_over_1": 0.0, "psnr": None}
    output = expected.copy()
    output[0, 0, 0, 1] = 103  # one pixel, one channel, three levels
    output[0, 5, 5, :] = 99  # one pixel, every channel, one level
    measures = compare(output, expected)
    assert measures["max_abs_diff"] == 3
    assert measures["fraction_over_1"] == pytest.approx(1 / 100)
    mse = (9 + 3) / 300
    assert measures["psnr"] == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-3)
    with pytest.raises(ValueError, match="shape"):
        compare(output[:, :5], expected)


def _report(fractions: list[float], psnrs: list[float | None]) -> dict[str, Any]:
    cases = [
        {"batch": 1, "height": 8, "width": 8, "max_abs_diff": 2, "fraction_over_1": f, "psnr": p}
        for f, p in zip(fractions, psnrs, strict=True)
    ]
    return {"cases": cases}


def test_parity_thresholds() -> None:
    assert parity_ok_fp32(_report([0.0, 0.001], [50.0, None]))
    assert not parity_ok_fp32(_report([0.0, 0.0011], [50.0, None]))
    assert parity_ok_fp32(_report([0.004], [50.0]), max_fraction=0.005)
    assert parity_ok_fp16(_report([0.5, 0.5], [40.0, None]))
    assert not parity_ok_fp16(_report([0.0, 0.0], [39.9, 60.0]))
    assert not parity_ok_fp16(_report([0.0], [45.0]), min_psnr=50.0)
    assert not parity_ok_fp32({"cases": []}) and not parity_ok_fp16({"cases": []})


def test_report_layout(exported: ExportedFactory) -> None:
    case = exported("cyclegan/A2B")
    report = check_parity(case.translator, case.path, case.shape_rule, case.channels, seed=5)
    assert json.loads(json.dumps(report)) == report
    assert report["artifact"] == case.path.name and report["reference"] == "pytorch"
    assert "CPUExecutionProvider" in report["runtime"]
    shapes = [(c["height"], c["width"], c["batch"]) for c in report["cases"]]
    assert shapes == [(h, w, b) for h, w in default_sizes(case.shape_rule) for b in (1, 4)]
    assert report["max_abs_diff"] == max(c["max_abs_diff"] for c in report["cases"])
    assert 0 <= report["fraction_over_1"] <= max(c["fraction_over_1"] for c in report["cases"])
    again = check_parity(case.translator, case.path, case.shape_rule, case.channels, seed=5)
    assert again == report  # fixed inputs, deterministic runtimes


def test_parity_flags_a_graph_of_another_generator(
    exported: ExportedFactory, tmp_path: Path
) -> None:
    a2b, b2a = exported("cyclegan/A2B"), exported("cyclegan/B2A")
    # Both directions have the same architecture, so only the weights differ.
    report = check_parity(a2b.translator, b2a.path, a2b.shape_rule, a2b.channels)
    assert not parity_ok_fp32(report)
    assert report["max_abs_diff"] > 10 and report["fraction_over_1"] > 0.1
    # An FP16 graph of the wrong generator fails against the right FP32 graph.
    wrong_fp16 = tmp_path / "wrong.fp16.onnx"
    convert_fp16(b2a.path, wrong_fp16)
    report16 = check_parity(
        a2b.translator, wrong_fp16, a2b.shape_rule, a2b.channels, reference_onnx=a2b.path
    )
    assert report16["psnr"] is not None and report16["psnr"] < 40
    assert not parity_ok_fp16(report16)
    assert not parity_ok_fp32(report16["against_pytorch"])


def test_parity_rejects_sizes_the_rule_does_not_accept(exported: ExportedFactory) -> None:
    case = exported("cyclegan/A2B")
    with pytest.raises(ValueError, match="multiples of 4"):
        check_parity(case.translator, case.path, case.shape_rule, case.channels, sizes=[30])
    with pytest.raises(ValueError, match="batches"):
        check_parity(case.translator, case.path, case.shape_rule, case.channels, batches=())
    with pytest.raises(ValueError, match="channels"):
        check_parity(case.translator, case.path, case.shape_rule, 2)


@pytest.mark.parametrize("key", ["cyclegan/A2B", *generator_keys()])
def test_uint8_is_only_cast_never_transposed(exported: ExportedFactory, key: str) -> None:
    """TensorRT takes uint8 only as a network input or output, cast to or from float before
    any other layer: the translators cast first and transpose floats."""
    model = onnx.shape_inference.infer_shapes(onnx.load(exported(key).path))
    graph = model.graph
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in [*graph.input, *graph.output, *graph.value_info]
    }
    uint8 = [
        f"{node.op_type} {node.name}"
        for node in graph.node
        if any(types.get(name) == onnx.TensorProto.UINT8 for name in [*node.input, *node.output])
    ]
    assert sorted(uint8) == sorted(
        f"Cast {n.name}"
        for n in graph.node
        if n.op_type == "Cast" and (n.input[0] == "image" or n.output[0] == "translated")
    )
    assert len(uint8) == 2  # image -> float, and float -> translated
