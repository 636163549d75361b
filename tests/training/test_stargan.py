"""StarGAN training: the n_critic schedule, every loss term recomputed by hand (the gradient
penalty through to d's gradients), mixed precision, exact resume across a g step."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from i2i.checkpoint import load_checkpoint
from i2i.data import TransformOptions
from i2i.models import get_family, options_from_dict
from i2i.training import ConfigError, TrainConfig, load_config, train
from i2i.training.stargan import StarGANTrainer
from tests.conftest import TINY_MODEL_OPTIONS, tiny_config, write_images
from tests.training.test_resume import _assert_same_state, _losses

DOMAINS = ["day", "dusk", "night"]
MODEL = {k: v for k, v in TINY_MODEL_OPTIONS["stargan"].items() if k != "domains"}


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """train/<domain>/: 4 images in each of three domains, 32 px."""
    root = tmp_path / "data"
    tints = ((1, 1, 1), (1, 0.7, 0.5), (0.4, 0.4, 0.8))
    for i, (domain, tint) in enumerate(zip(DOMAINS, tints, strict=True)):
        write_images(root / "train" / domain, 4, seed=10 + i, tint=tint)
    return root


def config(root: Path, loss: dict[str, Any] | None = None, **changes: Any) -> TrainConfig:
    return tiny_config(
        root, family="stargan", model={**MODEL, "domains": DOMAINS}, loss=loss or {}, **changes
    )


def make_trainer(cfg: TrainConfig, wrap: Any = None) -> tuple[StarGANTrainer, dict[str, Any]]:
    """A trainer on freshly built networks, and a batch of 4 images of mixed domains."""
    options = options_from_dict("stargan", cfg.model)
    torch.manual_seed(cfg.seed)
    networks = get_family("stargan").build(options)
    trainer = StarGANTrainer(cfg, networks, torch.device("cpu"), wrap=wrap)
    transform = TransformOptions(preprocess="crop", load_size=32, crop_size=32, no_flip=True)
    dataset = StarGANTrainer.build_dataset(cfg, options, transform)
    batch = default_collate([dataset[i] for i in (0, 5, 9, 2)])
    assert batch["domain"].tolist() == [0, 1, 2, 0]
    return trainer, batch


def weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def changed(before: dict[str, torch.Tensor], net: torch.nn.Module) -> bool:
    return any(not torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def replay_draws(trainer: StarGANTrainer, state: torch.Tensor, n: int) -> tuple[Any, Any]:
    """The targets and penalty weights a step drew from the trainer's stream at ``state``."""
    generator = torch.Generator()
    generator.set_state(state)
    target = torch.randint(0, trainer.num_domains, (n,), generator=generator)
    alpha = torch.rand(n, 1, 1, 1, generator=generator)
    return target, alpha


def grads(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in net.parameters()]


def test_d_trains_every_step_and_g_every_n_critic_th(labelled: Path) -> None:
    trainer, batch = make_trainer(config(labelled, loss={"n_critic": 3}))
    nets = trainer.networks
    for step in range(1, 7):
        g_before, d_before = weights(nets["g"]), weights(nets["d"])
        losses = trainer.step(batch)
        assert changed(d_before, nets["d"]), f"step {step} left d unchanged"
        g_step = step % 3 == 0
        assert changed(g_before, nets["g"]) == g_step, f"step {step}: g changed {not g_step}"
        assert ("g_total" in losses) == g_step
        assert {"d_real", "d_fake", "d_cls", "d_gp", "d"} <= set(losses)
    assert trainer.steps == 6
    assert all(p.requires_grad for p in nets["d"].parameters())  # unfrozen after g steps


def _d_loss_by_hand(
    g: torch.nn.Module,
    d: torch.nn.Module,
    x: torch.Tensor,
    label_org: torch.Tensor,
    target: torch.Tensor,
    alpha: torch.Tensor,
    lambda_gp: float,
    create_graph: bool = True,
) -> dict[str, torch.Tensor]:
    """The reference's d loss, written out: critic, classification, gradient penalty."""
    out_src, out_cls = d(x)
    terms = {"d_real": -out_src.mean(), "d_cls": F.cross_entropy(out_cls, label_org)}
    with torch.no_grad():
        fake = g(x, torch.eye(3)[target])
    terms["d_fake"] = d(fake)[0].mean()
    x_hat = (alpha * x + (1 - alpha) * fake).requires_grad_(True)
    out = d(x_hat)[0]
    (dx,) = torch.autograd.grad(out, x_hat, torch.ones_like(out), create_graph=create_graph)
    norms = torch.sqrt(torch.sum(dx.view(dx.shape[0], -1) ** 2, dim=1))
    terms["d_gp"] = torch.mean((norms - 1) ** 2)
    terms["d"] = terms["d_real"] + terms["d_fake"] + terms["d_cls"] + lambda_gp * terms["d_gp"]
    return terms


def test_the_gradient_penalty_is_computed_and_applied_to_d(labelled: Path) -> None:
    trainer, batch = make_trainer(config(labelled))
    g0, d0 = copy.deepcopy(trainer.networks["g"]), copy.deepcopy(trainer.networks["d"])
    state = trainer.generator.get_state()
    logged = trainer.step(batch)  # a d step only (n_critic 5)
    target, alpha = replay_draws(trainer, state, 4)
    x, label_org = batch["image"], batch["domain"]

    terms = _d_loss_by_hand(g0, d0, x, label_org, target, alpha, lambda_gp=10.0)
    for name, value in terms.items():
        assert logged[name] == pytest.approx(float(value), rel=1e-5, abs=1e-6), name
    assert logged["d_gp"] > 1e-3  # a penalty that can be told from nothing

    # d's gradients are those of the whole loss, the penalty's second-order path included.
    expected = torch.autograd.grad(terms["d"], list(d0.parameters()))
    for got, want in zip(grads(trainer.networks["d"]), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # Dropping the penalty, or taking the input gradient without create_graph (the penalty
    # then has no path to d's weights), gives clearly different gradients.
    detached = _d_loss_by_hand(
        g0, d0, x, label_org, target, alpha, lambda_gp=10.0, create_graph=False
    )
    without = torch.autograd.grad(detached["d"], list(d0.parameters()))
    gap = max(float((a - b).abs().max()) for a, b in zip(without, expected, strict=True))
    assert gap > 1e-3, "the penalty does not change d's gradients: the test could not tell"


def test_g_terms_classification_and_reconstruction_by_hand(labelled: Path) -> None:
    trainer, batch = make_trainer(config(labelled, loss={"n_critic": 1, "lambda_rec": 7.0}))
    g0 = copy.deepcopy(trainer.networks["g"])
    state = trainer.generator.get_state()
    logged = trainer.step(batch)  # d step, then g step against the updated d
    d1 = copy.deepcopy(trainer.networks["d"])
    target, _ = replay_draws(trainer, state, 4)
    x, label_org = batch["image"], batch["domain"]

    fake = g0(x, torch.eye(3)[target])
    out_src, out_cls = d1(fake)
    g_fake = -out_src.mean()
    g_cls = F.cross_entropy(out_cls, target)
    g_rec = torch.mean(torch.abs(x - g0(fake, torch.eye(3)[label_org])))
    total = g_fake + 7.0 * g_rec + 1.0 * g_cls
    for name, value in (("g_fake", g_fake), ("g_cls", g_cls), ("g_rec", g_rec), ("g_total", total)):
        assert logged[name] == pytest.approx(float(value), rel=1e-5, abs=1e-6), name
    expected = torch.autograd.grad(total, list(g0.parameters()))
    for got, want in zip(grads(trainer.networks["g"]), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_targets_are_random_per_image_over_all_domains(labelled: Path) -> None:
    trainer, _ = make_trainer(config(labelled))
    targets = torch.cat([trainer.draw(4)[0] for _ in range(50)])
    counts = torch.bincount(targets, minlength=3)
    assert counts.min() > 40  # 200 draws, uniform over 3 domains


def test_fp16_gradient_penalty_is_unscaled(labelled: Path) -> None:
    """Under amp fp16 the penalty is taken of the scaled output (scale 65536 at first) and
    unscaled: it matches the float32 penalty up to fp16 error, not 65536 ** 2 times it."""
    cfg = config(labelled, amp="fp16")
    trainer, batch = make_trainer(cfg)
    assert trainer.scalers["d"].is_enabled() and trainer.scalers["d"].get_scale() == 65536.0
    g0, d0 = copy.deepcopy(trainer.networks["g"]), copy.deepcopy(trainer.networks["d"])
    state = trainer.generator.get_state()
    logged = trainer.step(batch)
    target, alpha = replay_draws(trainer, state, 4)
    terms = _d_loss_by_hand(g0, d0, batch["image"], batch["domain"], target, alpha, 10.0)
    assert logged["d_gp"] == pytest.approx(float(terms["d_gp"]), rel=0.05)
    # Scaled weight gradients that overflow fp16 make the scaler skip a step and halve its
    # scale, as for any loss; training then goes on with finite losses.
    d_before = weights(trainer.networks["d"])
    for _ in range(5):
        losses = trainer.step(batch)
        assert all(math.isfinite(v) for v in losses.values()), losses
    assert changed(d_before, trainer.networks["d"])
    assert trainer.scalers["d"].get_scale() >= 2.0**10


def test_compiled_networks_train_with_the_penalty(labelled: Path) -> None:
    """torch.compile cannot differentiate twice; the penalty goes through the plain d, and
    the compiled step computes what the eager one does."""
    eager, batch = make_trainer(config(labelled, loss={"n_critic": 1}))
    compiled, _ = make_trainer(
        config(labelled, loss={"n_critic": 1}),
        wrap=lambda m: torch.compile(m, backend="aot_eager"),
    )
    want, got = eager.step(batch), compiled.step(batch)
    assert set(got) == set(want)
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-6), name


def test_resume_is_exact_across_a_g_step(labelled: Path, tmp_path: Path) -> None:
    # 12 images, batch 2: 6 steps an epoch. g trains at steps 5 and 10; the resumed run
    # restarts at step 3, so only a saved step counter and target stream reproduce them.
    full = tmp_path / "full"
    train(config(labelled, max_steps=10), full)
    part = tmp_path / "part"
    train(config(labelled, max_steps=3), part)
    state = load_checkpoint(part / "latest.pt")["training_state"]["trainer"]
    assert state["steps"] == 3
    train(config(labelled, max_steps=10), part, resume=True)
    records = _losses(full)
    assert [r["step"] for r in records if "g_total" in r] == [5, 10]
    assert _losses(part) == records
    _assert_same_state(load_checkpoint(full / "latest.pt"), load_checkpoint(part / "latest.pt"))


def test_a_run_on_the_unaligned_layout_records_its_domains(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(tiny_dataset, family="stargan", model=dict(MODEL), max_steps=2)
    train(cfg, tmp_path / "run")
    checkpoint = load_checkpoint(tmp_path / "run" / "latest.pt")
    assert checkpoint["domains"] == ["A", "B"]
    assert checkpoint["config"]["model"]["domains"] == ["A", "B"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"gan_mode": "lsgan"}, "WGAN-GP"),
        ({"lambda_gp": 5.0}, "loss.lambda_gp"),
        ({"loss": {"lambda_cycle": 1.0}}, "unknown loss key"),
        ({"loss": {"n_critic": 0}}, "n_critic must be >= 1"),
        ({"data": {"crop_size": 16, "load_size": 32}}, "model.image_size"),
    ],
)
def test_bad_settings_are_config_errors(labelled: Path, tmp_path: Path, changes, message) -> None:
    with pytest.raises(ConfigError, match=message):
        train(config(labelled, max_steps=1, **changes), tmp_path / "run")


@pytest.mark.parametrize("preset", ["stargan", "stargan-tiny"])
def test_presets_build_and_crop_to_the_critic_size(preset: str) -> None:
    cfg = load_config(preset)
    assert cfg.family == "stargan" and cfg.gan_mode == "wgangp" and cfg.pool_size == 0
    assert "domains" not in cfg.model  # the data names them
    options = options_from_dict("stargan", {**cfg.model, "domains": DOMAINS})
    assert cfg.data.crop_size == options.image_size
    get_family("stargan").shape_rule(options).check(cfg.data.crop_size, cfg.data.crop_size)
    loss = StarGANTrainer(
        dataclasses.replace(cfg, model={**cfg.model, "domains": DOMAINS}),
        get_family("stargan").build(options),
        torch.device("cpu"),
    ).loss
    assert (loss.lambda_cls, loss.lambda_rec, loss.lambda_gp, loss.n_critic) == (1, 10, 10, 5)
