"""The pix2pix family: reference defaults, shapes, direction naming, and the whole way from
training through export to a translated image."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from i2i.checkpoint import load_trained_networks
from i2i.export import export_checkpoint
from i2i.models import Pix2PixOptions, ShapeRule, create_networks, get_family, options_from_dict
from i2i.models.pix2pix import domain_channels, pix2pix_direction
from i2i.serving.local import LocalTranslator
from i2i.training import train
from tests.conftest import tiny_config
from tests.data.test_data_aligned import write_pairs
from tests.serving.conftest import png_bytes, sample_image


def test_defaults_match_the_reference() -> None:
    assert dataclasses.asdict(Pix2PixOptions()) == {
        "input_nc": 3,
        "output_nc": 3,
        "ngf": 64,
        "ndf": 64,
        "netG": "unet_256",
        "netD": "basic",
        "n_layers_D": 3,
        "norm": "batch",
        "dropout": True,
        "init_type": "normal",
        "init_gain": 0.02,
        # i2i's options for short runs, off in the reference recipe:
        "upsample": "transpose",
        "global_skip": False,
        "direction": "AtoB",
    }


def test_family_definition() -> None:
    family = get_family("pix2pix")
    assert family.options_type is Pix2PixOptions
    assert family.generators == ("g",)
    assert family.directions == {"A2B": "g"}
    assert family.style_dim == 0


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="unknown direction 'AB'.*AtoB, BtoA"):
        Pix2PixOptions(direction="AB")
    with pytest.raises(ValueError, match="output_nc must be 1 .* got 4"):
        Pix2PixOptions(output_nc=4)


@pytest.mark.parametrize(("arch", "size"), [("unet_128", 128), ("unet_256", 256)])
def test_unet_shapes_and_pair_discriminator(arch: str, size: int) -> None:
    torch.manual_seed(0)
    nets = create_networks("pix2pix", netG=arch, ngf=4, ndf=4, input_nc=1, output_nc=3)
    assert set(nets) == {"g", "d"}
    x = torch.rand(1, 1, size, size) * 2 - 1
    with torch.no_grad():
        y = nets["g"](x)
        assert y.shape == (1, 3, size, size) and y.abs().max() <= 1
        # The PatchGAN judges the (input, output) pair: 1 + 3 channels.
        assert nets["d"].model[0].in_channels == 4
        logits = nets["d"](torch.cat((x, y), 1))
    assert logits.shape == (1, 1, size // 8 - 2, size // 8 - 2)  # 70x70 patches, 3 layers


def test_shape_rules() -> None:
    family = get_family("pix2pix")
    assert family.shape_rule(Pix2PixOptions()) == ShapeRule(fixed_size=256)
    assert family.shape_rule(Pix2PixOptions(netG="unet_128")) == ShapeRule(fixed_size=128)
    assert family.shape_rule(Pix2PixOptions(netG="resnet_6blocks")) == ShapeRule(
        multiple_of=4, min_size=8
    )


def test_direction_names_the_translator_and_maps_channels() -> None:
    a2b = Pix2PixOptions(ngf=4, netG="resnet_6blocks", input_nc=1, output_nc=3)
    b2a = dataclasses.replace(a2b, direction="BtoA")
    assert (pix2pix_direction(a2b), domain_channels(a2b)) == ("A2B", (1, 3))
    # BtoA: the generator reads domain B, so domain B has input_nc channels.
    assert (pix2pix_direction(b2a), domain_channels(b2a)) == ("B2A", (3, 1))
    family = get_family("pix2pix")
    translators = family.translators(family.build(b2a), b2a)
    assert set(translators) == {"B2A"}
    assert (translators["B2A"].in_channels, translators["B2A"].out_channels) == (1, 3)
    assert not translators["B2A"].training


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_train_export_and_translate(tmp_path: Path, direction: str) -> None:
    """A trained U-Net-128 (batch norm, dropout): checkpoint -> ONNX FP32/FP16 -> translate."""
    data = tmp_path / "data"
    write_pairs(data, 2, size=128)
    model = {"netG": "unet_128", "netD": "n_layers", "n_layers_D": 2, "ngf": 4, "ndf": 4}
    model["init_gain"] = 0.3  # the tiny net gives a flat grey at the usual 0.02
    cfg = tiny_config(
        data,
        family="pix2pix",
        model={**model, "direction": direction},
        data={"preprocess": "none", "load_size": 128, "crop_size": 128},
        batch_size=1,
        gan_mode="vanilla",
        pool_size=0,
        lr=0.002,
        max_steps=4,
    )
    summary = train(cfg, tmp_path / "run")
    assert summary.step == 4 and summary.checkpoint is not None
    name = pix2pix_direction(options_from_dict("pix2pix", cfg.model))

    folder, manifest = export_checkpoint(summary.checkpoint, tmp_path / "repo", "p2p")
    assert manifest["family"] == "pix2pix" and set(manifest["directions"]) == {name}
    assert manifest["directions"][name]["shape_rule"]["fixed_size"] == 128
    files = {a["precision"]: a for a in manifest["artifacts"]}
    assert files["fp32"]["parity"]["fraction_over_1"] <= 0.001
    assert files["fp16"]["parity"]["psnr"] >= 40

    # The exported graph computes the eval-mode translator of the checkpoint.
    payload, networks = load_trained_networks(summary.checkpoint)
    options = options_from_dict("pix2pix", payload["config"]["model"])
    translator = get_family("pix2pix").translators(networks, options)[name]
    pixels = sample_image(128, 128, seed=3)
    with torch.no_grad():
        want = translator(torch.from_numpy(pixels[None])).numpy()[0]
        again = translator(torch.from_numpy(pixels[None])).numpy()[0]
    np.testing.assert_array_equal(want, again)  # eval mode: no dropout noise
    assert want.std() > 2  # a picture, not a flat grey every runtime agrees on
    session = ort.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": pixels[None]})[0][0]
    assert np.mean(np.abs(got.astype(int) - want.astype(int)) > 1) <= 0.001

    # The local path of `i2i translate`: from the repository (ONNX Runtime) and from the
    # checkpoint (PyTorch); a 128x128 input needs no resizing.
    with LocalTranslator(repository=tmp_path / "repo", model="p2p", direction=name) as local:
        (from_repo,) = local.translate(png_bytes(pixels))
    np.testing.assert_array_equal(_decoded(from_repo), got)
    with LocalTranslator(checkpoint=summary.checkpoint, direction=name) as local:
        (from_ckpt,) = local.translate(png_bytes(pixels))
    np.testing.assert_array_equal(_decoded(from_ckpt), want)
