"""StarGAN's ``model.colour_transform``: the skip adds g's residual to a per-target affine
colour transform of the image, ``(I + W[c]) x + b[c]``. Its ONNX export:
test_stargan_conditional_norm's test_the_conditional_graph_exports[colour]."""

from __future__ import annotations

import pytest
import torch

from i2i.models import create_networks, options_from_dict
from i2i.models.networks import global_skip_output
from i2i.models.stargan import StarGANGenerator, StarGANOptions, _run
from tests.conftest import TINY_MODEL_OPTIONS
from tests.models.test_stargan_conditional_norm import _images, _trained_like

DOMAINS = ["day", "dusk", "night"]
SKIP = {
    **TINY_MODEL_OPTIONS["stargan"],
    "domains": DOMAINS,
    "global_skip": True,
    "conditional_norm": True,
    "padding": "reflect",
}
COLOUR = {**SKIP, "colour_transform": True}
# A desaturating grade (each channel a mix of the 601 luma) with a warm shift.
LUMA = torch.tensor([0.299, 0.587, 0.114])
GRADE_MATRIX = torch.stack([0.9 * LUMA, 0.8 * LUMA, 0.6 * LUMA])
GRADE_SHIFT = torch.tensor([0.05, 0.0, -0.1])


def _g(options: dict, seed: int = 0) -> StarGANGenerator:
    torch.manual_seed(seed)
    g = create_networks("stargan", options)["g"]
    assert isinstance(g, StarGANGenerator)
    return g


def test_default_is_off_and_it_needs_the_skip() -> None:
    assert StarGANOptions().colour_transform is False
    assert not hasattr(_g(SKIP), "colour_weight")
    with pytest.raises(ValueError, match="colour_transform needs global_skip"):
        options_from_dict("stargan", {**COLOUR, "global_skip": False})
    with pytest.raises(ValueError, match="colour_transform needs global_skip"):
        StarGANGenerator(3, 3, 2, 8, 1, colour_transform=True)


def test_it_starts_as_the_identity_and_keeps_the_seeded_weights() -> None:
    plain, colour = _g(SKIP), _g(COLOUR)
    extra = set(colour.state_dict()) - set(plain.state_dict())
    assert extra == {"colour_weight", "colour_bias"}
    assert colour.colour_weight.shape == (3, 9) and colour.colour_bias.shape == (3, 3)
    for key, value in plain.state_dict().items():
        assert torch.equal(value, colour.state_dict()[key]), key
    x, c = _images(3, 32), torch.eye(3)
    with torch.no_grad():
        assert torch.allclose(colour(x, c), x.clamp(-0.999, 0.999), atol=1e-5)
    # Checkpoints load only into a g with the same setting.
    with pytest.raises(RuntimeError, match="Unexpected key"):
        plain.load_state_dict(colour.state_dict())
    with pytest.raises(RuntimeError, match="Missing key"):
        colour.load_state_dict(plain.state_dict())


def test_a_targets_transform_is_affine_per_pixel_and_its_own() -> None:
    """With g's residual at zero (its last convolution as initialised) the output is the
    target's affine map of each pixel, clamped into the skip's range; other targets are
    untouched."""
    g = _g(COLOUR, seed=1)
    with torch.no_grad():
        g.colour_weight[2] = (GRADE_MATRIX - torch.eye(3)).flatten()
        g.colour_bias[2] = GRADE_SHIFT
        x, c = _images(3, 16, seed=2), torch.eye(3)
        out = g(x, c)
    pixels = x[2].flatten(1)  # (3, H*W)
    expected = (GRADE_MATRIX @ pixels + GRADE_SHIFT[:, None]).view_as(x[2])
    assert torch.allclose(out[2], expected.clamp(-0.999, 0.999), atol=1e-5)
    assert torch.allclose(out[:2], x[:2].clamp(-0.999, 0.999), atol=1e-5)
    # Grey in, grey out: every channel of the graded pixel follows the luma alone.
    assert (out[2, 0] - out[2, 1] - (0.1 * (LUMA @ pixels)).view(16, 16) - 0.05).abs().max() < 1e-5


def test_the_residual_moves_the_transformed_image() -> None:
    """Trained, g returns tanh(atanh(x') + r): the skip starts from the transformed image
    x', and the network's residual r does not depend on the transform."""
    colour = _g(COLOUR, seed=3)
    _trained_like(colour, seed=4)
    with torch.no_grad():
        colour.colour_weight[0] = (GRADE_MATRIX - torch.eye(3)).flatten()
        colour.colour_bias[0] = GRADE_SHIFT
        colour.colour_weight[1] = 0.0  # dusk's transform: the identity
        colour.colour_bias[1] = 0.0
        plain = _g(SKIP, seed=0)
        plain.load_state_dict(
            {k: v for k, v in colour.state_dict().items() if not k.startswith("colour_")}
        )
        x, c = _images(2, 32, seed=5), torch.eye(3)[[0, 1]]
        # The residual alone: the plain g's output with its skip taken off.
        h = torch.cat([x, c[:, :, None, None].expand(-1, -1, 32, 32)], 1)
        r = _run(plain.main, h, c)
        expected = global_skip_output(colour.colour(x, c), r)
        assert torch.allclose(colour(x, c), expected, atol=1e-6)
        assert torch.allclose(colour(x[1:], c[1:]), plain(x[1:], c[1:]), atol=1e-6)
        assert (colour(x[:1], c[:1]) - plain(x[:1], c[:1])).abs().max() > 0.1


def test_a_step_trains_the_transforms_of_the_targets_it_saw() -> None:
    g = _g(COLOUR, seed=6)
    _trained_like(g, seed=7)
    x = _images(2, 16, seed=8)
    c = torch.eye(3)[[0, 2]]  # targets day and night, not dusk
    (g(x, c) - x.flip(0)).abs().mean().backward()
    for p in (g.colour_weight, g.colour_bias):
        assert p.grad is not None
        assert p.grad[[0, 2]].abs().sum() > 0 and not p.grad[1].any()


def test_bf16_autocast_keeps_the_transform_and_the_skip_in_float32() -> None:
    """Under bf16 autocast the matrix products would round the transformed image to bf16,
    where the skip's clamp (1 - 1e-3) is exactly 1: atanh(1) is infinite and saturated
    pixels give NaN gradients. The transform runs in float32, as the image does."""
    g = _g(COLOUR, seed=9)
    _trained_like(g, seed=10)
    x = _images(2, 16, seed=11)
    x[:, :, :4] = 1.0  # saturated pixels, as 0 and 255 are in any photo
    x[:, :, 4:8] = -1.0
    c = torch.eye(3)[[0, 2]]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = g(x, c)
        assert g.colour(x, c).dtype == torch.float32
    assert out.dtype == torch.float32
    (out - x.flip(0)).abs().mean().backward()
    for name, p in g.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    assert g.colour_weight.grad is not None and g.colour_weight.grad[[0, 2]].abs().sum() > 0
    # The transform is the float32 one, to the bit.
    with torch.no_grad():
        plain = g.colour(x, c)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(g.colour(x, c), plain)
