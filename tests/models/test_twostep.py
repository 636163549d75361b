"""The two-step family's networks: shapes, options, the condition, translation and metric."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from i2i.models import create_networks, get_family, options_from_dict
from i2i.models.twostep import TwoStepOptions, colour_change, latent_mse, sample_latents
from tests.conftest import TINY_MODEL_OPTIONS

TINY = TINY_MODEL_OPTIONS["twostep"]


def _options(**changes: object) -> TwoStepOptions:
    return options_from_dict("twostep", {**TINY, **changes})


def _calibrated(options: TwoStepOptions, seed: int = 0) -> dict[str, torch.nn.Module]:
    """Networks whose batch norms hold real statistics (a few train-mode passes), in eval
    mode: freshly initialised statistics would squash the signal to a flat image."""
    torch.manual_seed(seed)
    networks = create_networks("twostep", options)
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(3):
            z, c = sample_latents(16, options, rng)
            x = networks["g"].train()(z, c)
            networks["e"].train()(x)
            networks["d"].train()(x)
    return {name: net.eval() for name, net in networks.items()}


@pytest.mark.parametrize("size", [16, 32, 64, 128])
@pytest.mark.parametrize("condition", ["embedding", "onehot"])
def test_shapes_at_every_size(size: int, condition: str) -> None:
    options = _options(image_size=size, condition=condition, domains=["a", "b", "c"])
    networks = create_networks("twostep", options)
    z = torch.rand(2, options.z_dim) * 2 - 1
    images = networks["g"](z, torch.tensor([0, 2]))
    assert images.shape == (2, 3, size, size)
    assert images.abs().max() <= 1
    source, classes = networks["d"](images)
    assert source.shape == (2,) and classes.shape == (2, 3)
    codes = networks["e"](images)
    assert codes.shape == (2, options.z_dim) and codes.abs().max() < 1
    rule = get_family("twostep").shape_rule(options)
    rule.check(size, size)
    with pytest.raises(ValueError, match=f"exactly {size}x{size}"):
        rule.check(size * 2, size * 2)


def test_paper_defaults() -> None:
    options = TwoStepOptions(domains=("female", "male"))
    networks = create_networks("twostep", options)
    assert networks["g"].code.embedding.weight.shape == (2, 5)  # an embedding of 5 values
    assert networks["e"](torch.zeros(1, 3, 64, 64)).shape == (1, 100)
    # DCGAN widths: 8 ngf at 4x4 down to ngf before the last layer.
    convs = [m for m in networks["g"].model if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [512, 256, 128, 64, 3]


def test_the_condition_changes_the_image() -> None:
    for condition in ("embedding", "onehot"):
        networks = _calibrated(_options(condition=condition))
        z = torch.rand(1, TINY["z_dim"]).repeat(2, 1) * 2 - 1
        with torch.no_grad():
            a, b = networks["g"](z, torch.tensor([0, 1]))
        assert not torch.allclose(a, b), condition
    onehot = create_networks("twostep", _options(condition="onehot"))["g"]
    assert onehot.code.embedding is None and onehot.code.dim == 2  # one value per domain


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"output_nc": 1}, "must be equal"),
        ({"image_size": 48}, "power of two"),
        ({"image_size": 8}, "power of two, 16 or more"),
        ({"condition": "film"}, "unknown condition"),
        ({"translation": "cycle"}, "unknown translation"),
        ({"z_dim": 0}, "z_dim must be >= 1"),
        ({"domains": ["A", "A"]}, "unique"),
        ({"domains": "AB"}, "list of names"),
    ],
)
def test_bad_options_say_what_is_wrong(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _options(**changes)


def test_building_without_domains_says_where_they_come_from() -> None:
    with pytest.raises(ValueError, match=r"model.domains.*at least 2"):
        create_networks("twostep", _options(domains=[]))


def test_translators_compute_g_of_e_of_x_for_each_target() -> None:
    options = _options(domains=["day", "dusk", "night"])
    networks = _calibrated(options)
    family = get_family("twostep")
    translators = family.translators(networks, options)
    assert sorted(translators) == ["to_day", "to_dusk", "to_night"]
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1
    outputs = {}
    for index, domain in enumerate(options.domains):
        with torch.no_grad():
            out = translators[f"to_{domain}"](images)
            expected = networks["g"](networks["e"](x), torch.full((3,), index))
        assert out.dtype == torch.uint8 and out.shape == (3, 32, 32, 3)
        want = torch.clamp(torch.round((expected + 1) * 127.5), 0, 255).permute(0, 2, 3, 1)
        assert (out.int() - want.int()).abs().max() <= 1
        outputs[domain] = out
    assert not torch.equal(outputs["day"], outputs["night"])
    # The conditional module translates a mixed batch, each image to its own target.
    conditional = family.conditional(networks, options)
    with torch.no_grad():
        mixed = conditional(x, torch.tensor([2, 0, 1]))
        night = conditional(x[:1], torch.tensor([2]))
    torch.testing.assert_close(mixed[:1], night)


def test_latent_mse_is_the_encoders_error_on_seeded_generator_samples() -> None:
    options = _options()
    networks = _calibrated(options)
    first = latent_mse(networks, options, seed=5, n_samples=40, batch_size=16)
    assert first == latent_mse(networks, options, seed=5, n_samples=40, batch_size=16)
    assert first != latent_mse(networks, options, seed=6, n_samples=40, batch_size=16)
    # The same draws by hand: batches of 16, 16 and 8 from one generator.
    rng = torch.Generator().manual_seed(5)
    errors = []
    for n in (16, 16, 8):
        z, c = sample_latents(n, options, rng)
        with torch.no_grad():
            errors.append(F.mse_loss(networks["e"](networks["g"](z, c)), z, reduction="none"))
    by_hand = torch.cat(errors).mean().item()
    assert first == pytest.approx(by_hand, rel=1e-5)
    assert get_family("twostep").metrics(networks, options, 5).keys() == {"latent_mse"}
    # An encoder that returned z exactly would score 0; this untrained one is far from it.
    assert first > 0.05
    # Modes are restored.
    networks["g"].train()
    latent_mse(networks, options, seed=5, n_samples=4)
    assert networks["g"].training and not networks["e"].training


def test_translators_need_both_g_and_e() -> None:
    options = _options()
    networks = create_networks("twostep", options)
    family = get_family("twostep")
    assert family.translators({"g": networks["g"]}, options) == {}
    assert family.translators({"e": networks["e"], "d": networks["d"]}, options) == {}
    assert sorted(family.translators(networks, options)) == ["to_A", "to_B"]


def test_colour_change_fits_a_gain_and_offset_per_image_and_channel() -> None:
    rng = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=rng) * 2 - 1
    source = torch.rand(2, 3, 16, 16, generator=rng) * 2 - 1
    gains = torch.tensor([[0.5, 1.0, -0.3], [2.0, 0.1, 1.0]])[:, :, None, None]
    offsets = torch.tensor([[-0.2, 0.0, 0.4], [0.1, -0.5, 0.0]])[:, :, None, None]
    target = source * gains + offsets
    out = colour_change(x, source, target)
    # The renderings' own change, applied to x (the ridge toward 1 moves gains by < 1 %).
    torch.testing.assert_close(out, (x * gains + offsets).clamp(-1, 1), atol=0.02, rtol=0)
    assert out.abs().max() <= 1 and (x * gains + offsets).abs().max() > 1
    # Equal renderings leave x as it is; a flat rendering keeps x's contrast (gain 1).
    torch.testing.assert_close(colour_change(x, source, source), x)
    flat = torch.zeros_like(source)
    torch.testing.assert_close(colour_change(x, flat, flat + 0.25), (x + 0.25).clamp(-1, 1))


def test_colour_translation_moves_the_photo_by_gs_change_between_the_domains() -> None:
    options = _options(domains=["day", "dusk", "night"], translation="colour")
    networks = _calibrated(options)
    e, g = networks["e"], networks["g"]
    assert e.classes is not None and e.classes.out_channels == 3
    # Without the domain head (the paper's direct translation) there is no source to read.
    with pytest.raises(RuntimeError, match="no domain head"):
        _calibrated(_options(domains=["a", "b"]))["e"](torch.zeros(1, 3, 32, 32), True)

    conditional = get_family("twostep").conditional(networks, options)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z, logits = e(x, True)
        torch.testing.assert_close(z, e(x))  # the same code with or without the head
        source = logits.argmax(1)
        target = (source + 1) % 3
        out = conditional(x, target)
        by_hand = colour_change(x, g(z, source), g(z, target))
        same = conditional(x, source)  # into its own (e's) domain: unchanged
    torch.testing.assert_close(out, by_hand)
    torch.testing.assert_close(same, x)
    assert not torch.equal(out, x)
