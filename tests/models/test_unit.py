"""The UNIT family: VAE generators, weight sharing, multi-scale discriminators, translators."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from i2i.models import UNITOptions, create_networks, get_family
from i2i.models.unit import VAEGen, shared_layer_names
from i2i.models.unit_blocks import MsImageDis, discriminator_min_size

TINY = {"gen_dim": 4, "n_res": 2, "dis_dim": 4, "dis_n_layer": 2, "num_scales": 2}


def _x(n: int = 2, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_networks_and_options() -> None:
    nets = create_networks("unit", TINY, input_dim_b=1)
    assert set(nets) == {"gen_a", "gen_b", "dis_a", "dis_b"}
    options = UNITOptions(input_dim_b=1)
    assert (options.input_nc, options.output_nc) == (3, 1)
    assert nets["gen_b"].enc.model[0].conv.in_channels == 1
    assert nets["gen_b"].dec.model[-1].conv.out_channels == 1
    assert nets["dis_b"].cnns[0][0].conv.in_channels == 1
    # The reference's defaults (configs/unit_*.yaml) and the paper's sharing.
    default = UNITOptions()
    assert (default.gen_dim, default.n_downsample, default.n_res, default.gen_activ) == (
        64,
        2,
        4,
        "relu",
    )
    assert (default.dis_n_layer, default.num_scales, default.dis_norm, default.init) == (
        4,
        3,
        "none",
        "kaiming",
    )
    assert default.share and default.n_shared == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gen_activ": "swish"}, "unknown gen_activ 'swish'"),
        ({"gen_pad_type": "circular"}, "unknown gen_pad_type"),
        ({"input_dim_a": 4}, "input_dim_a must be 1 or 3"),
        ({"n_shared": 3}, "n_shared must be between 1 and n_res"),
        ({"init": "he"}, "unknown init"),
    ],
)
def test_bad_options_are_explained(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UNITOptions(**{**TINY, **change})


def test_encode_decode_shapes_and_noise() -> None:
    gen = VAEGen(3, dim=4, n_downsample=2, n_res=1)
    x = _x(size=32)
    gen.train()
    hiddens, noise = gen.encode(x)
    assert hiddens.shape == noise.shape == (2, 16, 8, 8)
    assert noise.std() > 0.5 and not torch.equal(noise, gen.encode(x)[1])
    assert gen.decode(hiddens + noise).shape == (2, 3, 32, 32)
    gen.eval()
    with torch.no_grad():
        hiddens_eval, noise_eval = gen.encode(x)
        recon, mean = gen(x)
    assert torch.equal(noise_eval, torch.zeros_like(hiddens_eval))
    assert torch.equal(recon, gen.decode(hiddens_eval)) and torch.equal(mean, hiddens_eval)
    assert recon.abs().max() <= 1


def test_shared_layers_are_the_same_modules() -> None:
    options = UNITOptions(**{**TINY, "n_shared": 1})
    nets = create_networks("unit", options)
    names = shared_layer_names(options)
    assert names == ["enc.model.3.model.1", "dec.model.0.model.0"]
    modules_a = dict(nets["gen_a"].named_modules())
    modules_b = dict(nets["gen_b"].named_modules())
    for name in names:
        assert modules_a[name] is modules_b[name]
    # Exactly those parameters are tied; each generator's state dict still lists them.
    params_a = dict(nets["gen_a"].named_parameters())
    params_b = dict(nets["gen_b"].named_parameters())
    tied = {k for k in params_a if params_a[k] is params_b[k]}
    assert tied == {k for k in params_a if k.startswith(tuple(f"{n}." for n in names))}
    assert len(tied) == 8  # 2 blocks x 2 convs x (weight, bias)
    assert set(nets["gen_a"].state_dict()) == set(nets["gen_b"].state_dict())
    # A step on gen_a's loss moves gen_b's copy of the shared layers.
    before = params_b["dec.model.0.model.0.model.0.conv.weight"].detach().clone()
    nets["gen_a"].decode(nets["gen_a"].encode(_x())[0]).mean().backward()
    torch.optim.SGD(nets["gen_a"].parameters(), lr=1.0).step()
    assert not torch.equal(before, params_b["dec.model.0.model.0.model.0.conv.weight"])


def test_two_shared_blocks_and_no_sharing() -> None:
    options = UNITOptions(**{**TINY, "n_shared": 2})
    assert shared_layer_names(options) == [
        "enc.model.3.model.0",
        "enc.model.3.model.1",
        "dec.model.0.model.0",
        "dec.model.0.model.1",
    ]
    nets = create_networks("unit", TINY, share=False)
    params_b = {id(p) for p in nets["gen_b"].parameters()}
    assert not any(id(p) in params_b for p in nets["gen_a"].parameters())
    assert shared_layer_names(UNITOptions(share=False)) == []


def test_initialisation_follows_the_reference() -> None:
    torch.manual_seed(0)
    nets = create_networks("unit", gen_dim=16, dis_dim=16, n_res=1, num_scales=1)
    # Generators: kaiming normal (fan in), biases 0; discriminators: N(0, 0.02).
    conv = nets["gen_a"].enc.model[2].conv  # 64 x 32 x 4 x 4
    assert abs(conv.weight.std().item() / (2 / (32 * 4 * 4)) ** 0.5 - 1) < 0.1
    assert torch.count_nonzero(conv.bias) == 0
    dis_conv = nets["dis_a"].cnns[0][2].conv
    assert abs(dis_conv.weight.std().item() - 0.02) < 0.002
    # The layer norm's gamma keeps its uniform draw (the references' init skips it).
    gamma = nets["gen_a"].dec.model[2].norm.gamma
    assert gamma.min() >= 0 and gamma.max() < 1 and gamma.std() > 0.1
    torch.manual_seed(0)
    again = create_networks("unit", gen_dim=16, dis_dim=16, n_res=1, num_scales=1)
    assert all(
        torch.equal(a, b)
        for name in nets
        for a, b in zip(
            nets[name].state_dict().values(), again[name].state_dict().values(), strict=True
        )
    )


def test_discriminator_scales() -> None:
    dis = MsImageDis(3, dim=4, n_layer=2, num_scales=3)
    x = _x(size=32)
    outputs = dis(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 1, 8, 8), (2, 1, 4, 4), (2, 1, 2, 2)]
    pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
    assert torch.equal(outputs[1], dis.cnns[1](pool(x)))
    assert torch.equal(outputs[2], dis.cnns[2](pool(pool(x))))
    assert not hasattr(dis, "calc_dis_loss")


@pytest.mark.parametrize(("n_layer", "num_scales"), [(2, 2), (4, 3), (3, 1)])
def test_discriminator_min_size(n_layer: int, num_scales: int) -> None:
    dis = MsImageDis(3, dim=2, n_layer=n_layer, num_scales=num_scales)
    side = discriminator_min_size(n_layer, num_scales)
    assert len(dis(_x(1, size=side))) == num_scales
    with pytest.raises(RuntimeError, match="[Pp]adding"):
        dis(_x(1, size=side - 1))


def test_translators_decode_the_encoder_mean() -> None:
    nets = create_networks("unit", TINY, input_dim_b=1)
    translators = get_family("unit").translators(nets, None)
    assert set(translators) == {"A2B", "B2A"}
    a2b = translators["A2B"]
    assert (a2b.in_channels, a2b.out_channels) == (3, 1)
    image = torch.randint(0, 256, (2, 32, 40, 3), dtype=torch.uint8)
    with torch.no_grad():
        out = a2b(image)
        x = image.float().permute(0, 3, 1, 2) / 127.5 - 1
        want = nets["gen_b"].decode(nets["gen_a"].encode(x)[0])
    assert out.shape == (2, 32, 40, 1) and out.dtype == torch.uint8
    expected = torch.round((want + 1) * 127.5).clamp(0, 255).permute(0, 2, 3, 1)
    assert torch.equal(out, expected.to(torch.uint8))
    assert not any(m.training for m in a2b.modules())
    with torch.no_grad():
        assert translators["B2A"](out).shape == (2, 32, 40, 3)


def test_translators_need_both_generators() -> None:
    nets = create_networks("unit", TINY)
    assert get_family("unit").translators({"gen_a": nets["gen_a"]}, None) == {}


def test_shape_rule_is_what_the_padding_needs() -> None:
    rule = get_family("unit").shape_rule(UNITOptions(**TINY))
    assert (rule.multiple_of, rule.smallest) == (4, 8)
    translator = get_family("unit").translators(create_networks("unit", TINY), None)["A2B"]
    with torch.no_grad():
        assert translator(torch.zeros(1, 8, 12, 3, dtype=torch.uint8)).shape == (1, 8, 12, 3)
        with pytest.raises(RuntimeError, match="[Pp]adding"):
            translator(torch.zeros(1, 4, 8, 3, dtype=torch.uint8))
    assert get_family("unit").shape_rule(UNITOptions(n_downsample=3)).multiple_of == 8
