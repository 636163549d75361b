"""FP16 conversion: uint8 I/O kept, normalisation and uint8 conversion in FP32, >= 40 dB."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from i2i.checkpoint import load_checkpoint, save_checkpoint
from i2i.export import ExportError, check_parity, convert_fp16, export_checkpoint, parity_ok_fp16
from i2i.export.fp16 import io_processing_nodes, normalisation_nodes
from i2i.export.onnx import save_model
from tests.conftest import untrained_checkpoint
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


def _cast_round_trips(model: onnx.ModelProto) -> list[str]:
    """Names of Cast(to=FLOAT) nodes reading a Cast(to=FLOAT16): FP32 values through FP16."""
    producer = {out: n for n in model.graph.node for out in n.output}
    to = {n.name: n.attribute[0].i for n in model.graph.node if n.op_type == "Cast"}
    return [
        n.name
        for n in model.graph.node
        if to.get(n.name) == TensorProto.FLOAT
        and n.input[0] in producer
        and to.get(producer[n.input[0]].name) == TensorProto.FLOAT16
    ]


def test_munit_statistics_run_in_fp32(exported: ExportedFactory, tmp_path: Path) -> None:
    case = exported("munit/A2B")
    fp32 = onnx.load(case.path)
    fp16_path = tmp_path / "munit.fp16.onnx"
    info = convert_fp16(case.path, fp16_path)
    model = onnx.load(fp16_path)
    types = _value_types(model)
    by_name = {n.name: n for n in model.graph.node}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in fp32.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    # The centring Sub of every mean-of-x (layer norm, AdaIN) and the square of its result.
    centring = [
        user
        for mean in fp32.graph.node
        if mean.op_type == "ReduceMean"
        for user in consumers.get(mean.output[0], [])
        if user.op_type == "Sub" and list(user.input) == [mean.input[0], mean.output[0]]
    ]
    squares = {
        user.name: user
        for sub in centring
        for user in consumers[sub.output[0]]
        if user.op_type == "Mul" and list(user.input) == [sub.output[0]] * 2
    }.values()
    assert len(centring) >= 4 and len(squares) == len(centring)  # 2 AdaIN, 2 layer norms
    for node in [*centring, *squares]:
        assert node.name in info["normalisation_nodes"]
        converted = by_name[node.name]
        assert all(types[name] == TensorProto.FLOAT for name in converted.input), node.name
        assert types[converted.output[0]] == TensorProto.FLOAT, node.name
    # The normalising Mul/Div and the statistic's Sqrt read FP32 too, and no FP32 value goes
    # through FP16 and back between blocked nodes.
    for name in info["normalisation_nodes"]:
        node = by_name[name]
        if node.op_type in ("Div", "Sqrt", "Reciprocal"):
            assert all(types[i] == TensorProto.FLOAT for i in node.input if i in types), name
    assert _cast_round_trips(model) == []
    # Convolutions stay FP16, and so does what follows a normalisation (gamma, beta).
    assert all(
        types[n.input[0]] == TensorProto.FLOAT16 for n in model.graph.node if n.op_type == "Conv"
    )
    centred = {sub.output[0] for sub in centring}
    normalisers = [
        n
        for n in fp32.graph.node
        if n.op_type in ("Mul", "Div") and n.input[0] in centred and n.input[1] not in centred
    ]
    assert len(normalisers) == len(centring)
    for normaliser in normalisers:
        assert normaliser.name in info["normalisation_nodes"]
        for affine in consumers[normaliser.output[0]]:
            assert affine.name not in info["normalisation_nodes"]
            assert types[by_name[affine.name].output[0]] == TensorProto.FLOAT16, affine.name


def test_munit_with_large_decoder_activations_keeps_40_db(tmp_path: Path) -> None:
    """Convolutions before AdaIN with weights x400 (AdaIN is scale-invariant, so the FP32
    output barely moves): centred values above 256 must not be squared in FP16."""
    checkpoint = untrained_checkpoint(tmp_path / "munit.pt", "munit")
    payload = load_checkpoint(checkpoint)
    state = payload["networks"]["gen_b"]
    scaled = [k for k in state if k.startswith("dec.model.0.") and k.endswith("conv.weight")]
    assert scaled
    for key in scaled:
        state[key] = state[key] * 400
    save_checkpoint(payload, checkpoint)

    _, manifest = export_checkpoint(
        checkpoint, tmp_path / "repo", "munit", formats=["onnx", "onnx-fp16"]
    )
    fp16 = [a for a in manifest["artifacts"] if a["precision"] == "fp16"]
    assert {a["direction"] for a in fp16} == {"A2B", "B2A"}
    a2b = next(a for a in fp16 if a["direction"] == "A2B")
    for case in a2b["parity"]["cases"]:  # psnr None: identical images
        assert case["psnr"] is None or case["psnr"] >= 40, case


def test_normalisation_nodes_need_a_statistic_of_the_centred_value() -> None:
    """``(x - mean(x)) / (std(x) + eps)`` is found; ``(x - mean(x)) * w`` with a learned
    ``w`` is not (only its reduction is, by op type)."""
    eps = helper.make_tensor("eps", TensorProto.FLOAT, [], [1e-5])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 2, 1, 1], [2.0, 3.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["m"], name="mean"),
        helper.make_node("Sub", ["x", "m"], ["d"], name="centre"),
        helper.make_node("Mul", ["d", "d"], ["sq"], name="square"),
        helper.make_node("ReduceMean", ["sq", "axes"], ["var"], name="var"),
        helper.make_node("Sqrt", ["var"], ["std"], name="std"),
        helper.make_node("Add", ["std", "eps"], ["den"], name="add_eps"),
        helper.make_node("Div", ["d", "den"], ["y"], name="normalise"),
        helper.make_node("Mul", ["y", "w"], ["z"], name="gamma"),
        helper.make_node("ReduceMean", ["z", "axes"], ["m2"], name="mean2"),
        helper.make_node("Sub", ["z", "m2"], ["d2"], name="centre2"),
        helper.make_node("Mul", ["d2", "w"], ["out"], name="scale"),
    ]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "norm",
        [value("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [value("out", TensorProto.FLOAT, [1, 2, 4, 4])],
        [eps, w, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert normalisation_nodes(model) == {
        "mean",
        "centre",
        "square",
        "var",
        "std",
        "add_eps",
        "normalise",
    }


def test_conversion_keeps_large_statistics_finite(tmp_path: Path) -> None:
    """A layer norm of values around 1000 (variance about 1e6, beyond FP16's 65504)."""
    eps = helper.make_tensor("eps", TensorProto.FLOAT, [], [1e-5])
    k = helper.make_tensor("k", TensorProto.FLOAT, [2, 2, 1, 1], [1.0, 0.5, -0.5, 1.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["c"], name="conv"),
        helper.make_node("ReduceMean", ["c", "axes"], ["m"], name="mean"),
        helper.make_node("Sub", ["c", "m"], ["d"], name="centre"),
        helper.make_node("Mul", ["d", "d"], ["sq"], name="square"),
        helper.make_node("ReduceMean", ["sq", "axes"], ["var"], name="var"),
        helper.make_node("Shape", ["var"], ["var_shape"], name="var_shape"),
        helper.make_node("Reshape", ["var", "var_shape"], ["var2"], name="reshape"),
        helper.make_node("Add", ["var2", "eps"], ["ve"], name="add_eps"),
        helper.make_node("Sqrt", ["ve"], ["std"], name="std"),
        helper.make_node("Reciprocal", ["std"], ["inv"], name="inv"),
        helper.make_node("Mul", ["d", "inv"], ["y"], name="normalise"),
        helper.make_node("Conv", ["y", "k"], ["out"], name="conv2"),
    ]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "norm",
        [value("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [value("out", TensorProto.FLOAT, [1, 2, 8, 8])],
        [eps, k, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    src = tmp_path / "norm.onnx"
    save_model(model, src)
    info = convert_fp16(src, tmp_path / "norm.fp16.onnx")
    assert {"centre", "square", "normalise", "add_eps"} <= set(info["normalisation_nodes"])

    x = np.random.default_rng(0).normal(0, 1000, (1, 2, 8, 8)).astype(np.float32)
    expected = ort.InferenceSession(str(src)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(tmp_path / "norm.fp16.onnx")).run(None, {"x": x})[0]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, atol=0.02)
