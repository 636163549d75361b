"""StarGAN's ``model.global_skip``: identity at init, default off, checkpoints, ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from i2i.checkpoint import make_checkpoint, save_checkpoint
from i2i.export import export_checkpoint
from i2i.models import DomainTranslator, create_networks, get_family, options_from_dict
from i2i.models.stargan import StarGANGenerator, StarGANOptions, one_hot
from tests.conftest import TINY_MODEL_OPTIONS
from tests.models.test_stargan import export_conditional_graph

DOMAINS = ["day", "dusk", "night"]
TINY = {**TINY_MODEL_OPTIONS["stargan"], "domains": DOMAINS}


def tiny_networks(seed: int = 0, **changes) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    return create_networks("stargan", {**TINY, **changes})


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_default_is_off_and_the_reference_generator() -> None:
    assert StarGANOptions().global_skip is False
    assert options_from_dict("stargan", TINY).global_skip is False
    g = tiny_networks()["g"]
    assert g.global_skip is False
    assert isinstance(g.main[-1], torch.nn.Tanh)
    assert g.main[-2].weight.any()


def test_untrained_g_is_the_identity_for_every_target_and_learns() -> None:
    g = tiny_networks(global_skip=True)["g"]
    assert not g.main[-2].weight.any()  # the last convolution starts at zero
    x = _images(3, 32)
    y = g(x, torch.eye(3))
    assert y.shape == x.shape
    # Identity up to the clamp that keeps atanh finite (an 8-bit level is 2/255 = 0.0078).
    assert (y - x).abs().max() < 1.5e-3
    (y - x.flip(0)).abs().mean().backward()
    assert g.main[-2].weight.grad is not None and g.main[-2].weight.grad.abs().sum() > 0
    # The reference generator is far from the identity untrained.
    plain = tiny_networks()["g"]
    assert (plain(x, torch.eye(3)) - x).abs().max() > 0.3


def test_shapes_and_range_with_the_skip() -> None:
    g = tiny_networks(global_skip=True)["g"]
    with torch.no_grad():
        g.main[-2].weight.normal_(0, 1)  # a trained-like residual
    c = one_hot(torch.tensor([0, 2]), 3, torch.float32)
    for h, w in ((32, 32), (24, 40), (8, 12)):
        out = g(torch.rand(2, 3, h, w) * 2 - 1, c)
        assert out.shape == (2, 3, h, w)
        assert out.min() >= -1 and out.max() <= 1
    x = _images(1, 32).repeat(3, 1, 1, 1)
    out = g(x, torch.eye(3))
    assert not torch.allclose(out[0], out[1])  # the labels still condition it


def test_the_skip_keeps_every_other_seeded_weight() -> None:
    plain, skip = tiny_networks(seed=5), tiny_networks(seed=5, global_skip=True)
    for name in ("g", "d"):
        a, b = plain[name].state_dict(), skip[name].state_dict()
        assert a.keys() == b.keys()
        for key in a:
            if name == "g" and key == "main.{}.weight".format(len(plain["g"].main) - 2):
                continue
            assert torch.equal(a[key], b[key]), (name, key)


def test_checkpoints_load_either_way() -> None:
    plain, skip = tiny_networks(seed=1)["g"], tiny_networks(seed=2, global_skip=True)["g"]
    skip.load_state_dict(plain.state_dict())  # strict: same keys and shapes
    x = _images(2, 16)
    c = torch.eye(3)[:2]
    with torch.no_grad():
        # Same weights: the skip output is tanh(atanh(x) + r) where the reference's is tanh(r).
        r = plain.main[:-1](torch.cat([x, c[:, :, None, None].expand(-1, -1, 16, 16)], 1))
        expected = torch.tanh(torch.atanh(x.clamp(-1 + 1e-3, 1 - 1e-3)) + r)
        assert torch.allclose(skip(x, c), expected, atol=1e-5)
    plain.load_state_dict(skip.state_dict())


def test_an_old_config_without_the_key_builds_the_reference() -> None:
    old = {k: v for k, v in TINY.items() if k != "global_skip"}
    assert options_from_dict("stargan", old).global_skip is False


def test_global_skip_needs_equal_channels() -> None:
    with pytest.raises(ValueError, match="global_skip.*input_nc=1, output_nc=3"):
        StarGANGenerator(1, 3, 2, 4, 1, global_skip=True)


def _checkpoint(path: Path) -> Path:
    nets = tiny_networks(seed=3, global_skip=True)
    with torch.no_grad():
        nets["g"].main[-2].weight.normal_(0, 0.5)  # a residual that moves the image
    payload = make_checkpoint(
        family="stargan",
        config={"family": "stargan", "model": {**TINY, "global_skip": True}},
        domains=DOMAINS,
        networks={name: net.state_dict() for name, net in nets.items()},
        step=1,
    )
    return save_checkpoint(payload, path)


def test_export_per_target_with_the_skip_matches_pytorch(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "stargan.pt")
    folder, manifest = export_checkpoint(checkpoint, tmp_path / "repo", "sg", formats=["onnx"])
    assert sorted(manifest["directions"]) == ["to_day", "to_dusk", "to_night"]
    nets = tiny_networks(seed=9, global_skip=True)
    nets["g"].load_state_dict(torch.load(checkpoint, weights_only=False)["networks"]["g"])
    options = options_from_dict("stargan", {**TINY, "global_skip": True})
    translators = get_family("stargan").translators(nets, options)
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
        assert not np.array_equal(got, image)  # the residual moved it
        outputs[direction] = got
    assert not np.array_equal(outputs["to_day"], outputs["to_night"])


def test_the_conditional_graph_with_the_skip_exports(tmp_path: Path) -> None:
    nets = tiny_networks(seed=4, global_skip=True)
    with torch.no_grad():
        nets["g"].main[-2].weight.normal_(0, 0.5)
    options = options_from_dict("stargan", {**TINY, "global_skip": True})
    whole = DomainTranslator(get_family("stargan").conditional(nets, options), 3, 3, 3).eval()
    session = export_conditional_graph(whole, tmp_path / "whole.onnx")
    image = np.random.default_rng(1).integers(0, 256, (3, 20, 28, 3), dtype=np.uint8)
    domain = np.array([2, 0, 1], dtype=np.int64)
    (got,) = session.run(None, {"image": image, "domain": domain})
    with torch.no_grad():
        expected = whole(torch.from_numpy(image), torch.from_numpy(domain)).numpy()
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert not np.array_equal(got, image)
