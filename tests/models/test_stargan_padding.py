"""StarGAN's ``model.padding: reflect``: g's convolutions pad by reflection (CycleGAN's
ResNet does), so g has no zero border to draw a frame on, and with ``conditional_norm`` the
constant label maps vanish in the first norm. Its ONNX export: test_stargan_conditional_norm's
test_the_conditional_graph_exports[reflect]."""

from __future__ import annotations

import pytest
import torch

from i2i.models import create_networks, options_from_dict
from i2i.models.stargan import StarGANGenerator, StarGANOptions
from tests.conftest import TINY_MODEL_OPTIONS
from tests.models.test_stargan_conditional_norm import _images, _trained_like

DOMAINS = ["day", "dusk", "night"]
TINY = {**TINY_MODEL_OPTIONS["stargan"], "domains": DOMAINS}
REFLECT = {**TINY, "padding": "reflect", "conditional_norm": True, "global_skip": True}


def _convs(g: torch.nn.Module) -> list[torch.nn.Conv2d]:
    return [m for m in g.modules() if type(m) is torch.nn.Conv2d]


def test_default_is_zero_padding_and_bad_values_are_refused() -> None:
    assert StarGANOptions().padding == "zero"
    g = create_networks("stargan", TINY)["g"]
    assert {c.padding_mode for c in _convs(g)} == {"zeros"}
    with pytest.raises(ValueError, match="unknown padding 'mirror'"):
        options_from_dict("stargan", {**TINY, "padding": "mirror"})
    with pytest.raises(ValueError, match="needs conditional_norm"):
        options_from_dict("stargan", {**TINY, "padding": "reflect"})
    with pytest.raises(ValueError, match="needs conditional_norm"):
        StarGANGenerator(3, 3, 2, 8, 1, padding="reflect")
    with pytest.raises(ValueError, match="unknown padding 'mirror'"):
        StarGANGenerator(3, 3, 2, 8, 1, conditional_norm=True, padding="mirror")


def test_every_padded_conv_of_g_reflects_and_the_weights_are_the_same() -> None:
    torch.manual_seed(0)
    zero = create_networks("stargan", {**TINY, "conditional_norm": True})["g"]
    torch.manual_seed(0)
    reflect = create_networks("stargan", {**TINY, "conditional_norm": True, "padding": "reflect"})[
        "g"
    ]
    assert {c.padding_mode for c in _convs(reflect)} == {"reflect"}
    # Same keys and the same seeded values: checkpoints load across the setting.
    for key, value in zero.state_dict().items():
        assert torch.equal(value, reflect.state_dict()[key]), key
    # The padding changes the function (the whole outputs differ).
    x, c = _images(2, 32), torch.eye(3)[[0, 2]]
    with torch.no_grad():
        assert (zero(x, c) - reflect(x, c)).abs().max() > 1e-4


def test_the_targets_reach_g_only_through_the_norms() -> None:
    """With zero padding the label maps condition g at the border even when every norm's
    rows are equal; with reflection they are constant, and the first norm removes them."""
    x = _images(1, 32).repeat(3, 1, 1, 1)
    c = torch.eye(3)
    outputs = {}
    for padding in ("zero", "reflect"):
        torch.manual_seed(1)
        g = create_networks("stargan", {**REFLECT, "padding": padding})["g"]
        with torch.no_grad():
            g.main[-2].weight.normal_(0.0, 0.5)  # a last conv that moves the image
            outputs[padding] = g(x, c)
    zero, reflect = outputs["zero"], outputs["reflect"]
    assert (zero[0] - zero[2]).abs().max() > 1e-3  # the maps leak in at the border
    assert (reflect[0] - reflect[2]).abs().max() < 1e-4  # equal rows: the same output (to rounding)
    torch.manual_seed(1)
    g = create_networks("stargan", REFLECT)["g"]
    _trained_like(g, seed=2)  # rows drawn apart: now the target matters everywhere
    with torch.no_grad():
        out = g(x, c)
    assert (out[0, :, 12:20, 12:20] - out[2, :, 12:20, 12:20]).abs().mean() > 1e-2
