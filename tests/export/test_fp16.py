"""FP16 conversion: uint8 I/O kept, normalisation and uint8 conversion in FP32, >= 40 dB."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto

from i2i.export import ExportError, check_parity, convert_fp16, parity_ok_fp16
from i2i.export.fp16 import io_processing_nodes
from tests.export.conftest import Exported, family_cases, generator_keys

ExportedFactory = Callable[[str], Exported]


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every named value: inputs, outputs, initializers, inferred values."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        types[value.name] = value.type.tensor_type.elem_type
    return types


@pytest.mark.parametrize("key", [family_cases()[0], *generator_keys()])
def test_fp16_conversion(exported: ExportedFactory, key: str, tmp_path: Path) -> None:
    case = exported(key)
    fp16_path = tmp_path / f"{case.path.stem}.fp16.onnx"
    info = convert_fp16(case.path, fp16_path)
    onnx.checker.check_model(str(fp16_path), full_check=True)
    json.dumps(info)
    assert info["precision"] == "fp16" and info["source"] == case.path.name
    assert info["sha256"] == hashlib.sha256(fp16_path.read_bytes()).hexdigest()
    assert info["size_bytes"] == fp16_path.stat().st_size
    # The uint8 interface is exactly the FP32 graph's.
    assert info["input"] == case.info["input"] and info["output"] == case.info["output"]

    model = onnx.load(fp16_path)
    types = _value_types(model)
    nodes = list(model.graph.node)
    convolutions = [n for n in nodes if n.op_type in ("Conv", "ConvTranspose")]
    assert convolutions and all(types[n.input[1]] == TensorProto.FLOAT16 for n in convolutions)
    kept = [n for n in nodes if n.op_type in ("InstanceNormalization", "Round", "Clip")]
    for node in kept:
        assert types[node.input[0]] == TensorProto.FLOAT, node.name
        assert types[node.output[0]] == TensorProto.FLOAT, node.name
    if "instance" in key or key.startswith("cyclegan"):
        assert "InstanceNormalization" in info["blocked_ops"]
        assert any(n.op_type == "InstanceNormalization" for n in kept)
    assert {"Round", "Clip"} <= set(info["blocked_ops"])
    # The pre-processing (Cast, Div, Sub) and post-processing (Add, Mul, Round, Clip,
    # Cast) are found and kept in FP32.
    blocked_ops = {
        n.op_type for n in onnx.load(case.path).graph.node if n.name in info["blocked_nodes"]
    }
    assert {"Cast", "Transpose", "Round", "Clip"} <= blocked_ops

    report = check_parity(
        case.translator, fp16_path, case.shape_rule, case.channels, reference_onnx=case.path
    )
    assert report["reference"] == "onnx-fp32" and report["reference_file"] == case.path.name
    assert parity_ok_fp16(report), report
    assert report["against_pytorch"]["cases"]
    json.dumps(report)


def test_io_processing_nodes_are_the_chains_at_the_ends(exported: ExportedFactory) -> None:
    model = onnx.load(exported(family_cases()[0]).path)
    by_name = {n.name: n for n in model.graph.node}
    found = io_processing_nodes(model.graph)
    ops = sorted(by_name[name].op_type for name in found)
    # uint8 -> float, / 127.5, - 1, NHWC -> NCHW; + 1, * 127.5, round, clip, -> uint8, NCHW -> NHWC
    assert ops == sorted(
        ["Cast", "Div", "Sub", "Transpose", "Add", "Mul", "Round", "Clip", "Cast", "Transpose"]
    )
    # Nothing of the generator: its first convolution and its final Tanh are outside.
    assert all(by_name[name].op_type not in ("Conv", "Tanh") for name in found)


def test_converting_twice_is_an_export_error(exported: ExportedFactory, tmp_path: Path) -> None:
    case = exported(family_cases()[0])
    once = tmp_path / "once.onnx"
    convert_fp16(case.path, once)
    with pytest.raises(ExportError, match="FP16"):
        convert_fp16(once, tmp_path / "twice.onnx")
    assert not (tmp_path / "twice.onnx").exists()
