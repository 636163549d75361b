"""StarGAN's ``model.padding: reflect``: g's convolutions pad by reflection (CycleGAN's
ResNet does), so g has no zero border to draw a frame on, and with ``conditional_norm`` the
constant label maps vanish in the first norm. Its ONNX export: test_stargan_conditional_norm's
test_the_conditional_graph_exports[reflect]."""

from __future__ import annotations

import pytest
import torch

from i2i.models import create_networks, options_from_dict
from i2i.models.networks import ResizeConv
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


def test_resize_upsampling_replaces_the_transposed_convolutions() -> None:
    """``model.upsample: resize``: nearest resize and a 3x3 convolution where the reference
    has stride-2 transposed 4x4 convolutions; the other layers and the identity at the start
    are unchanged, and an unknown mode is refused."""
    assert StarGANOptions().upsample == "transpose"
    with pytest.raises(ValueError, match="unknown upsample mode 'bilinear'"):
        options_from_dict("stargan", {**REFLECT, "upsample": "bilinear"})
    with pytest.raises(ValueError, match="unknown upsample mode 'bilinear'"):
        StarGANGenerator(3, 3, 2, 8, 1, upsample="bilinear")
    torch.manual_seed(0)
    transpose = create_networks("stargan", REFLECT)["g"]
    torch.manual_seed(0)
    resize = create_networks("stargan", {**REFLECT, "upsample": "resize"})["g"]
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in transpose.modules()) == 2
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in resize.modules())
    ups = [m for m in resize.modules() if isinstance(m, ResizeConv)]
    assert [(u.conv.in_channels, u.conv.out_channels, u.conv.kernel_size) for u in ups] == [
        (16, 8, (3, 3)),
        (8, 4, (3, 3)),
    ]
    # Only the up-sampling layers' keys differ.
    changed = set(transpose.state_dict()) ^ set(resize.state_dict())
    assert changed == {f"main.{i}{s}.weight" for i in (10, 13) for s in ("", ".conv")}
    x, c = _images(2, 32), torch.eye(3)[[0, 2]]
    with torch.no_grad():
        assert torch.allclose(resize(x, c), x.clamp(-0.999, 0.999), atol=1e-5)  # the identity
        _trained_like(resize, seed=3)
        out = resize(x, c)
    assert out.shape == x.shape and (out - x).abs().max() > 1e-2
    # No checkerboard: a constant input through one resize layer is constant inside the
    # border, where a stride-2 transposed 4x4 convolution alternates between two sums.
    flat = torch.ones(1, 8, 8, 8)
    with torch.no_grad():
        inner = ups[1](flat)[0, :, 1:-1, 1:-1]
        assert torch.allclose(inner, inner[:, :1, :1].expand_as(inner))
        tconv = [m for m in transpose.modules() if isinstance(m, torch.nn.ConvTranspose2d)][1]
        tinner = tconv(flat)[0, :, 1:-1, 1:-1]
        assert not torch.allclose(tinner, tinner[:, :1, :1].expand_as(tinner))
