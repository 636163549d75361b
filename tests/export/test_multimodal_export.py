"""Export of multimodal families: translators with a style input, style encoder graphs, parity
with fixed style codes, FP16, and the manifest's backwards-compatible extension."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from i2i.checkpoint import load_trained_networks
from i2i.cli.models import format_manifest
from i2i.export import ExportError, check_parity, convert_fp16, export_onnx, parity_ok_fp32
from i2i.export.onnx import export_style_encoder
from i2i.models import get_family, options_from_dict
from i2i.repository import RepositoryError, read_manifest, validate_manifest
from tests.conftest import MultimodalModel
from tests.multimodal_family import registered


def manifest_of(model: MultimodalModel) -> dict[str, Any]:
    return read_manifest(model.repository, model.name, 1, verify=True)


def networks_of(model: MultimodalModel) -> tuple[Any, dict[str, nn.Module], dict[str, nn.Module]]:
    """(family, translators, style encoders) of the model's checkpoint, family registered."""
    payload, networks = load_trained_networks(model.checkpoint)
    options = options_from_dict(payload["family"], payload["config"]["model"])
    family = get_family(payload["family"])
    assert family.style_encoders is not None
    return family, family.translators(networks, options), family.style_encoders(networks, options)


def test_manifest_records_style_and_style_encoder(multimodal_model: MultimodalModel) -> None:
    manifest = manifest_of(multimodal_model)
    files = {a["file"]: a for a in manifest["artifacts"]}
    for direction, spec in manifest["directions"].items():
        size = spec["style"]["shape"][-1]
        assert spec["style"] == {"name": "style", "dtype": "float32", "shape": ["batch", size]}
        encoder = spec["style_encoder"]
        assert encoder["input"]["dtype"] == "uint8"
        assert encoder["input"]["shape"] == ["batch", "height", "width", 3]
        assert encoder["output"] == {"name": "style", "dtype": "float32", "shape": ["batch", size]}
        assert encoder["shape_rule"] == spec["shape_rule"]
        translator = files[f"{direction}.onnx"]
        assert "graph" not in translator  # absent means translator: old readers' default
        assert translator["parity"]["styles"] == sum(
            c["batch"] for c in translator["parity"]["cases"]
        )
        assert translator["parity"]["fraction_over_1"] <= 0.001
        for name, precision in (
            (f"{direction}.style.onnx", "fp32"),
            (f"{direction}.style.fp16.onnx", "fp16"),
        ):
            artifact = files[name]
            assert (artifact["graph"], artifact["precision"]) == ("style_encoder", precision)
            assert artifact["parity"]["reference"] == (
                "pytorch" if precision == "fp32" else "onnx-fp32"
            )
            assert artifact["parity"]["max_abs_diff_style"] < (
                1e-4 if precision == "fp32" else 1e-2
            )
    text = format_manifest(manifest)
    assert "style encoder image uint8" in text and "A2B style encoder" in text


def test_the_style_shares_the_image_batch_and_fp16_keeps_it_float32(
    multimodal_model: MultimodalModel, tmp_path: Path
) -> None:
    folder = multimodal_model.repository / multimodal_model.name / "1"
    for name in ("A2B.onnx", "A2B.fp16.onnx"):
        graph = onnx.load(folder / name).graph
        image, style = graph.input
        assert style.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert style.type.tensor_type.shape.dim[0].dim_param == "batch"
        assert image.type.tensor_type.shape.dim[0].dim_param == "batch"
    # The hand-written instance statistics of AdaIN stay in FP32.
    info = convert_fp16(folder / "A2B.onnx", tmp_path / "again.fp16.onnx")
    assert {"ReduceMean", "Sqrt"} <= set(info["blocked_ops"])
    encoder = onnx.load(folder / "A2B.style.fp16.onnx").graph
    assert encoder.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


class IgnoresStyle(nn.Module):
    """A translator that drops its style: what an export that lost the style input computes."""

    def __init__(self, translator: nn.Module, style_dim: int) -> None:
        super().__init__()
        self.translator, self.in_channels, self.style_dim = translator, 3, style_dim

    def forward(self, image: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.translator(image, torch.zeros_like(style))


def test_parity_with_several_codes_catches_a_graph_that_ignores_the_style(
    multimodal_model: MultimodalModel, tmp_path: Path
) -> None:
    with registered(multimodal_model.family):
        family, translators, _ = networks_of(multimodal_model)
        translator = translators["A2B"]
        rule = family.shape_rule(None)
        path = tmp_path / "ignores.onnx"
        export_onnx(
            IgnoresStyle(translator, family.style_dim), path, rule, 3, style_dim=family.style_dim
        )
        report = check_parity(translator, path, rule, 3, style_dim=family.style_dim)
    assert not parity_ok_fp32(report)
    assert report["fraction_over_1"] > 0.1


def test_export_refuses_a_style_encoder_of_the_wrong_size(
    multimodal_model: MultimodalModel, tmp_path: Path
) -> None:
    with registered(multimodal_model.family):
        family, _, encoders = networks_of(multimodal_model)
        size = multimodal_model.style_dim
        with pytest.raises(
            ExportError,
            match=rf"output is float32 \['batch', {size}\], expected float32 \['batch', 5\]",
        ):
            export_style_encoder(
                encoders["A2B"], tmp_path / "x.onnx", family.shape_rule(None), 3, style_dim=5
            )
    assert not (tmp_path / "x.onnx").exists()


def old_form(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as an i2i without style encoders wrote it."""
    old = copy.deepcopy(manifest)
    for spec in old["directions"].values():
        del spec["style_encoder"]
    old["artifacts"] = [a for a in old["artifacts"] if "graph" not in a]
    return old


def test_the_schema_extension_is_backwards_compatible_and_checked(
    multimodal_model: MultimodalModel,
) -> None:
    manifest = manifest_of(multimodal_model)
    validate_manifest(old_form(manifest))  # manifests without the extension stay valid
    explicit = copy.deepcopy(manifest)
    explicit["artifacts"][0]["graph"] = "translator"  # the default, written out
    validate_manifest(explicit)

    def refused(manifest: dict[str, Any], words: str) -> None:
        with pytest.raises(RepositoryError, match=words):
            validate_manifest(manifest, "m")

    orphan = old_form(manifest)
    orphan["artifacts"].append(
        next(a for a in manifest["artifacts"] if a["file"] == "A2B.style.onnx")
    )
    refused(orphan, r"\$\.artifacts\[\d+\]\.graph: a style encoder of 'A2B', whose direction")
    unstyled = copy.deepcopy(manifest)
    unstyled["directions"]["A2B"]["style"] = None
    refused(unstyled, r"\$\.directions\.A2B\.style_encoder: declared, but the direction takes")
    missing = copy.deepcopy(manifest)
    missing["artifacts"] = [
        a for a in missing["artifacts"] if not a["file"].startswith("B2A.style")
    ]
    refused(missing, r"\$\.directions\.B2A\.style_encoder: declared, but no artifact holds it")
    unknown = copy.deepcopy(manifest)
    unknown["artifacts"][0]["graph"] = "decoder"
    refused(unknown, r"\$\.artifacts\[0\]\.graph")
    bad_rule = copy.deepcopy(manifest)
    bad_rule["directions"]["A2B"]["style_encoder"]["shape_rule"]["extra"] = 1
    refused(bad_rule, "extra")


def test_served_outputs_depend_on_the_style(multimodal_model: MultimodalModel) -> None:
    """The exported graph itself: two codes, two outputs (the style path is live)."""
    import onnxruntime as ort

    path = multimodal_model.repository / multimodal_model.name / "1" / "B2A.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    size = multimodal_model.style_dim
    style = np.stack([np.zeros(size), np.ones(size)]).astype(np.float32)
    first, second = session.run(None, {"image": image[:1].repeat(2, 0), "style": style})[0]
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 2
