"""The CycleGAN/pix2pix building blocks match the reference implementation.

Expected parameter counts and state-dict keys are written out by hand from the reference's
constructors (junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py), so a checkpoint
trained there loads here unchanged.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from i2i.models.networks import (
    DISCRIMINATOR_ARCHS,
    GENERATOR_ARCHS,
    INIT_TYPES,
    NLayerDiscriminator,
    PixelDiscriminator,
    ResnetBlock,
    ResnetGenerator,
    UnetGenerator,
    UnetSkipConnectionBlock,
    build_discriminator,
    build_generator,
    init_weights,
    norm_layer,
)

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def on_meta(build, *args, **kwargs) -> nn.Module:
    """Full-size networks are built on the meta device: shapes and keys without memory."""
    with torch.device("meta"):
        return build(*args, **kwargs)


# Full-size networks at the reference's defaults, built once.
@pytest.fixture(scope="module")
def resnet9() -> nn.Module:
    return on_meta(build_generator, "resnet_9blocks", 3, 3, 64, "instance")


@pytest.fixture(scope="module")
def unet256_batch() -> nn.Module:
    return on_meta(build_generator, "unet_256", 3, 3, 64, "batch")


def test_resnet_parameter_counts(resnet9: nn.Module) -> None:
    assert n_params(resnet9) == 11_378_179
    assert n_params(on_meta(build_generator, "resnet_6blocks", 3, 3, 64, "instance")) == 7_837_699


def test_unet256_batch_norm_parameter_count(unet256_batch: nn.Module) -> None:
    assert n_params(unet256_batch) == 54_413_955


def test_patchgan_parameter_counts() -> None:
    # Instance norm (CycleGAN's default) gives the well-known 2,764,737. By hand:
    # convs 3->64, 64->128, 128->256, 256->512 (stride 1), 512->1, all 4x4 with bias.
    instance = 3136 + 131_200 + 524_544 + 2_097_664 + 8193
    assert instance == 2_764_737
    assert n_params(on_meta(build_discriminator, "basic", 3, 64, norm="instance")) == instance
    # Batch norm: the three middle convs lose their biases (128 + 256 + 512 = 896) and
    # three affine BatchNorm2d layers add 2 * (128 + 256 + 512) = 1792.
    batch = instance - 896 + 1792
    assert batch == 2_765_633
    assert n_params(on_meta(build_discriminator, "basic", 3, 64, norm="batch")) == batch


def test_resnet_state_dict_keys(resnet9: nn.Module) -> None:
    keys = set(resnet9.state_dict())
    assert len(keys) == 48  # 24 convolutions, each with weight and bias
    for key in [
        "model.1.weight",
        "model.1.bias",
        "model.4.weight",
        "model.7.weight",
        "model.10.conv_block.1.weight",
        "model.10.conv_block.1.bias",
        "model.10.conv_block.5.weight",
        "model.18.conv_block.5.bias",
        "model.19.weight",
        "model.22.weight",
        "model.26.weight",
        "model.26.bias",
    ]:
        assert key in keys, key
    assert not any("running_mean" in k or "num_batches_tracked" in k for k in keys)


def test_resnet_dropout_shifts_second_conv() -> None:
    # The block is [pad, conv, norm, relu, (dropout), pad, conv, norm].
    plain = on_meta(ResnetGenerator, 3, 3, 64, "instance", False, 1).state_dict()
    dropout = on_meta(ResnetGenerator, 3, 3, 64, "instance", True, 1).state_dict()
    assert "model.10.conv_block.5.weight" in plain
    assert "model.10.conv_block.6.weight" not in plain
    assert "model.10.conv_block.6.weight" in dropout
    assert "model.10.conv_block.5.weight" not in dropout
    zero_pad = on_meta(ResnetGenerator, 3, 3, 64, "instance", False, 1, "zero").state_dict()
    assert {"model.10.conv_block.0.weight", "model.10.conv_block.3.weight"} <= set(zero_pad)


def test_resnet_batch_norm_keys() -> None:
    keys = set(on_meta(ResnetGenerator, 3, 3, 64, "batch", False, 9).state_dict())
    assert "model.1.bias" not in keys  # no conv bias before batch norm
    assert {f"model.2.{k}" for k in BN_KEYS} <= keys
    assert {f"model.10.conv_block.6.{k}" for k in BN_KEYS} <= keys
    assert {"model.26.weight", "model.26.bias"} <= keys  # the last conv keeps its bias
    assert len(keys) == 25 + 23 * 5  # 25 conv tensors, 23 BatchNorm2d layers


def test_unet256_state_dict_keys(unet256_batch: nn.Module) -> None:
    keys = set(unet256_batch.state_dict())
    innermost = "model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model"
    expected = {
        "model.model.0.weight",  # outermost down-conv, no bias with batch norm
        "model.model.3.weight",  # outermost up-conv, always with bias
        "model.model.3.bias",
        "model.model.1.model.1.weight",
        "model.model.1.model.5.weight",
        "model.model.1.model.3.model.1.weight",
        "model.model.1.model.3.model.3.model.1.weight",
        f"{innermost}.1.weight",
        f"{innermost}.3.weight",
        *(f"model.model.1.model.2.{k}" for k in BN_KEYS),
        *(f"model.model.1.model.6.{k}" for k in BN_KEYS),
        *(f"{innermost}.4.{k}" for k in BN_KEYS),
    }
    assert expected <= keys
    assert "model.model.0.bias" not in keys
    assert f"{innermost}.2.weight" not in keys  # the innermost level has no down-norm
    assert not any(k.startswith(f"{innermost}.3.model") for k in keys)
    # 16 convolutions, one up-conv bias, 13 BatchNorm2d layers (two in each of the six
    # intermediate levels, one in the innermost).
    assert len(keys) == 16 + 1 + 13 * 5


def test_unet_dropout_keeps_keys() -> None:
    plain = on_meta(UnetGenerator, 3, 3, 8, 64, "batch", False).state_dict()
    dropout = on_meta(UnetGenerator, 3, 3, 8, 64, "batch", True).state_dict()
    assert list(plain) == list(dropout)


def test_discriminator_state_dict_keys() -> None:
    instance = on_meta(NLayerDiscriminator, 3, 64, 3, "instance").state_dict()
    assert list(instance) == [
        f"model.{i}.{p}" for i in (0, 2, 5, 8, 11) for p in ("weight", "bias")
    ]
    batch = set(on_meta(NLayerDiscriminator, 3, 64, 3, "batch").state_dict())
    assert batch == {
        "model.0.weight",
        "model.0.bias",
        "model.2.weight",
        "model.5.weight",
        "model.8.weight",
        "model.11.weight",
        "model.11.bias",
        *(f"model.{i}.{k}" for i in (3, 6, 9) for k in BN_KEYS),
    }
    pixel = set(on_meta(PixelDiscriminator, 3, 64, "instance").state_dict())
    assert pixel == {f"net.{i}.{p}" for i in (0, 2, 5) for p in ("weight", "bias")}
    pixel_batch = set(on_meta(PixelDiscriminator, 3, 64, "batch").state_dict())
    assert pixel_batch == {"net.0.weight", "net.0.bias", "net.2.weight", "net.5.weight"} | {
        f"net.3.{k}" for k in BN_KEYS
    }


def test_norm_none_has_no_conv_bias() -> None:
    # The reference grants a bias only with instance norm, so "none" has none either.
    keys = set(on_meta(ResnetGenerator, 3, 3, 8, "none", False, 1).state_dict())
    assert "model.1.weight" in keys
    assert "model.1.bias" not in keys
    assert "model.18.bias" in keys  # one residual block: the last conv sits at 18


def test_norm_layer() -> None:
    instance = norm_layer("instance")(8)
    assert isinstance(instance, nn.InstanceNorm2d)
    assert not instance.affine and not instance.track_running_stats
    batch = norm_layer("batch")(8)
    assert isinstance(batch, nn.BatchNorm2d) and batch.affine and batch.track_running_stats
    assert isinstance(norm_layer("none")(8), nn.Identity)
    with pytest.raises(ValueError, match="instance, batch, none"):
        norm_layer("group")


@pytest.mark.parametrize("arch", GENERATOR_ARCHS)
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_generator_forward_and_backward(arch: str, norm: str) -> None:
    size = {"unet_64": 64, "unet_128": 128, "unet_256": 256}.get(arch, 32)
    net = build_generator(arch, 3, 2, ngf=2, norm=norm, dropout=True)
    x = torch.rand(2, 3, size, size) * 2 - 1
    y = net(x)
    assert y.shape == (2, 2, size, size)
    assert y.abs().max() <= 1
    y.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_resnet_generator_keeps_multiple_of_4_sizes() -> None:
    net = build_generator("resnet_6blocks", 1, 3, ngf=4).eval()
    assert net(torch.zeros(1, 1, 20, 36)).shape == (1, 3, 20, 36)


@pytest.mark.parametrize(
    ("arch", "n_layers", "size", "out"),
    [
        ("basic", 3, 64, 6),  # 64 -> 32 -> 16 -> 8 -> 7 -> 6
        ("basic", 3, 256, 30),  # the 70x70 PatchGAN's 30x30 map
        ("n_layers", 2, 64, 14),  # 64 -> 32 -> 16 -> 15 -> 14
        ("n_layers", 5, 256, 6),  # 256 -> 128 -> 64 -> 32 -> 16 -> 8 -> 7 -> 6
        ("pixel", 3, 64, 64),
    ],
)
def test_discriminator_forward(arch: str, n_layers: int, size: int, out: int) -> None:
    assert arch in DISCRIMINATOR_ARCHS
    net = build_discriminator(arch, 3, ndf=2, n_layers=n_layers)
    y = net(torch.randn(2, 3, size, size))
    assert y.shape == (2, 1, out, out)
    y.mean().backward()


def test_unet_skip_carries_activated_input() -> None:
    # The reference's in-place LeakyReLU overwrites a level's input before concatenation.
    block = UnetSkipConnectionBlock(4, 8, innermost=True, norm="batch").eval()
    x = torch.randn(1, 4, 8, 8)
    y = block(x.clone())
    assert y.shape == (1, 8, 8, 8)
    torch.testing.assert_close(y[:, :4], nn.functional.leaky_relu(x, 0.2))


@pytest.mark.parametrize("init_type", INIT_TYPES)
def test_every_init_type_runs(init_type: str) -> None:
    net = build_generator("resnet_6blocks", 3, 3, ngf=4, norm="batch", init_type=init_type)
    for module in net.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d) and module.bias is not None:
            assert torch.count_nonzero(module.bias) == 0


def test_normal_init_statistics() -> None:
    torch.manual_seed(0)
    net = ResnetGenerator(3, 3, ngf=16, norm="batch", n_blocks=2)
    init_weights(net, "normal", 0.02)
    block = net.model[10]
    assert isinstance(block, ResnetBlock)
    conv = block.conv_block[1]  # 64 * 64 * 3 * 3 weights
    assert isinstance(conv, nn.Conv2d)
    assert conv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert conv.weight.mean().item() == pytest.approx(0.0, abs=0.002)
    bn_weights = torch.cat([m.weight for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn_weights.mean().item() == pytest.approx(1.0, abs=0.01)
    assert bn_weights.std().item() == pytest.approx(0.02, rel=0.2)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.count_nonzero(m.bias) == 0


def test_init_follows_the_global_seed() -> None:
    def build() -> dict[str, torch.Tensor]:
        return build_generator("unet_128", 3, 3, ngf=2, norm="batch").state_dict()

    torch.manual_seed(7)
    first = build()
    torch.manual_seed(7)
    second = build()
    assert all(torch.equal(first[k], second[k]) for k in first)
    torch.manual_seed(8)
    third = build()
    assert not torch.equal(first["model.model.0.weight"], third["model.model.0.weight"])


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match="resnet_9blocks, resnet_6blocks, unet_128, unet_256"):
        build_generator("resnet_12blocks", 3, 3)
    with pytest.raises(ValueError, match="basic, n_layers, pixel"):
        build_discriminator("multiscale", 3)
    with pytest.raises(ValueError, match="normal, xavier, kaiming, orthogonal"):
        init_weights(nn.Conv2d(1, 1, 1), "uniform")
    with pytest.raises(ValueError, match="reflect, replicate, zero"):
        ResnetGenerator(3, 3, padding_type="circular")
    with pytest.raises(ValueError, match="num_downs"):
        UnetGenerator(3, 3, num_downs=4)
