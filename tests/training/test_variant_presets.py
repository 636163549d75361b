"""The variant presets' options for short runs: DiscoGAN's global skip, and what
discogan-tiny and dualgan-tiny turn on (the reference recipes, discogan and dualgan, do not)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from i2i.checkpoint import load_checkpoint
from i2i.export import export_onnx
from i2i.models import ImageTranslator, create_networks, get_family, options_from_dict
from i2i.models.networks import DiscoGANGenerator, ResizeConv, UnetGenerator, build_generator
from i2i.training import load_config, train
from i2i.training.config import apply_overrides
from tests.conftest import write_images
from tests.export.conftest import calibrate_batchnorm


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _last_layer(net: nn.Module) -> nn.Conv2d | nn.ConvTranspose2d:
    """The generator's output layer (the one the global skip starts at zero)."""
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1]


# ---- DiscoGAN's global skip


def test_discogan_global_skip_is_the_identity_at_init_and_learns() -> None:
    torch.manual_seed(0)
    g = build_generator("discogan", 3, 3, ngf=4, norm="batch", global_skip=True)
    assert isinstance(g, DiscoGANGenerator) and g.global_skip
    last = _last_layer(g)
    assert isinstance(last, nn.ConvTranspose2d) and not last.weight.any()
    assert not any(isinstance(m, nn.Tanh) for m in g.modules())
    x = _images(2, 64)
    y = g(x)
    # The identity up to the clamp that keeps atanh finite (an 8-bit level is 2/255).
    assert y.shape == x.shape and (y - x).abs().max() < 1.5e-3
    # The zeroed last layer still gets a gradient: training moves it off the identity.
    (y - x.flip(0)).abs().mean().backward()
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0
    # Without the skip the untrained network is far from the identity; with it, the same
    # state-dict keys and shapes (checkpoints load into either), and the other layers keep
    # the seeded weights they have without the skip.
    torch.manual_seed(0)
    plain = build_generator("discogan", 3, 3, ngf=4, norm="batch")
    assert (plain(x) - x).abs().max() > 0.3
    shapes = {k: tuple(v.shape) for k, v in plain.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in g.state_dict().items()} == shapes
    for (key, a), b in zip(plain.state_dict().items(), g.state_dict().values(), strict=True):
        if not key.startswith(f"model.{len(g.model) - 2}."):  # all but the zeroed layer
            assert torch.equal(a, b), key


def test_discogan_global_skip_rejects_mismatched_channels() -> None:
    with pytest.raises(ValueError, match="global_skip.*input_nc=1, output_nc=3"):
        DiscoGANGenerator(1, 3, ngf=4, global_skip=True)
    with pytest.raises(ValueError, match="global_skip.*input_nc=3, output_nc=1"):
        build_generator("discogan", 3, 1, ngf=4, global_skip=True)
    with pytest.raises(ValueError, match="upsample mode 'bilinear'"):
        DiscoGANGenerator(3, 3, ngf=4, upsample="bilinear")
    DiscoGANGenerator(1, 3, ngf=4)  # without the skip the channels may differ


@pytest.mark.parametrize("global_skip", [False, True])
def test_discogan_resize_upsampling_replaces_every_transposed_convolution(
    global_skip: bool,
) -> None:
    torch.manual_seed(0)
    g = build_generator(
        "discogan", 3, 3, ngf=4, norm="batch", upsample="resize", global_skip=global_skip
    )
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())
    assert sum(isinstance(m, ResizeConv) for m in g.modules()) == 4  # 4 doublings
    for height, width in ((64, 64), (48, 80), (16, 16)):  # multiples of 16, as before
        x = _images(2, max(height, width))[..., :height, :width]
        y = g(x)
        assert y.shape == x.shape and y.abs().max() <= 1
    last = _last_layer(g)
    assert isinstance(last, nn.Conv2d) and last.bias is None  # the resize's 3x3 convolution
    if global_skip:
        assert not last.weight.any() and (y - x).abs().max() < 1.5e-3
    # The default keeps the reference's layers: a checkpoint of either loads only into its own.
    plain = build_generator("discogan", 3, 3, ngf=4, norm="batch")
    assert set(plain.state_dict()) != set(g.state_dict())


def test_cyclegan_family_builds_discogan_skip_generators_with_their_shape_rule() -> None:
    model = {"netG": "discogan", "netD": "discogan", "ngf": 4, "ndf": 4, "norm": "batch"}
    options = options_from_dict("cyclegan", dict(model, global_skip=True))
    torch.manual_seed(0)
    nets = create_networks("cyclegan", options)
    rule = get_family("cyclegan").shape_rule(options)
    assert (rule.multiple_of, rule.min_size) == (16, 16)  # the skip changes no size
    x = _images(1, 48)[..., :32]  # 48 x 32: multiples of 16
    for name in ("g_ab", "g_ba"):
        assert nets[name].global_skip
        nets[name].eval()
        with torch.no_grad():
            assert (nets[name](x) - x).abs().max() < 1.5e-3
    with pytest.raises(ValueError, match="global_skip.*input_nc=1, output_nc=3"):
        create_networks("cyclegan", dict(model, global_skip=True, input_nc=1))


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_discogan_skip_generator_exports_to_onnx_and_matches_onnxruntime(
    upsample: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    g = build_generator("discogan", 3, 3, ngf=4, norm="batch", global_skip=True, upsample=upsample)
    with torch.no_grad():  # a trained-like residual: the identity alone would prove little
        nn.init.normal_(_last_layer(g).weight, 0.0, 0.3)
    calibrate_batchnorm(g, 3, 64)
    translator = ImageTranslator(g).eval()
    rule = get_family("cyclegan").shape_rule(
        options_from_dict(
            "cyclegan", {"netG": "discogan", "global_skip": True, "upsample": upsample}
        )
    )
    path = tmp_path / "discogan-skip.onnx"
    export_onnx(translator, path, rule, 3)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(7)
    for height, width in ((64, 64), (32, 48)):  # sizes are dynamic (multiples of 16)
        image = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
        with torch.no_grad():
            expected = translator(torch.from_numpy(image)).numpy().astype(np.int16)
        (out,) = session.run(None, {name: image})
        assert out.shape == expected.shape and out.dtype == np.uint8
        diff = np.abs(out.astype(np.int16) - expected)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (int(diff.max()), height, width)
        # Not the identity: the residual moved the image.
        assert np.abs(out.astype(np.int16) - image).mean() > 5


# ---- the presets


def test_discogan_tiny_sets_the_short_run_options_and_discogan_keeps_the_reference() -> None:
    tiny, full = load_config("discogan-tiny"), load_config("discogan")
    assert (tiny.model["global_skip"], tiny.model["upsample"]) == (True, "resize")
    assert (tiny.model["netG"], tiny.model["netD"], tiny.cycle_loss) == (
        "discogan",
        "discogan",
        "l2",
    )
    assert (tiny.ema_decay, tiny.ema_start) == PRESETS["discogan-tiny"]["ema"]
    assert tiny.lambda_a == tiny.lambda_b == PRESETS["discogan-tiny"]["cycle"]
    nets = create_networks("cyclegan", options_from_dict("cyclegan", tiny.model))
    assert all(isinstance(nets[g], DiscoGANGenerator) and nets[g].global_skip for g in G)
    options = options_from_dict("cyclegan", full.model)
    assert (options.global_skip, options.upsample, full.ema_decay) == (False, "transpose", 0.0)
    assert full.lambda_a == full.lambda_b == 1.0


def test_dualgan_tiny_sets_the_short_run_options_and_dualgan_keeps_the_reference() -> None:
    tiny, full = load_config("dualgan-tiny"), load_config("dualgan")
    assert (tiny.model["global_skip"], tiny.model["upsample"]) == (True, "resize")
    assert (tiny.gan_mode, tiny.loss["n_critic"], tiny.cycle_loss) == ("wgangp", 2, "l1")
    assert (tiny.ema_decay, tiny.ema_start) == PRESETS["dualgan-tiny"]["ema"]
    assert tiny.lambda_a == tiny.lambda_b == PRESETS["dualgan-tiny"]["cycle"]
    nets = create_networks("cyclegan", options_from_dict("cyclegan", tiny.model))
    for name in G:
        assert isinstance(nets[name], UnetGenerator) and nets[name].global_skip
        assert not _last_layer(nets[name]).weight.any()  # starts as the identity
    options = options_from_dict("cyclegan", full.model)
    assert (options.global_skip, options.upsample, full.ema_decay) == (False, "transpose", 0.0)
    assert full.lambda_a == full.lambda_b == 100.0


@pytest.mark.parametrize("preset", sorted(["discogan-tiny", "dualgan-tiny"]))
def test_tiny_variant_preset_trains_off_the_identity(preset: str, tmp_path: Path) -> None:
    """A few steps of the preset (tiny widths) move the skip generators off the identity,
    with finite losses, and the average of the generators is saved."""
    root = tmp_path / "data"
    write_images(root / "trainA", 4, seed=1, size=64)
    write_images(root / "trainB", 4, seed=2, tint=(1.0, 0.8, 0.6), size=64)
    overrides = [
        "model.ngf=4",
        "model.ndf=4",
        f"data.root={root}",
        "data.num_workers=0",
        "batch_size=2",
        "max_steps=4",
        "ema_start=1",
        "log_every=1",
        "sample_every=1000",
        "save_every=1000",
        "tensorboard=false",
        "progress=false",
    ]
    cfg = apply_overrides(load_config(preset), overrides)
    summary = train(cfg, tmp_path / "run")
    assert summary.step == 4
    assert all(math.isfinite(v) for v in summary.last_losses.values())
    state = load_checkpoint(tmp_path / "run" / "latest.pt")
    nets = create_networks("cyclegan", options_from_dict("cyclegan", cfg.model))
    for name in G:
        nets[name].load_state_dict(state["networks"][name])
        assert _last_layer(nets[name]).weight.abs().sum() > 0  # left the zero start
    assert state.get("ema"), "the preset's moving average is not in the checkpoint"


G = ("g_ab", "g_ba")
# The values each tiny preset sets (its YAML; measured in BENCHMARKS.md, "Demo quality").
PRESETS: dict[str, dict[str, tuple[float, int] | float]] = {
    "discogan-tiny": {"ema": (0.999, 200), "cycle": 10.0},
    "dualgan-tiny": {"ema": (0.995, 1200), "cycle": 0.2},
}
