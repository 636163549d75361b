"""Generator options for short runs: resize-convolution upsampling and the global skip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from i2i.models import create_networks, options_from_dict
from i2i.models.networks import (
    ResizeConv,
    ResnetGenerator,
    UnetGenerator,
    build_generator,
    global_skip_output,
)


def _images(n: int, size: int, channels: int = 3) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("size", [(8, 8), (12, 20), (33, 17)])
def test_resize_conv_doubles_exactly(size):
    layer = ResizeConv(5, 7)
    out = layer(torch.zeros(2, 5, *size))
    assert out.shape == (2, 7, 2 * size[0], 2 * size[1])


@pytest.mark.parametrize("arch", ["resnet_6blocks", "resnet_9blocks", "unet_32", "unet_64"])
@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_generators_keep_the_input_size(arch, upsample):
    size = 32 if arch == "unet_32" else 64
    g = build_generator(arch, 3, 3, ngf=4, upsample=upsample)
    out = g(_images(2, size))
    assert out.shape == (2, 3, size, size)
    assert out.abs().max() <= 1
    transposed = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    resized = [m for m in g.modules() if isinstance(m, ResizeConv)]
    if upsample == "resize":
        assert not transposed and resized  # every upsampling is a resize-convolution
    else:
        assert transposed and not resized


def test_resnet_resize_takes_other_multiples_of_four():
    g = build_generator("resnet_6blocks", 3, 3, ngf=4, upsample="resize")
    assert g(_images(1, 36)[..., :28]).shape == (1, 3, 36, 28)


@pytest.mark.parametrize("arch", ["resnet_6blocks", "unet_64"])
@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_global_skip_is_the_identity_at_init_and_learns(arch, upsample):
    torch.manual_seed(0)
    g = build_generator(arch, 3, 3, ngf=4, upsample=upsample, global_skip=True)
    convs = (nn.Conv2d, nn.ConvTranspose2d)
    last = [m for m in g.modules() if isinstance(m, convs)][-1]  # the output layer
    assert not last.weight.any()
    x = _images(2, 64)
    y = g(x)
    # Identity up to the clamp that keeps atanh finite (an 8-bit level is 2/255 = 0.0078).
    assert (y - x).abs().max() < 1.5e-3
    # The zeroed last layer still gets a gradient, so training moves away from identity.
    loss = (y - x.flip(0)).abs().mean()
    loss.backward()
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0
    # Without the skip the untrained network is far from the identity.
    torch.manual_seed(0)
    plain = build_generator(arch, 3, 3, ngf=4, upsample=upsample)
    assert (plain(x) - x).abs().max() > 0.3


def test_global_skip_output_values():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
    out = global_skip_output(x, torch.zeros_like(x))
    assert torch.allclose(out, x, atol=1.1e-3)
    # A residual moves the image in atanh space and never leaves (-1, 1).
    moved = global_skip_output(x, torch.full_like(x, 2.0))
    assert (moved > out).all() and (moved < 1).all()
    assert torch.allclose(global_skip_output(torch.tensor([0.0]), torch.tensor([0.5])),
                          torch.tanh(torch.tensor([0.5])))  # fmt: skip


def test_global_skip_needs_equal_channels():
    with pytest.raises(ValueError, match="global_skip.*input_nc=1, output_nc=3"):
        ResnetGenerator(1, 3, ngf=4, global_skip=True)
    with pytest.raises(ValueError, match="global_skip"):
        UnetGenerator(3, 1, 5, ngf=4, global_skip=True)
    with pytest.raises(ValueError, match="upsample mode 'bilinear'"):
        build_generator("resnet_6blocks", 3, 3, ngf=4, upsample="bilinear")


def test_family_options_default_to_the_reference_network():
    """Old configs and checkpoints lack the keys: they build the reference's layers."""
    old = {"netG": "resnet_6blocks", "netD": "n_layers", "n_layers_D": 2, "ngf": 4, "ndf": 4}
    options = options_from_dict("cyclegan", old)
    assert (options.upsample, options.global_skip) == ("transpose", False)
    torch.manual_seed(0)
    networks = create_networks("cyclegan", options)
    torch.manual_seed(0)
    reference = ResnetGenerator(3, 3, ngf=4, norm="instance", n_blocks=6)
    keys = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in networks["g_ab"].state_dict().items()} == keys
    new = create_networks("cyclegan", dict(old, upsample="resize", global_skip=True))
    assert any(".conv.weight" in k for k in new["g_ab"].state_dict())
    with pytest.raises(ValueError, match="upsample"):
        options_from_dict("cyclegan", dict(old, upsample="pixelshuffle"))
    pix = options_from_dict("pix2pix", {"netG": "unet_32", "ngf": 4, "upsample": "resize"})
    g = create_networks("pix2pix", pix)["g"]
    assert any(isinstance(m, ResizeConv) for m in g.modules())


def test_global_skip_keeps_other_networks_seeded_weights():
    """Zeroing the last layer draws nothing: the discriminators start as without the skip."""
    base = {"netG": "resnet_6blocks", "netD": "n_layers", "n_layers_D": 2, "ngf": 4, "ndf": 4}
    torch.manual_seed(0)
    plain = create_networks("cyclegan", base)
    torch.manual_seed(0)
    skip = create_networks("cyclegan", dict(base, global_skip=True))
    for name in ("d_a", "d_b"):
        for a, b in zip(plain[name].parameters(), skip[name].parameters(), strict=True):
            assert torch.equal(a, b)
