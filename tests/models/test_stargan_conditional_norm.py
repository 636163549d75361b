"""StarGAN's ``model.conditional_norm``: the target's scale and shift in every norm of g."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from i2i.checkpoint import make_checkpoint, save_checkpoint
from i2i.export import export_checkpoint
from i2i.models import DomainTranslator, create_networks, get_family, options_from_dict
from i2i.models.stargan import ConditionalInstanceNorm, StarGANOptions
from tests.conftest import TINY_MODEL_OPTIONS
from tests.models.test_stargan import export_conditional_graph

DOMAINS = ["day", "dusk", "night"]
TINY = {**TINY_MODEL_OPTIONS["stargan"], "domains": DOMAINS}
COND = {**TINY, "conditional_norm": True, "global_skip": True}


def tiny_networks(seed: int = 0, **changes) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    return create_networks("stargan", {**TINY, **changes})


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _norms(g: torch.nn.Module) -> list[ConditionalInstanceNorm]:
    return [m for m in g.modules() if isinstance(m, ConditionalInstanceNorm)]


def _trained_like(g: torch.nn.Module, seed: int) -> None:
    """Rows of every target drawn apart, and a last convolution that moves the image."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in _norms(g):
            norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape, generator=gen))
            norm.bias.copy_(0.5 * torch.randn(norm.bias.shape, generator=gen))
        last = g.main[-2].weight
        last.copy_(0.5 * torch.randn(last.shape, generator=gen))
        if getattr(g, "colour_transform", False):  # model.colour_transform
            g.colour_weight.copy_(0.3 * torch.randn(g.colour_weight.shape, generator=gen))
            g.colour_bias.copy_(0.2 * torch.randn(g.colour_bias.shape, generator=gen))


def test_default_is_off_and_the_reference_norms() -> None:
    assert StarGANOptions().conditional_norm is False
    assert options_from_dict("stargan", TINY).conditional_norm is False
    g = tiny_networks()["g"]
    assert not _norms(g)
    assert isinstance(g.main[1], torch.nn.InstanceNorm2d) and g.main[1].affine


def test_every_norm_of_g_is_the_targets_and_starts_as_the_reference() -> None:
    plain, cond = tiny_networks(seed=5)["g"], tiny_networks(seed=5, conditional_norm=True)["g"]
    references = [m for m in plain.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    norms = _norms(cond)
    assert len(norms) == len(references) > 0
    for norm, ref in zip(norms, references, strict=True):
        assert norm.weight.shape == (len(DOMAINS), ref.num_features)
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert not norm.bias.any()
    # The same seeded convolutions, and at 1 and 0 the same function as the reference's g.
    convs = [k for k in plain.state_dict() if k in cond.state_dict() and "main" in k]
    for key in convs:
        if plain.state_dict()[key].shape == cond.state_dict()[key].shape:
            assert torch.equal(plain.state_dict()[key], cond.state_dict()[key]), key
    x, c = _images(3, 32), torch.eye(3)
    with torch.no_grad():
        assert torch.allclose(plain(x, c), cond(x, c), atol=1e-6)


def test_a_targets_rows_change_that_target_only() -> None:
    g = tiny_networks(seed=1, conditional_norm=True, global_skip=True)["g"]
    _trained_like(g, seed=2)
    x = _images(1, 32).repeat(3, 1, 1, 1)
    c = torch.eye(3)
    with torch.no_grad():
        before = g(x, c)
        first = _norms(g)[0]
        first.weight[1].mul_(3.0)
        first.bias[1].add_(1.0)
        after = g(x, c)
    assert torch.equal(before[0], after[0]) and torch.equal(before[2], after[2])
    assert (before[1] - after[1]).abs().max() > 0.05
    # The target reaches the middle of the image, far from the zero-padded border.
    centre = before[:, :, 12:20, 12:20]
    assert (centre[0] - centre[1]).abs().mean() > 1e-2


def test_a_step_trains_the_rows_of_the_targets_it_saw() -> None:
    g = tiny_networks(seed=3, conditional_norm=True, global_skip=True)["g"]
    _trained_like(g, seed=4)
    x = _images(2, 16)
    c = torch.eye(3)[[0, 2]]  # targets day and night, not dusk
    (g(x, c) - x.flip(0)).abs().mean().backward()
    for norm in _norms(g):
        assert norm.weight.grad is not None and norm.bias.grad is not None
        assert norm.weight.grad[[0, 2]].abs().sum() > 0
        assert not norm.weight.grad[1].any() and not norm.bias.grad[1].any()


def test_checkpoints_need_the_same_setting() -> None:
    cond = tiny_networks(seed=1, conditional_norm=True)["g"]
    plain = tiny_networks(seed=1)["g"]
    with pytest.raises(RuntimeError, match="size mismatch"):
        plain.load_state_dict(cond.state_dict())
    again = tiny_networks(seed=2, conditional_norm=True)["g"]
    again.load_state_dict(cond.state_dict())


def _checkpoint(path: Path) -> Path:
    nets = tiny_networks(seed=3, **{k: v for k, v in COND.items() if k not in TINY})
    _trained_like(nets["g"], seed=5)
    payload = make_checkpoint(
        family="stargan",
        config={"family": "stargan", "model": COND},
        domains=DOMAINS,
        networks={name: net.state_dict() for name, net in nets.items()},
        step=1,
    )
    return save_checkpoint(payload, path)


def test_export_per_target_matches_pytorch(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "stargan.pt")
    folder, manifest = export_checkpoint(checkpoint, tmp_path / "repo", "sg", formats=["onnx"])
    assert sorted(manifest["directions"]) == ["to_day", "to_dusk", "to_night"]
    nets = tiny_networks(seed=9, conditional_norm=True, global_skip=True)
    nets["g"].load_state_dict(torch.load(checkpoint, weights_only=True)["networks"]["g"])
    translators = get_family("stargan").translators(nets, options_from_dict("stargan", COND))
    image = np.random.default_rng(0).integers(0, 256, (2, 24, 32, 3), dtype=np.uint8)
    outputs = {}
    for direction in manifest["directions"]:
        session = ort.InferenceSession(
            str(folder / f"{direction}.onnx"), providers=["CPUExecutionProvider"]
        )
        (got,) = session.run(None, {session.get_inputs()[0].name: image})
        with torch.no_grad():
            expected = translators[direction](torch.from_numpy(image)).numpy()
        assert got.shape == image.shape and got.dtype == np.uint8
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
        assert (got == expected).mean() > 0.99
        outputs[direction] = got
    assert not np.array_equal(outputs["to_day"], outputs["to_night"])


# reflect: model.padding; resize: model.upsample (test_stargan_padding); colour:
# model.colour_transform (test_stargan_colour)
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"padding": "reflect"},
        {"padding": "reflect", "upsample": "resize"},
        {"padding": "reflect", "colour_transform": True},
    ],
    ids=["zero", "reflect", "resize", "colour"],
)
def test_the_conditional_graph_exports(tmp_path: Path, changes: dict[str, object]) -> None:
    nets = tiny_networks(seed=4, conditional_norm=True, global_skip=True, **changes)
    _trained_like(nets["g"], seed=6)
    options = options_from_dict("stargan", {**COND, **changes})
    whole = DomainTranslator(get_family("stargan").conditional(nets, options), 3, 3, 3).eval()
    session = export_conditional_graph(whole, tmp_path / "whole.onnx")
    image = np.random.default_rng(1).integers(0, 256, (3, 20, 28, 3), dtype=np.uint8)
    domain = np.array([2, 0, 1], dtype=np.int64)
    (got,) = session.run(None, {"image": image, "domain": domain})
    with torch.no_grad():
        expected = whole(torch.from_numpy(image), torch.from_numpy(domain)).numpy()
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    # Each row is its own target's translation, as a batch of one would give.
    with torch.no_grad():
        alone = whole(torch.from_numpy(image[:1]), torch.from_numpy(domain[:1])).numpy()
    assert np.abs(got[:1].astype(int) - alone.astype(int)).max() <= 1
