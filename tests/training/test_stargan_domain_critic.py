"""StarGAN's ``model.domain_critic``: one real/fake map per domain, each image scored by its
own domain's map (reals) or its target's (translations, the penalty), recomputed by hand."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from i2i.checkpoint import load_checkpoint
from i2i.models import create_networks, options_from_dict
from i2i.models.stargan import StarGANOptions, critic_map
from i2i.training import TrainConfig, train
from tests.conftest import tiny_config
from tests.training.test_stargan import (
    DOMAINS,
    MODEL,
    grads,
    labelled,  # noqa: F401 (fixture)
    make_trainer,
    replay_draws,
)

CRITIC = {"domain_critic": True}


def config(root: Path, model: dict[str, Any], **changes: Any) -> TrainConfig:
    return tiny_config(
        root, family="stargan", model={**MODEL, "domains": DOMAINS, **model}, **changes
    )


def test_default_is_off_and_one_map() -> None:
    assert StarGANOptions().domain_critic is False
    d = create_networks("stargan", {**MODEL, "domains": DOMAINS})["d"]
    assert d.conv_src.out_channels == 1
    d = create_networks("stargan", {**MODEL, "domains": DOMAINS, **CRITIC})["d"]
    assert d.conv_src.out_channels == len(DOMAINS)
    src, cls = d(torch.rand(2, 3, 32, 32))
    assert src.shape[:2] == (2, 3) and cls.shape == (2, 3)


def test_critic_map_picks_each_images_domain() -> None:
    src = torch.arange(3 * 4 * 2 * 2, dtype=torch.float32).reshape(3, 4, 2, 2)
    picked = critic_map(src, torch.tensor([2, 0, 3]))
    assert picked.shape == (3, 1, 2, 2)
    for row, domain in enumerate((2, 0, 3)):
        assert torch.equal(picked[row, 0], src[row, domain])
    one = torch.rand(3, 1, 2, 2)
    assert critic_map(one, torch.tensor([2, 0, 1])) is one  # the reference's single map


def _pick(src: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each image's map, written out with a loop (independent of critic_map)."""
    return torch.stack([src[i, int(labels[i])] for i in range(src.shape[0])])


def test_d_terms_and_gradients_use_the_domain_and_target_maps(labelled: Path) -> None:  # noqa: F811
    cfg = config(labelled, CRITIC)
    trainer, batch = make_trainer(cfg)
    g0, d0 = copy.deepcopy(trainer.networks["g"]), copy.deepcopy(trainer.networks["d"])
    state = trainer.generator.get_state()
    logged = trainer.step(batch)  # a d step only (n_critic 5)
    target, alpha = replay_draws(trainer, state, 4)
    x, label_org = batch["image"], batch["domain"]
    assert not torch.equal(target, label_org)  # the maps of reals and fakes differ here

    out_src, out_cls = d0(x)
    d_real = -_pick(out_src, label_org).mean()
    with torch.no_grad():
        fake = g0(x, torch.eye(3)[target])
    fake_src = d0(fake)[0]
    d_fake = _pick(fake_src, target).mean()
    x_hat = (alpha * x + (1 - alpha) * fake).requires_grad_(True)
    out = _pick(d0(x_hat)[0], target)
    (dx,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    d_gp = ((dx.flatten(1).norm(dim=1) - 1) ** 2).mean()
    total = d_real + d_fake + F.cross_entropy(out_cls, label_org) + 10.0 * d_gp
    for name, value in (("d_real", d_real), ("d_fake", d_fake), ("d_gp", d_gp), ("d", total)):
        assert logged[name] == pytest.approx(float(value.detach()), rel=1e-5, abs=1e-6), name
    # The mean over all maps (the critic ignoring the domains) is a different number.
    assert abs(logged["d_fake"] - float(fake_src.mean())) > 1e-4
    expected = torch.autograd.grad(total, list(d0.parameters()))
    for got, want in zip(grads(trainer.networks["d"]), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_g_is_scored_by_its_targets_map(labelled: Path) -> None:  # noqa: F811
    cfg = config(labelled, CRITIC, loss={"n_critic": 1})
    trainer, batch = make_trainer(cfg)
    g0 = copy.deepcopy(trainer.networks["g"])
    state = trainer.generator.get_state()
    logged = trainer.step(batch)
    d1 = trainer.networks["d"]
    target, _ = replay_draws(trainer, state, 4)
    x, label_org = batch["image"], batch["domain"]
    fake = g0(x, torch.eye(3)[target])
    with torch.no_grad():
        src, cls = d1(fake)
    g_fake = -_pick(src, target).mean()
    rec = torch.mean(torch.abs(x - g0(fake, torch.eye(3)[label_org])))
    assert logged["g_fake"] == pytest.approx(float(g_fake), rel=1e-5, abs=1e-6)
    assert logged["g_cls"] == pytest.approx(float(F.cross_entropy(cls, target)), rel=1e-5)
    assert logged["g_rec"] == pytest.approx(float(rec), rel=1e-5, abs=1e-6)


def test_a_run_with_the_option_trains_and_records_it(labelled: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = config(
        labelled,
        {**CRITIC, "conditional_norm": True},
        loss={"n_critic": 1},
        max_steps=2,
    )
    train(cfg, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "latest.pt")
    options = options_from_dict("stargan", ckpt["config"]["model"])
    assert options.domain_critic and options.conditional_norm
    assert ckpt["networks"]["d"]["conv_src.weight"].shape[0] == len(DOMAINS)
