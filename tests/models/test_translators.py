"""Translators: uint8 in, uint8 out, rounding pinned down, one per direction of each family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from i2i.models import (
    FixedDomainTranslator,
    ImageTranslator,
    ModelFamily,
    build_generator,
    create_networks,
    get_family,
    list_families,
    options_from_dict,
    translators_by_direction,
)
from tests.conftest import TINY_MODEL_OPTIONS as TINY_OPTIONS


class Constant(nn.Module):
    """A stand-in generator whose output is ``values`` (1, 1, H or 1, W or 1) broadcast."""

    def __init__(self, values: torch.Tensor, channels: int = 3) -> None:
        super().__init__()
        self.values = values
        self.input_nc = channels
        self.output_nc = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.values.expand(x.shape[0], self.output_nc, x.shape[2], x.shape[3])


def images(batch: int, height: int, width: int, channels: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(
        0, 256, (batch, height, width, channels), dtype=torch.uint8, generator=generator
    )


@pytest.mark.parametrize(
    ("arch", "in_channels", "out_channels", "size"),
    [
        ("resnet_6blocks", 3, 3, (32, 40)),
        ("resnet_6blocks", 1, 3, (36, 28)),
        ("resnet_6blocks", 3, 1, (32, 32)),
        ("unet_128", 1, 1, (128, 128)),
    ],
)
def test_translator_maps_uint8_nhwc_to_uint8_nhwc(
    arch: str, in_channels: int, out_channels: int, size: tuple[int, int]
) -> None:
    generator = build_generator(arch, in_channels, out_channels, ngf=4)
    translator = ImageTranslator(generator).eval()
    assert (translator.in_channels, translator.out_channels) == (in_channels, out_channels)
    with torch.no_grad():
        output = translator(images(2, *size, in_channels))
    assert output.dtype == torch.uint8
    assert output.shape == (2, *size, out_channels)
    # The translator is the generator between fixed pre- and post-processing.
    x = images(2, *size, in_channels).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        expected = torch.round((generator(x) + 1) * 127.5).clamp(0, 255).byte()
    assert torch.equal(output, expected.permute(0, 2, 3, 1))


def test_identity_round_trips_every_value_exactly() -> None:
    # x / 127.5 - 1, then (y + 1) * 127.5 is off by float error for 63 of the 256 values;
    # truncating would turn those into x - 1, rounding restores every one.
    translator = ImageTranslator(nn.Identity(), in_channels=3, out_channels=3)
    values = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16, 1).expand(2, 16, 16, 3)
    assert torch.equal(translator(values.contiguous()), values)


@pytest.mark.parametrize(
    ("tanh_output", "expected"),
    [
        (0.0, 128),  # 127.5 is a tie: round half to even gives 128
        (-1.0, 0),
        (1.0, 255),
        (-0.5, 64),  # 63.75
        (0.5, 191),  # 191.25
        (3.0, 255),  # clamped, not wrapped
        (-3.0, 0),
    ],
)
def test_constant_output_maps_to_expected_level(tanh_output: float, expected: int) -> None:
    translator = ImageTranslator(Constant(torch.full((1, 1, 1, 1), tanh_output)))
    output = translator(images(1, 4, 4, 3))
    assert output.unique().tolist() == [expected]


def test_rounding_is_half_to_even_like_numpy_on_float32() -> None:
    # The same arithmetic in float32 with numpy's round (half to even, as ONNX Round).
    values = torch.linspace(-1.1, 1.1, 64 * 64, dtype=torch.float32).reshape(1, 1, 64, 64)
    translator = ImageTranslator(Constant(values, channels=1))
    output = translator(images(1, 64, 64, 1))[0, :, :, 0].numpy()
    scaled = (values.numpy()[0, 0] + np.float32(1)) * np.float32(127.5)
    assert scaled.dtype == np.float32
    assert np.array_equal(output, np.clip(np.round(scaled), 0, 255).astype(np.uint8))
    assert torch.round(torch.tensor([0.5, 1.5, 2.5])).tolist() == [0.0, 2.0, 2.0]


def test_translator_rejects_bad_inputs() -> None:
    translator = ImageTranslator(build_generator("resnet_6blocks", 3, 3, ngf=4))
    with pytest.raises(ValueError, match="uint8"):
        translator(torch.zeros(1, 8, 8, 3))
    with pytest.raises(ValueError, match="uint8"):
        translator(torch.zeros(8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="3 channel"):
        translator(torch.zeros(1, 8, 8, 1, dtype=torch.uint8))


def test_translator_needs_known_channels() -> None:
    with pytest.raises(ValueError, match="input_nc"):
        ImageTranslator(nn.Identity())
    with pytest.raises(ValueError, match="1 or 3"):
        ImageTranslator(nn.Identity(), in_channels=4, out_channels=3)
    assert ImageTranslator(nn.Identity(), 1, 1).out_channels == 1


@pytest.mark.parametrize("name", list_families())
def test_family_translators(name: str) -> None:
    family = get_family(name)
    options = options_from_dict(name, TINY_OPTIONS[name])
    networks = create_networks(name, options)
    translators = family.translators(networks, options)
    assert set(translators) == set(family.direction_names(options))
    rule = family.shape_rule(options)
    size = rule.fixed_size or rule.nearest(32, 32)[0]
    for translator in translators.values():
        assert not any(layer.training for layer in translator.modules())
        channels = getattr(translator, "in_channels", 3)
        # Multimodal families' translators take a style code [N, S] as a second input.
        style = (torch.randn(2, translator.style_dim),) if family.style_dim else ()
        with torch.no_grad():
            output = translator(images(2, size, size, channels), *style)
        assert output.dtype == torch.uint8 and output.shape[:3] == (2, size, size)
    if family.multi_domain:
        assert all(isinstance(t, FixedDomainTranslator) for t in translators.values())
    elif family.style_dim == 0:
        assert all(isinstance(t, ImageTranslator) for t in translators.values())


@pytest.mark.parametrize("name", list_families())
def test_family_translators_skip_missing_directions(name: str) -> None:
    family = get_family(name)
    options = options_from_dict(name, TINY_OPTIONS[name])
    networks = create_networks(name, options)
    if family.multi_domain:  # every target needs every generator (e.g. g and e)
        for generator in family.generators:
            kept = {n: m for n, m in networks.items() if n != generator}
            assert family.translators(kept, options) == {}, generator
        assert family.translators({}, options) == {}
        return
    direction, generator = next(iter(family.directions.items()))
    kept = {generator: networks[generator]}
    # At most the directions this generator performs; UNIT and MUNIT directions need both
    # generators (one's encoder, the other's decoder), so they build none from one.
    built = set(family.translators(kept, options))
    performed = {d for d, g in family.directions.items() if g == generator}
    assert built == (set() if name in ("unit", "munit") else performed)
    assert family.translators({}, options) == {}


def test_cyclegan_translators_wrap_the_generators() -> None:
    networks = create_networks("cyclegan", TINY_OPTIONS["cyclegan"])
    translators = get_family("cyclegan").translators(networks, None)
    assert set(translators) == {"A2B", "B2A"}
    assert translators["A2B"].generator is networks["g_ab"]
    assert translators["B2A"].generator is networks["g_ba"]
    assert get_family("cyclegan").style_dim == 0


def test_grayscale_cyclegan_translators_have_their_domains_channels() -> None:
    networks = create_networks("cyclegan", TINY_OPTIONS["cyclegan"], input_nc=1)
    translators = get_family("cyclegan").translators(networks, None)
    a2b, b2a = translators["A2B"], translators["B2A"]
    assert isinstance(a2b, ImageTranslator) and isinstance(b2a, ImageTranslator)
    assert (a2b.in_channels, a2b.out_channels) == (1, 3)
    assert (b2a.in_channels, b2a.out_channels) == (3, 1)


def test_family_without_translators_wraps_each_direction() -> None:
    import dataclasses

    @dataclasses.dataclass
    class Options:
        width: int = 2

    family = ModelFamily(
        name="stand-in",
        options_type=Options,
        build=lambda o: {},
        generators=("g",),
        directions={"forward": "g"},
        shape_rule=lambda o: get_family("cyclegan").shape_rule(o),
        description="a stand-in",
    )
    generator = build_generator("resnet_6blocks", 3, 3, ngf=4)
    translators = family.translators({"g": generator}, Options())
    assert list(translators) == ["forward"]
    assert translators["forward"].generator is generator
    assert family.style_dim == 0
    with pytest.raises(ValueError, match="style_dim"):
        dataclasses.replace(family, style_dim=-1)
    assert translators_by_direction({"g": generator}, {"x": "g", "y": "missing"}).keys() == {"x"}
