"""The generator options for short runs (upsample="resize", global_skip) export to ONNX and
match PyTorch, like the reference's networks."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from i2i.export import check_parity, export_onnx, parity_ok_fp32
from i2i.models import ImageTranslator
from i2i.models.cyclegan import generator_shape_rule
from i2i.models.networks import build_generator


@pytest.mark.parametrize(
    ("arch", "upsample", "global_skip"),
    [
        ("resnet_6blocks", "resize", False),
        ("resnet_6blocks", "resize", True),
        ("resnet_6blocks", "transpose", True),
        ("unet_32", "resize", True),
    ],
)
def test_generator_options_export_and_match(
    tmp_path: Path, arch: str, upsample: str, global_skip: bool
) -> None:
    torch.manual_seed(0)
    generator = build_generator(
        arch, 3, 3, ngf=4, norm="instance", upsample=upsample, global_skip=global_skip
    )
    if global_skip:  # move it off the identity, or parity would prove little
        last = [m for m in generator.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        nn.init.normal_(last[-1].weight, 0.0, 0.1)
    translator = ImageTranslator(generator).eval()
    rule = generator_shape_rule(arch)
    path = tmp_path / "g.onnx"
    export_onnx(translator, path, rule, 3)
    onnx.checker.check_model(str(path), full_check=True)
    ops = {node.op_type for node in onnx.load(path).graph.node}
    assert ("Resize" in ops) == (upsample == "resize")
    assert ("ConvTranspose" in ops) == (upsample == "transpose")
    report = check_parity(translator, path, rule, 3)
    assert parity_ok_fp32(report), report
