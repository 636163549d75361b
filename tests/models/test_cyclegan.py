"""The CycleGAN family: reference defaults, network roles, shapes and seeded construction."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from i2i.models import CycleGANOptions, create_networks, get_family
from i2i.models.cyclegan import build_cyclegan, generator_shape_rule


def test_defaults_match_the_reference() -> None:
    assert dataclasses.asdict(CycleGANOptions()) == {
        "input_nc": 3,
        "output_nc": 3,
        "ngf": 64,
        "ndf": 64,
        "netG": "resnet_9blocks",
        "netD": "basic",
        "n_layers_D": 3,
        "norm": "instance",
        "dropout": False,
        "init_type": "normal",
        "init_gain": 0.02,
        # i2i's options for short runs, off in the reference recipe:
        "upsample": "transpose",
        "global_skip": False,
    }


def test_family_definition() -> None:
    family = get_family("cyclegan")
    assert family.options_type is CycleGANOptions
    assert family.generators == ("g_ab", "g_ba")
    assert family.directions == {"A2B": "g_ab", "B2A": "g_ba"}


def test_networks_translate_between_the_right_channels() -> None:
    # Domain A is grayscale (1 channel), domain B is RGB (3 channels).
    nets = create_networks("cyclegan", input_nc=1, output_nc=3, ngf=4, ndf=4)
    assert set(nets) == {"g_ab", "g_ba", "d_a", "d_b"}
    real_a = torch.rand(2, 1, 32, 32) * 2 - 1
    real_b = torch.rand(2, 3, 32, 32) * 2 - 1
    fake_b = nets["g_ab"](real_a)
    fake_a = nets["g_ba"](real_b)
    assert fake_b.shape == real_b.shape
    assert fake_a.shape == real_a.shape
    assert nets["d_b"](fake_b).shape == (2, 1, 2, 2)  # 32 -> 16 -> 8 -> 4 -> 3 -> 2
    assert nets["d_a"](fake_a).shape == (2, 1, 2, 2)
    rec_a = nets["g_ba"](fake_b)
    assert rec_a.shape == real_a.shape


def test_seeded_construction_is_reproducible() -> None:
    options = CycleGANOptions(ngf=4, ndf=4, netG="unet_128")
    torch.manual_seed(0)
    first = build_cyclegan(options)
    torch.manual_seed(0)
    second = build_cyclegan(options)
    for name, net in first.items():
        other = second[name].state_dict()
        assert all(torch.equal(t, other[k]) for k, t in net.state_dict().items()), name
    # Built in the reference's order G_A, G_B, D_A, D_B: each net draws fresh numbers.
    assert not torch.equal(
        first["g_ab"].state_dict()["model.model.0.weight"],
        first["g_ba"].state_dict()["model.model.0.weight"],
    )


@pytest.mark.parametrize(
    ("net_g", "rule_size"),
    [("resnet_9blocks", None), ("resnet_6blocks", None), ("unet_128", 128), ("unet_256", 256)],
)
def test_shape_rule(net_g: str, rule_size: int | None) -> None:
    rule = get_family("cyclegan").shape_rule(CycleGANOptions(netG=net_g))
    assert rule == generator_shape_rule(net_g)
    if rule_size is None:
        assert rule.multiple_of == 4 and rule.fixed_size is None
    else:
        assert rule.fixed_size == rule_size


def test_bad_options_fail_early() -> None:
    with pytest.raises(ValueError, match="unknown netG 'resnet_12blocks'.*unet_256"):
        CycleGANOptions(netG="resnet_12blocks")
    with pytest.raises(ValueError, match="unknown norm 'group'"):
        create_networks("cyclegan", norm="group")
