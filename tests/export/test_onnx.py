"""ONNX export: every family and generator kind exports, passes the checker and matches PyTorch."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import nn

from i2i.export import (
    ExportError,
    check_parity,
    export_onnx,
    parity_ok_fp32,
    training_mode_batchnorm_nodes,
)
from i2i.export.parity import parity_images
from i2i.models import ImageTranslator, ShapeRule
from tests.export.conftest import Exported, family_cases, generator_keys

ExportedFactory = Callable[[str], Exported]


def _op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(path).graph.node}


def _check_exported(case: Exported) -> None:
    info, path = case.info, case.path
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(path)
    assert info["opset"] >= 18
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {info["opset"]}
    if case.shape_rule.fixed_size is None:
        sizes: list[int | str] = ["height", "width"]
    else:
        sizes = [case.shape_rule.fixed_size] * 2
    out_channels = getattr(case.translator, "out_channels", 3)
    assert info["input"] == {
        "name": "image",
        "dtype": "uint8",
        "shape": ["batch", *sizes, case.channels],
    }
    assert info["output"] == {
        "name": "translated",
        "dtype": "uint8",
        "shape": ["batch", *sizes, out_channels],
    }
    assert info["size_bytes"] == path.stat().st_size
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["file"] == path.name
    json.dumps(info)  # goes into the manifest as it is
    assert training_mode_batchnorm_nodes(model) == []


@pytest.mark.parametrize("key", family_cases())
def test_family_translator_exports_and_matches_pytorch(exported: ExportedFactory, key: str) -> None:
    case = exported(key)
    _check_exported(case)
    report = check_parity(
        case.translator, case.path, case.shape_rule, case.channels, style_dim=case.style_dim
    )
    assert len(report["cases"]) == 6  # three sizes, batch 1 and 4
    assert {c["batch"] for c in report["cases"]} == {1, 4}
    assert parity_ok_fp32(report), report


@pytest.mark.parametrize("key", generator_keys())
def test_generator_exports_and_matches_pytorch(exported: ExportedFactory, key: str) -> None:
    case = exported(key)
    _check_exported(case)
    report = check_parity(case.translator, case.path, case.shape_rule, case.channels)
    assert parity_ok_fp32(report), report
    ops = _op_types(case.path)
    if "-instance-" in key:
        assert "InstanceNormalization" in ops
        assert "BatchNormalization" not in ops
    else:  # eval-mode batch norm is folded into the convolutions (or left in inference form)
        assert "InstanceNormalization" not in ops
    # The network must not be trivially flat, or parity would prove nothing.
    size = case.shape_rule.fixed_size or 64
    images = torch.from_numpy(parity_images(np.random.default_rng(0), 2, size, size, case.channels))
    with torch.no_grad():
        assert case.translator(images).float().std() > 3


def test_resnet_export_takes_other_sizes_and_batches(exported: ExportedFactory) -> None:
    case = exported("cyclegan/A2B")
    report = check_parity(
        case.translator,
        case.path,
        case.shape_rule,
        case.channels,
        sizes=[(36, 44), 8, (96, 20)],
        batches=(3,),
    )
    assert [(c["height"], c["width"], c["batch"]) for c in report["cases"]] == [
        (36, 44, 3),
        (8, 8, 3),
        (96, 20, 3),
    ]
    assert parity_ok_fp32(report), report


def test_unet_export_has_fixed_size(exported: ExportedFactory) -> None:
    case = exported("unet_128-instance-3-1")
    session = ort.InferenceSession(str(case.path), providers=["CPUExecutionProvider"])
    output = session.run(None, {"image": np.zeros((3, 128, 128, 3), np.uint8)})[0]
    assert output.shape == (3, 128, 128, 1) and output.dtype == np.uint8
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"image": np.zeros((1, 64, 64, 3), np.uint8)})


def _bn_model(
    *, training_mode: int | None = None, outputs: int = 1, in_subgraph: bool = False
) -> onnx.ModelProto:
    """uint8 image -> Cast -> Transpose -> BatchNormalization -> Transpose -> Cast -> uint8."""
    attributes = {} if training_mode is None else {"training_mode": training_mode}
    bn_outputs = ["normed", "running_mean", "running_var"][:outputs]
    bn = helper.make_node(
        "BatchNormalization",
        ["nchw", "scale", "bias", "mean", "var"],
        bn_outputs,
        name="suspect_bn",
        **attributes,
    )
    stats = [
        helper.make_tensor(name, TensorProto.FLOAT, [3], value)
        for name, value in (
            ("scale", [1] * 3),
            ("bias", [0] * 3),
            ("mean", [0] * 3),
            ("var", [1] * 3),
        )
    ]
    if in_subgraph:
        branch = helper.make_graph(
            [bn],
            "branch",
            [],
            [helper.make_tensor_value_info("normed", TensorProto.FLOAT, None)],
        )
        unchanged = helper.make_graph(
            [helper.make_node("Identity", ["nchw"], ["same"])],
            "unchanged",
            [],
            [helper.make_tensor_value_info("same", TensorProto.FLOAT, None)],
        )
        condition = helper.make_tensor("always", TensorProto.BOOL, [], [True])
        middle = [
            helper.make_node(
                "If", ["always"], ["normed"], then_branch=branch, else_branch=unchanged
            )
        ]
        stats.append(condition)
    else:
        middle = [bn]
    nodes = [
        helper.make_node("Cast", ["image"], ["floats"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["floats"], ["nchw"], perm=[0, 3, 1, 2]),
        *middle,
        helper.make_node("Transpose", ["normed"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Cast", ["nhwc"], ["translated"], to=TensorProto.UINT8),
    ]
    shape = ["batch", "height", "width", 3]
    graph = helper.make_graph(
        nodes,
        "stand_in",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, shape)],
        [helper.make_tensor_value_info("translated", TensorProto.UINT8, shape)],
        initializer=stats,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_training_mode_batchnorm_detector() -> None:
    assert training_mode_batchnorm_nodes(_bn_model(training_mode=1, outputs=3)) == ["suspect_bn"]
    # Running statistics as outputs are only defined in training mode.
    assert training_mode_batchnorm_nodes(_bn_model(outputs=3)) == ["suspect_bn"]
    assert training_mode_batchnorm_nodes(_bn_model(training_mode=1, in_subgraph=True)) == [
        "suspect_bn"
    ]
    assert training_mode_batchnorm_nodes(_bn_model()) == []
    assert training_mode_batchnorm_nodes(_bn_model(training_mode=0)) == []
    onnx.checker.check_model(_bn_model(training_mode=1, outputs=3), full_check=True)


def test_export_refuses_a_graph_with_training_mode_batchnorm(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = _bn_model(training_mode=1, outputs=3)
    monkeypatch.setattr(
        torch.onnx, "export", lambda *args, **kwargs: types.SimpleNamespace(model_proto=bad)
    )
    path = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="training mode.*suspect_bn"):
        export_onnx(ImageTranslator(nn.Identity(), 3, 3), path, ShapeRule(multiple_of=4), 3)
    assert not path.exists()


class BatchStatsNorm(nn.Module):
    """Instance norm written as training-mode batch norm over (1, N*C, H, W), as MUNIT's
    AdaIN is: the pattern that exports as training-mode BatchNormalization."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        n, c, h, w = x.shape
        normed = F.batch_norm(x.reshape(1, n * c, h, w), None, None, training=True)
        return torch.tanh(normed.view(n, c, h, w))


def test_batch_statistics_norm_exports_safely(tmp_path: Path) -> None:
    translator = ImageTranslator(BatchStatsNorm(), 3, 3).eval()
    rule = ShapeRule(multiple_of=4)
    path = tmp_path / "adain.onnx"
    export_onnx(translator, path, rule, 3)  # raises ExportError on training-mode BN
    assert training_mode_batchnorm_nodes(onnx.load(path)) == []
    assert parity_ok_fp32(check_parity(translator, path, rule, 3, batches=(2,)))


def test_legacy_exporter_shows_the_trap(tmp_path: Path) -> None:
    """The TorchScript exporter writes the same module as training-mode BatchNormalization."""
    translator = ImageTranslator(BatchStatsNorm(), 3, 3).eval()
    path = tmp_path / "legacy.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                translator,
                (torch.zeros(2, 32, 32, 3, dtype=torch.uint8),),
                str(path),
                dynamo=False,
                opset_version=18,
            )
    except Exception as error:  # removed from newer torch: nothing left to show
        pytest.skip(f"the TorchScript exporter is unavailable: {error}")
    assert training_mode_batchnorm_nodes(onnx.load(path))


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) if x.mean() > 0 else -torch.tanh(x)


def test_export_failure_is_an_export_error(tmp_path: Path) -> None:
    translator = ImageTranslator(DataDependent(), 3, 3)
    with pytest.raises(ExportError, match="could not export ImageTranslator"):
        export_onnx(translator, tmp_path / "x.onnx", ShapeRule(multiple_of=4), 3)


def test_export_arguments_are_checked(tmp_path: Path) -> None:
    translator = ImageTranslator(nn.Identity(), 3, 3)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(translator, tmp_path / "x.onnx", ShapeRule(), 3, opset=17)
    with pytest.raises(ValueError, match="channels"):
        export_onnx(translator, tmp_path / "x.onnx", ShapeRule(), 2)


def test_export_options_and_modes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    generator = nn.Sequential(nn.Conv2d(3, 1, 1), nn.BatchNorm2d(1), nn.Dropout(0.5), nn.Tanh())
    translator = ImageTranslator(generator, 3, 1)
    translator.train()
    rule = ShapeRule()  # any size
    path = tmp_path / "nested" / "tiny.onnx"
    with caplog.at_level(logging.INFO, logger="i2i.export.onnx"):
        info = export_onnx(translator, path, rule, 3, opset=19, simplify=True)
    assert info["opset"] == 19
    assert info["input"]["shape"] == ["batch", "height", "width", 3]
    assert info["output"]["shape"] == ["batch", "height", "width", 1]
    if info["simplifier"] is None:
        assert "not simplifying" in caplog.text
    # Exported in eval mode (batch norm in inference form, no dropout), modes restored.
    assert all(layer.training for layer in translator.modules())
    assert training_mode_batchnorm_nodes(onnx.load(path)) == []
    assert "Dropout" not in _op_types(path)
    assert parity_ok_fp32(check_parity(translator, path, rule, 3, sizes=[(7, 13)]))
    assert all(layer.training for layer in translator.modules())


def test_simplify_uses_an_installed_simplifier(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[onnx.ModelProto] = []

    def slim(model: onnx.ModelProto) -> onnx.ModelProto:
        calls.append(model)
        return model

    monkeypatch.setitem(sys.modules, "onnxslim", types.SimpleNamespace(slim=slim))
    translator = ImageTranslator(nn.Sequential(nn.Conv2d(1, 1, 1), nn.Tanh()), 1, 1)
    info = export_onnx(translator, tmp_path / "s.onnx", ShapeRule(), 1, simplify=True)
    assert info["simplifier"] == "onnxslim" and len(calls) == 1
    info = export_onnx(translator, tmp_path / "n.onnx", ShapeRule(), 1)
    assert info["simplifier"] is None and len(calls) == 1
