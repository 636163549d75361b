"""UNIT's and MUNIT's ``model.global_skip``: default off, identity at a zero residual, every
decoding of the trainers skips from the image that was encoded, checkpoints, ONNX export."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from i2i.checkpoint import (
    load_checkpoint,
    load_trained_networks,
    make_checkpoint,
    save_checkpoint,
)
from i2i.export import export_checkpoint
from i2i.models import create_networks, get_family, options_from_dict
from i2i.models.munit import AdaINGen, MUNITOptions
from i2i.models.translators import StyleTranslator
from i2i.models.unit import UNITOptions, VAEGen
from i2i.training import train
from i2i.training.munit import MUNITGenerators
from i2i.training.unit import UNITGenerators
from tests.conftest import TINY_MODEL_OPTIONS, tiny_config, write_images

FAMILIES = ("unit", "munit")
# An 8-bit level is 2/255 = 0.0078; the skip's clamp keeps atanh finite within 1e-3.
IDENTITY_TOL = 1.5e-3


def tiny(family: str, seed: int = 0, **changes: Any) -> dict[str, nn.Module]:
    torch.manual_seed(seed)
    return create_networks(family, {**TINY_MODEL_OPTIONS[family], **changes})


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def last_conv(gen: nn.Module) -> nn.Conv2d:
    conv = gen.dec.model[-1].conv
    assert isinstance(conv, nn.Conv2d)
    return conv


def decode(family: str, gen: Any, x: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
    """Encode ``x`` with ``gen`` and decode it in ``gen``'s own domain (style of x for MUNIT)."""
    if family == "unit":
        return gen.decode(gen.encode(x)[0], source)
    content, style = gen.encode(x)
    return gen.decode(content, style, source)


@pytest.mark.parametrize("family", FAMILIES)
def test_default_is_off_and_the_reference_decoder(family: str) -> None:
    options_type = {"unit": UNITOptions, "munit": MUNITOptions}[family]
    assert options_type().global_skip is False
    assert options_from_dict(family, TINY_MODEL_OPTIONS[family]).global_skip is False
    nets = tiny(family)
    for name in ("gen_a", "gen_b"):
        assert nets[name].global_skip is False
        assert isinstance(nets[name].dec.model[-1].activation, nn.Tanh)
        assert last_conv(nets[name]).weight.any()
    # Without the skip the source is not needed (and not used).
    x = images()
    gen = nets["gen_a"].eval()
    with torch.no_grad():
        assert torch.equal(decode(family, gen, x, None), decode(family, gen, x, x.flip(0)))


@pytest.mark.parametrize("family", FAMILIES)
def test_untrained_translations_are_the_identity_and_learn(family: str) -> None:
    nets = tiny(family, global_skip=True)
    for name in ("gen_a", "gen_b"):
        assert nets[name].dec.model[-1].activation is None  # no tanh: a residual
        assert not last_conv(nets[name]).weight.any() and not last_conv(nets[name]).bias.any()
    options = options_from_dict(family, {**TINY_MODEL_OPTIONS[family], "global_skip": True})
    translators = get_family(family).translators(nets, options)
    image = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    )
    with torch.no_grad():
        for direction, translator in translators.items():
            args = (image,) if family == "unit" else (image, torch.randn(2, 8))
            out = translator(*args)
            # uint8 in, the same uint8 out (at most one level where the clamp rounds).
            assert (out.int() - image.int()).abs().max() <= 1, direction
    # A training signal reaches the last layer of the decoder.
    gen = nets["gen_b"].train()
    x = images()
    y = decode(family, gen, x, x)
    (y - x.flip(0)).abs().mean().backward()
    assert last_conv(gen).weight.grad is not None and last_conv(gen).weight.grad.abs().sum() > 0
    # The reference decoder is far from the identity untrained.
    plain = tiny(family)["gen_b"].eval()
    with torch.no_grad():
        assert (decode(family, plain, x, x) - x).abs().max() > 0.3


@pytest.mark.parametrize("family", FAMILIES)
def test_the_skip_keeps_every_other_seeded_weight(family: str) -> None:
    plain, skip = tiny(family, seed=5), tiny(family, seed=5, global_skip=True)
    for name in plain:
        a, b = plain[name].state_dict(), skip[name].state_dict()
        assert a.keys() == b.keys()
        differ = [key for key in a if not torch.equal(a[key], b[key])]
        if name.startswith("gen"):
            assert set(differ) == {f"dec.model.{len(plain[name].dec.model) - 1}.conv.weight"}
        else:
            assert differ == []


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_needs_the_source_image(family: str) -> None:
    gen = tiny(family, global_skip=True)["gen_a"]
    x = images()
    with pytest.raises(ValueError, match="global_skip: decode needs the source image"):
        decode(family, gen, x, None)
    with pytest.raises(ValueError, match=r"source image's shape \(1, 3, 32, 32\)"):
        decode(family, gen, x, x[:1])


@pytest.mark.parametrize("family", FAMILIES)
def test_global_skip_needs_equal_channels(family: str) -> None:
    with pytest.raises(ValueError, match="global_skip.*input_dim_a=1, input_dim_b=3"):
        options_from_dict(
            family,
            {**TINY_MODEL_OPTIONS[family], "global_skip": True, "input_dim_a": 1},
        )
    with pytest.raises(ValueError, match="global_skip.*in_channels=1, out_channels=3"):
        StyleTranslator(nn.Identity(), nn.Identity(), 1, 3, 8, global_skip=True)


def test_unit_trainer_decodes_from_the_encoded_image() -> None:
    """At a zero residual every image the UNIT trainer makes is its source image."""
    nets = tiny("unit", global_skip=True)
    gens = UNITGenerators(nets["gen_a"], nets["gen_b"]).train()  # noisy codes: no matter
    x_a, x_b = images(seed=1), images(seed=2)
    out = gens(x_a, x_b, full=True, cycle=True)
    for key, source in (
        ("x_ab", x_a), ("x_ba", x_b), ("x_a_recon", x_a), ("x_b_recon", x_b),
        ("x_aba", x_a), ("x_bab", x_b),
    ):  # fmt: skip
        assert (out[key] - source).abs().max() < IDENTITY_TOL, key


def test_munit_trainer_decodes_from_the_encoded_image() -> None:
    nets = tiny("munit", global_skip=True)
    gens = MUNITGenerators(nets["gen_a"], nets["gen_b"]).train()
    x_a, x_b = images(seed=1), images(seed=2)
    s_a, s_b = torch.randn(2, 8, 1, 1), torch.randn(2, 8, 1, 1)
    out = gens(x_a, x_b, s_a, s_b, full=True, cycle=True)
    for key, source in (
        ("x_ab", x_a), ("x_ba", x_b), ("x_a_recon", x_a), ("x_b_recon", x_b),
        ("x_aba", x_a), ("x_bab", x_b),
    ):  # fmt: skip
        assert (out[key] - source).abs().max() < IDENTITY_TOL, key


@pytest.mark.parametrize("family", FAMILIES)
def test_training_with_the_skip_saves_loads_and_exports(family: str, tmp_path: Path) -> None:
    """Two real training steps with the skip; the checkpoint records it and rebuilds the
    skip generators, and the exported ONNX translators equal PyTorch's."""
    root = tmp_path / "data"
    write_images(root / "trainA", 4, seed=1)
    write_images(root / "trainB", 4, seed=2, tint=(1.0, 0.8, 0.6))
    model = {**TINY_MODEL_OPTIONS[family], "global_skip": True}
    cfg = tiny_config(
        root, family=family, model=model, gan_mode="lsgan", lr_policy="step", lr_step_size=2,
        max_steps=2,
    )  # fmt: skip
    train(cfg, tmp_path / "run")
    checkpoint = tmp_path / "run" / "latest.pt"
    payload = load_checkpoint(checkpoint)
    assert payload["config"]["model"]["global_skip"] is True
    saved = payload["networks"]
    for name in ("gen_a", "gen_b"):
        assert saved[name][last_conv_key(payload)].any(), name  # the steps moved the residual
    _, networks = load_trained_networks(checkpoint)
    assert networks["gen_a"].global_skip and networks["gen_b"].global_skip

    folder, manifest = export_checkpoint(checkpoint, tmp_path / "repo", family, formats=["onnx"])
    options = options_from_dict(family, payload["config"]["model"])
    translators = get_family(family).translators(networks, options)
    image = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    style = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    for direction in ("A2B", "B2A"):
        session = ort.InferenceSession(
            str(folder / f"{direction}.onnx"), providers=["CPUExecutionProvider"]
        )
        feeds = {session.get_inputs()[0].name: image}
        args: tuple[torch.Tensor, ...] = (torch.from_numpy(image),)
        if family == "munit":
            feeds[session.get_inputs()[1].name] = style
            args += (torch.from_numpy(style),)
        (got,) = session.run(None, feeds)
        with torch.no_grad():
            expected = translators[direction](*args).numpy()
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
        assert (got == expected).mean() > 0.99
    assert sorted(manifest["directions"]) == ["A2B", "B2A"]


def last_conv_key(payload: dict[str, Any]) -> str:
    options = options_from_dict(payload["family"], payload["config"]["model"])
    return f"dec.model.{options.n_downsample * 2 + 1}.conv.weight"


@pytest.mark.parametrize("family", FAMILIES)
def test_exported_translators_are_the_identity_at_a_zero_residual(
    family: str, tmp_path: Path
) -> None:
    """The ONNX graphs of an untrained skip model return their input (without the skip in
    the graph they would return flat grey, tanh(0))."""
    model = {**TINY_MODEL_OPTIONS[family], "global_skip": True}
    nets = tiny(family, seed=3, global_skip=True)
    payload = make_checkpoint(
        family=family,
        config={"family": family, "model": model},
        domains=["A", "B"],
        networks={name: net.state_dict() for name, net in nets.items()},
        step=1,
    )
    checkpoint = save_checkpoint(payload, tmp_path / f"{family}.pt")
    folder, _ = export_checkpoint(checkpoint, tmp_path / "repo", family, formats=["onnx"])
    image = np.random.default_rng(2).integers(0, 256, (2, 24, 32, 3), dtype=np.uint8)
    style = np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)
    for direction in ("A2B", "B2A"):
        session = ort.InferenceSession(
            str(folder / f"{direction}.onnx"), providers=["CPUExecutionProvider"]
        )
        feeds = {session.get_inputs()[0].name: image}
        if family == "munit":
            feeds[session.get_inputs()[1].name] = style
        (got,) = session.run(None, feeds)
        assert np.abs(got.astype(int) - image.astype(int)).max() <= 1, direction


def test_generators_accept_a_skip_source_of_any_size() -> None:
    """The skip works at any size the shape rule accepts, output in [-1, 1]."""
    for gen in (
        VAEGen(3, 4, 2, 1, global_skip=True),
        AdaINGen(3, 4, 8, 2, 1, mlp_dim=8, global_skip=True),
    ):
        with torch.no_grad():
            gen.dec.model[-1].conv.weight.normal_(0, 1)
        for h, w in ((32, 32), (24, 40), (16, 24)):
            x = torch.rand(2, 3, h, w) * 2 - 1
            y = gen(x)[0] if isinstance(gen, VAEGen) else gen(x)
            assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
            assert math.isfinite(float(y.sum()))
