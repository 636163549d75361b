"""The seed variants (DiscoGAN, DualGAN, CoGAN-style UNIT): presets of existing families.

Each variant is trained from its ``-tiny`` preset with tiny model sizes set by overrides,
on 32 px data (64 px for DiscoGAN, whose discriminator takes no less): shapes, one step
changes every network, the n_critic schedule, exact resume, export parity with ONNX
Runtime, and the variants' own loss terms recomputed by hand.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from i2i.checkpoint import load_checkpoint, load_trained_networks
from i2i.export import export_checkpoint
from i2i.models import get_family, options_from_dict
from i2i.training import ConfigError, train
from i2i.training.config import TrainConfig, apply_overrides, load_config
from i2i.training.cyclegan import CycleGANTrainer
from i2i.training.losses import gradient_penalty
from i2i.training.monitor import read_loss_log
from i2i.training.unit import UNITTrainer
from tests.conftest import write_images
from tests.training.test_resume import _assert_same_state, _losses

# Tiny model sizes per variant (the presets' own are for a CPU demo, not a test), and the
# image size its data gets.
TINY: dict[str, list[str]] = {
    "discogan": ["model.ngf=4", "model.ndf=4"],
    "dualgan": [
        "model.netG=unet_32",
        "model.netD=n_layers",
        "model.n_layers_D=2",
        "model.ngf=4",
        "model.ndf=4",
    ],
    "cogan": [
        "model.gen_dim=4",
        "model.n_res=1",
        "model.dis_dim=4",
        "model.dis_n_layer=2",
        "model.num_scales=2",
    ],
}
SIZES = {"discogan": 64, "dualgan": 32, "cogan": 32}
# Loss weights that the options for short runs change (cogan-tiny: tests/training/
# test_cogan_preset.py); the other loss weights of a tiny preset are its variant's.
SHORT_RUN_LOSS_KEYS = {"recon_x_w", "recon_x_cyc_w"}
VARIANTS = sorted(TINY)


def write_data(root: Path, size: int) -> Path:
    write_images(root / "trainA", 6, seed=1, size=size)
    write_images(root / "trainB", 6, seed=2, tint=(1.0, 0.8, 0.6), size=size)
    write_images(root / "testA", 2, seed=3, size=size)
    write_images(root / "testB", 2, seed=4, tint=(1.0, 0.8, 0.6), size=size)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """``data(size)``: an unaligned dataset of ``size`` px images (cached per size)."""
    cache: dict[int, Path] = {}

    def get(size: int) -> Path:
        if size not in cache:
            cache[size] = write_data(tmp_path_factory.mktemp(f"data{size}"), size)
        return cache[size]

    return get


def variant_config(
    name: str, root: Path, *overrides: str, tiny: bool = True, size: int | None = None
) -> TrainConfig:
    """The ``<name>-tiny`` preset on ``root``: tiny networks, batch 2, no workers, quiet."""
    size = size or SIZES[name]
    return apply_overrides(
        load_config(f"{name}-tiny"),
        [
            *(TINY[name] if tiny else []),
            f"data.root={root}",
            "data.preprocess=crop",
            f"data.load_size={size}",
            f"data.crop_size={size}",
            "data.num_workers=0",
            "batch_size=2",
            "log_every=1",
            "sample_every=1000",
            "save_every=1000",
            "tensorboard=false",
            "progress=false",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def trained(
    data: Callable[[int], Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """``trained(name)``: the run folder of 5 steps of the variant (cached)."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            run = tmp_path_factory.mktemp(f"run-{name}")
            train(variant_config(name, data(SIZES[name]), "max_steps=5"), run)
            cache[name] = run
        return cache[name]

    return get


def _batch(channels: int, size: int, seed: int, n: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "A": torch.rand(n, channels, size, size, generator=g) * 2 - 1,
        "B": torch.rand(n, channels, size, size, generator=g) * 2 - 1,
    }


def _networks(cfg: TrainConfig) -> dict[str, nn.Module]:
    torch.manual_seed(cfg.seed)
    nets = get_family(cfg.family).build(options_from_dict(cfg.family, cfg.model))
    for net in nets.values():
        net.train()
    return nets


def _states(nets: dict[str, nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    return {name: copy.deepcopy(net.state_dict()) for name, net in nets.items()}


def _changed(before: dict[str, torch.Tensor], net: nn.Module) -> bool:
    return any(
        t.is_floating_point() and not torch.equal(t, net.state_dict()[k]) for k, t in before.items()
    )


# ---- the presets themselves


def test_the_presets_make_the_changes_that_define_each_variant() -> None:
    disco = load_config("discogan")
    assert disco.family == "cyclegan" and disco.cycle_loss == "l2"
    assert (disco.model["netG"], disco.model["netD"]) == ("discogan", "discogan")
    assert (disco.gan_mode, disco.lambda_identity, disco.pool_size) == ("vanilla", 0.0, 0)
    assert (disco.data.crop_size, disco.batch_size, disco.weight_decay) == (64, 64, 1e-5)

    dual = load_config("dualgan")
    assert dual.family == "cyclegan" and dual.model["netG"] == "unet_256"
    assert (dual.gan_mode, dual.loss, dual.lambda_gp) == ("wgangp", {"n_critic": 2}, 5.0)
    assert (dual.lambda_a, dual.lambda_b, dual.lambda_identity) == (100.0, 100.0, 0.0)

    cogan = load_config("cogan")
    options = options_from_dict("unit", cogan.model)
    assert cogan.family == "unit" and options.share and not options.vae
    assert cogan.loss["recon_kl_w"] == cogan.loss["recon_kl_cyc_w"] == 0.0

    for name in ("discogan", "dualgan", "cogan"):
        for preset in (name, f"{name}-tiny"):
            cfg = load_config(preset)
            rule = get_family(cfg.family).shape_rule(options_from_dict(cfg.family, cfg.model))
            rule.check(cfg.data.crop_size, cfg.data.crop_size)  # the crops fit the networks
        tiny = load_config(f"{name}-tiny")
        full = load_config(name)
        # The tiny preset keeps the variant's defining settings.
        for key in ("family", "gan_mode", "cycle_loss", "lambda_identity", "pool_size"):
            assert getattr(tiny, key) == getattr(full, key), (name, key)
        # Loss weights too, but for the options for short runs (README) a tiny preset sets.
        assert all(
            full.loss.get(key, value) == value
            for key, value in tiny.loss.items()
            if key not in SHORT_RUN_LOSS_KEYS
        )


@pytest.mark.parametrize("name", VARIANTS)
def test_tiny_presets_train_as_shipped(
    name: str, data: Callable[[int], Path], tmp_path: Path
) -> None:
    cfg = variant_config(name, data(64), "max_steps=2", tiny=False, size=64)
    summary = train(cfg, tmp_path / "run")
    assert summary.step == 2
    assert all(math.isfinite(v) for v in summary.last_losses.values())


# ---- shapes


@pytest.mark.parametrize("name", VARIANTS)
def test_shapes(name: str, data: Callable[[int], Path]) -> None:
    size = SIZES[name]
    cfg = variant_config(name, data(size))
    family = get_family(cfg.family)
    options = options_from_dict(cfg.family, cfg.model)
    nets = _networks(cfg)
    translators = family.translators(nets, options)
    assert set(translators) == {"A2B", "B2A"}
    image = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    with torch.no_grad():
        for translator in translators.values():
            out = translator(image)
            assert out.shape == (2, size, size, 3) and out.dtype == torch.uint8
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        if cfg.family == "cyclegan":
            y = nets["g_ab"](x)
            assert y.shape == x.shape and y.abs().max() <= 1
            score = nets["d_b"](y)
            assert score.shape[:2] == (2, 1)
        else:
            hiddens, noise = nets["gen_a"].encode(x)
            assert nets["gen_b"].decode(hiddens, x).shape == x.shape  # x: the skip's source
            assert torch.equal(noise, torch.zeros_like(noise))  # no VAE: no noise


def test_discogan_networks_are_encoder_decoders_without_skips_or_residual_blocks() -> None:
    from i2i.models.networks import DiscoGANGenerator, ResnetBlock, build_discriminator

    g = DiscoGANGenerator(3, 3, ngf=4, norm="batch")
    kinds = [type(m) for m in g.model]
    assert kinds.count(nn.Conv2d) == 4 and kinds.count(nn.ConvTranspose2d) == 4
    assert kinds.count(nn.LeakyReLU) == 4 and kinds.count(nn.BatchNorm2d) == 6
    assert not any(isinstance(m, ResnetBlock) for m in g.modules())
    # One plain chain: four halvings and four doublings, 16 px being the least (1x1 inside).
    assert g(torch.rand(2, 3, 16, 16)).shape == (2, 3, 16, 16)
    assert g(torch.rand(2, 3, 48, 80)).shape == (2, 3, 48, 80)
    d = build_discriminator("discogan", 3, ndf=4, norm="batch")
    assert d(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 1, 1)  # one score per 64 px image
    assert d(torch.zeros(2, 3, 128, 128)).shape == (2, 1, 5, 5)
    with pytest.raises(ValueError, match="at least 64 px"):
        d(torch.zeros(2, 3, 32, 32))


# ---- training


@pytest.mark.parametrize("name", VARIANTS)
def test_a_step_changes_every_network(name: str, data: Callable[[int], Path], tmp_path: Path):
    cfg = variant_config(name, data(SIZES[name]), "max_steps=1")
    train(cfg, tmp_path / "run")
    initial = _networks(cfg)
    trained_state = load_checkpoint(tmp_path / "run" / "latest.pt")["networks"]
    assert set(trained_state) == set(initial)
    for net_name, net in initial.items():
        changed = [
            key
            for key, tensor in net.state_dict().items()
            if tensor.is_floating_point() and not torch.equal(tensor, trained_state[net_name][key])
        ]
        assert changed, f"{name}: one step left every weight of {net_name} unchanged"
    (record,) = read_loss_log(tmp_path / "run" / "losses.jsonl")
    losses = {k: v for k, v in record.items() if k not in ("step", "epoch", "time")}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses


def test_dualgan_critic_is_updated_every_step_and_generators_every_n_critic(
    data: Callable[[int], Path],
) -> None:
    cfg = variant_config("dualgan", data(32), "loss.n_critic=3")
    nets = _networks(cfg)
    trainer = CycleGANTrainer(cfg, nets, torch.device("cpu"))
    generator_steps = []
    for step in range(1, 8):
        before = _states(nets)
        losses = trainer.step(_batch(3, 32, seed=step))
        g_changed = _changed(before["g_ab"], nets["g_ab"]), _changed(before["g_ba"], nets["g_ba"])
        d_changed = _changed(before["d_a"], nets["d_a"]), _changed(before["d_b"], nets["d_b"])
        assert d_changed == (True, True), f"step {step}: a critic was not updated"
        assert g_changed[0] == g_changed[1]
        if g_changed[0]:
            generator_steps.append(step)
        assert {"d_a", "d_b", "g_total", "cycle_a", "gan_ab"} <= set(losses)
    assert generator_steps == [1, 4, 7]
    assert trainer.state_dict()["steps_done"] == 7


@pytest.mark.parametrize("name", VARIANTS)
def test_resume_is_bitwise_exact(
    name: str, data: Callable[[int], Path], trained: Callable[[str], Path], tmp_path: Path
) -> None:
    # Stopping after 3 steps puts DualGAN (n_critic 2) mid-cycle: a resume that lost the
    # step counter would update the generators at step 4 instead of step 5.
    full = trained(name)
    part = tmp_path / "part"
    root = data(SIZES[name])
    train(variant_config(name, root, "max_steps=3"), part)
    train(variant_config(name, root, "max_steps=5"), part, resume=True)
    assert _losses(part) == _losses(full)
    _assert_same_state(load_checkpoint(full / "latest.pt"), load_checkpoint(part / "latest.pt"))


# ---- export


@pytest.mark.parametrize("name", VARIANTS)
def test_export_parity_fp32_and_fp16_with_onnxruntime(
    name: str, trained: Callable[[str], Path], tmp_path: Path
) -> None:
    checkpoint = trained(name) / "latest.pt"
    folder, manifest = export_checkpoint(
        checkpoint, tmp_path / "repo", name, formats=("onnx", "onnx-fp16")
    )
    payload, networks = load_trained_networks(checkpoint)
    family = get_family(payload["family"])
    options = options_from_dict(payload["family"], payload["config"]["model"])
    translators = family.translators(networks, options)
    size = SIZES[name]
    image = np.random.default_rng(5).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    assert set(manifest["directions"]) == {"A2B", "B2A"}
    for direction, translator in translators.items():
        with torch.no_grad():
            expected = translator(torch.from_numpy(image)).numpy().astype(np.int16)
        for suffix, max_diff in ((".onnx", 1), (".fp16.onnx", 8)):
            session = ort.InferenceSession(
                str(folder / f"{direction}{suffix}"), providers=["CPUExecutionProvider"]
            )
            (out,) = session.run(None, {session.get_inputs()[0].name: image})
            assert out.shape == expected.shape and out.dtype == np.uint8
            diff = np.abs(out.astype(np.int16) - expected)
            assert diff.max() <= max_diff, (direction, suffix, int(diff.max()))
            if suffix == ".onnx":
                assert (diff > 0).mean() < 0.01, (direction, float((diff > 0).mean()))


# ---- the variants' loss terms, by hand


def test_discogan_cycle_term_is_the_squared_error(data: Callable[[int], Path]) -> None:
    cfg = variant_config("discogan", data(64), "lambda_a=2.0", "lambda_b=3.0")
    assert cfg.cycle_loss == "l2"
    nets = _networks(cfg)
    g_ab, g_ba = copy.deepcopy(nets["g_ab"]), copy.deepcopy(nets["g_ba"])
    batch = _batch(3, 64, seed=1)
    trainer = CycleGANTrainer(cfg, nets, torch.device("cpu"))
    losses = trainer.step(batch)
    a, b = batch["A"], batch["B"]
    with torch.no_grad():  # train mode, as the step: batch norm uses the batch's statistics
        rec_a, rec_b = g_ba(g_ab(a)), g_ab(g_ba(b))
    squared_a = float(((rec_a - a) ** 2).mean())
    squared_b = float(((rec_b - b) ** 2).mean())
    assert losses["cycle_a"] == pytest.approx(2.0 * squared_a, rel=1e-5)
    assert losses["cycle_b"] == pytest.approx(3.0 * squared_b, rel=1e-5)
    # The test tells L2 from L1: the absolute error gives another value.
    assert 2.0 * float((rec_a - a).abs().mean()) != pytest.approx(losses["cycle_a"], rel=1e-3)
    assert "idt_ab" not in losses and "idt_ba" not in losses  # no identity loss


def test_gradient_penalty_of_known_critics() -> None:
    # A linear 1x1 critic: d/dx sum(D(x)) is its weight at every pixel, so the gradient's
    # norm is ||w|| * sqrt(H * W) whatever the interpolate.
    critic = nn.Conv2d(3, 1, kernel_size=1, bias=True)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([0.1, -0.2, 0.3]).view(1, 3, 1, 1))
    real, fake = torch.rand(4, 3, 5, 5), torch.rand(4, 3, 5, 5)
    norm = math.sqrt(0.01 + 0.04 + 0.09) * 5
    assert gradient_penalty(critic, real, fake).item() == pytest.approx((norm - 1) ** 2)

    # A quadratic critic, sum(x^2): the gradient is 2 x_hat, so the penalty depends on the
    # interpolate: x_hat = alpha real + (1 - alpha) fake with one alpha per image.
    class Quadratic(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x**2).sum(dim=(1, 2, 3))

    torch.manual_seed(3)
    value = gradient_penalty(Quadratic(), real, fake).item()
    torch.manual_seed(3)
    alpha = torch.rand(4, 1, 1, 1)
    x_hat = alpha * real + (1 - alpha) * fake
    norms = (2 * x_hat).flatten(1).norm(dim=1)
    assert value == pytest.approx(float(((norms - 1) ** 2).mean()), rel=1e-5)


def test_dualgan_critic_loss_is_the_wasserstein_estimate_plus_the_penalty(
    data: Callable[[int], Path],
) -> None:
    # No dropout, so the generators draw no random numbers and the step's draws are the
    # two penalties' interpolation weights (d_b's, then d_a's).
    cfg = variant_config("dualgan", data(32), "model.dropout=false", "lambda_gp=7.0")
    nets = _networks(cfg)
    trainer = CycleGANTrainer(cfg, nets, torch.device("cpu"))
    trainer.step(_batch(3, 32, seed=1))  # a generator step; the next is the critic's alone
    frozen = {name: copy.deepcopy(net) for name, net in nets.items()}
    batch = _batch(3, 32, seed=2)
    rng = torch.get_rng_state()
    losses = trainer.step(batch)
    assert trainer.steps_done == 2

    torch.set_rng_state(rng)
    d_b, d_a = frozen["d_b"], frozen["d_a"]
    real_a, real_b = batch["A"], batch["B"]
    with torch.no_grad():
        fake_b, fake_a = frozen["g_ab"](real_a), frozen["g_ba"](real_b)

    def by_hand(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> tuple[float, float]:
        wasserstein = 0.5 * (critic(fake).mean() - critic(real).mean())
        alpha = torch.rand(real.shape[0], 1, 1, 1)
        x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat)
        penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        return float(wasserstein), float(penalty)

    w_b, gp_b = by_hand(d_b, real_b, fake_b)
    w_a, gp_a = by_hand(d_a, real_a, fake_a)
    assert gp_b > 0 and gp_a > 0
    assert losses["d_b"] == pytest.approx(w_b + 7.0 * gp_b, rel=1e-5)
    assert losses["d_a"] == pytest.approx(w_a + 7.0 * gp_a, rel=1e-5)
    assert losses["d_b"] != pytest.approx(w_b, rel=1e-3)  # the penalty is applied


# ---- options and their errors


def test_cyclegan_loss_section_takes_n_critic_only(data: Callable[[int], Path]) -> None:
    root = data(32)
    with pytest.raises(ConfigError, match="n_critic must be at least 1"):
        CycleGANTrainer(
            variant_config("dualgan", root, "loss.n_critic=0"),
            _networks(variant_config("dualgan", root)),
            torch.device("cpu"),
        )
    cfg = variant_config("dualgan", root, "loss.lambda_a=3")
    with pytest.raises(
        ConfigError, match=r"top-level keys .*loss\.n_critic only, not loss\.lambda_a"
    ):
        CycleGANTrainer(cfg, _networks(variant_config("dualgan", root)), torch.device("cpu"))


def test_discogan_discriminator_refuses_small_crops_before_training(
    data: Callable[[int], Path], tmp_path: Path
) -> None:
    cfg = variant_config("discogan", data(32), "max_steps=1", size=32)
    with pytest.raises(ConfigError, match="crop_size=32 is too small for model.netD=discogan"):
        train(cfg, tmp_path / "run")


def test_cogan_encoders_are_deterministic_and_have_no_kl_terms(
    data: Callable[[int], Path],
) -> None:
    cfg = variant_config("cogan", data(32))
    nets: dict[str, Any] = _networks(cfg)
    gen_a, gen_b = nets["gen_a"], nets["gen_b"]
    assert gen_a.training and not gen_a.vae
    # The tied layers are the same modules in both generators (CoGAN's weight sharing).
    assert gen_a.dec.model[0].model[0] is gen_b.dec.model[0].model[0]
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    rng = torch.get_rng_state()
    (h1, n1), (h2, n2) = gen_a.encode(x), gen_a.encode(x)
    assert torch.equal(torch.get_rng_state(), rng)  # no noise drawn
    assert torch.equal(h1, h2) and not n1.any() and not n2.any()

    trainer = UNITTrainer(cfg, nets, torch.device("cpu"))
    losses = trainer.step(_batch(3, 32, seed=1))
    assert not [k for k in losses if "kl" in k], losses
    assert {"gen_cyc_x_a", "gen_adv_a", "dis_a"} <= set(losses), losses
    assert "gen_recon_x_a" not in losses  # cogan-tiny's weight 0: not computed

    with pytest.raises(ConfigError, match="model.vae=false has no KL terms"):
        UNITTrainer(
            variant_config("cogan", data(32), "loss.recon_kl_w=0.01"),
            _networks(cfg),
            torch.device("cpu"),
        )


def test_unit_with_the_vae_still_samples_and_reports_kl(data: Callable[[int], Path]) -> None:
    cfg = variant_config("cogan", data(32), "model.vae=true", "loss.recon_kl_w=0.01")
    nets: dict[str, Any] = _networks(cfg)
    assert nets["gen_a"].vae
    _, noise = nets["gen_a"].encode(torch.zeros(1, 3, 32, 32))
    assert noise.abs().sum() > 0
    losses = UNITTrainer(cfg, nets, torch.device("cpu")).step(_batch(3, 32, seed=1))
    assert "gen_recon_kl_a" in losses and "gen_recon_kl_cyc_aba" in losses
