"""loss.colour_lr_mult: g's colour transform learns at its own rate, scheduled and resumed
as the rest of the run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from i2i.checkpoint import load_checkpoint
from i2i.training import ConfigError, train
from tests.training.test_resume import _assert_same_state, _losses
from tests.training.test_stargan import config, labelled, make_trainer  # noqa: F401

COLOUR = {"global_skip": True, "colour_transform": True}
COLOUR_NAMES = {"colour_weight", "colour_bias"}


def colour_config(root: Path, mult: float, **changes):
    cfg = config(root, loss={"colour_lr_mult": mult, "n_critic": 1}, **changes)
    cfg.model.update(COLOUR)
    return cfg


def test_the_colour_transform_gets_a_group_at_its_rate(labelled: Path) -> None:  # noqa: F811
    trainer, _ = make_trainer(colour_config(labelled, 10.0, lr=1e-3))
    g = trainer.networks["g"]
    groups = trainer.optimizers["g"].param_groups
    assert [group["lr"] for group in groups] == pytest.approx([1e-3, 1e-2])
    names = {id(p): n for n, p in g.named_parameters()}
    assert {names[id(p)] for p in groups[1]["params"]} == COLOUR_NAMES
    assert len(groups[0]["params"]) + 2 == len(list(g.parameters()))
    assert len(trainer.optimizers["d"].param_groups) == 1  # d has no colour transform
    # At the default (1) and without the transform: one group, the reference's layout.
    trainer, _ = make_trainer(colour_config(labelled, 1.0))
    assert len(trainer.optimizers["g"].param_groups) == 1


def test_the_multiplier_without_the_transform_is_one_group_and_a_warning(
    labelled: Path,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="i2i.training.stargan"):
        trainer, _ = make_trainer(config(labelled, loss={"colour_lr_mult": 10.0}))
    assert len(trainer.optimizers["g"].param_groups) == 1
    assert "model.colour_transform is off" in caplog.text


def test_one_adam_step_moves_the_colour_transform_mult_times_as_far(
    labelled: Path,  # noqa: F811
) -> None:
    """Adam's first step moves every parameter by about its rate (sign of the gradient):
    the colour entries by 10x the rate, the rest of g by the rate."""
    trainer, batch = make_trainer(colour_config(labelled, 10.0, lr=1e-4))
    g = trainer.networks["g"]
    before = {n: p.detach().clone() for n, p in g.named_parameters()}
    trainer.step(batch)  # n_critic 1: g steps
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in g.named_parameters()}
    for name in COLOUR_NAMES:
        assert moved[name] == pytest.approx(1e-3, rel=0.05), name
    assert max(v for n, v in moved.items() if n not in COLOUR_NAMES) == pytest.approx(
        1e-4, rel=0.05
    )


def test_a_scheduled_run_with_the_option_resumes_exactly(
    labelled: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    changes = {"n_epochs": 1, "n_epochs_decay": 2, "lr": 1e-3}
    full, part = tmp_path / "full", tmp_path / "part"
    train(colour_config(labelled, 5.0, max_steps=12, **changes), full)
    train(colour_config(labelled, 5.0, max_steps=7, **changes), part)
    train(colour_config(labelled, 5.0, max_steps=12, **changes), part, resume=True)
    assert _losses(part) == _losses(full)
    _assert_same_state(load_checkpoint(full / "latest.pt"), load_checkpoint(part / "latest.pt"))
    # The schedule scales both groups alike: the logged rate is the first group's.
    state = load_checkpoint(full / "latest.pt")["optimizers"]["g"]
    rates = [group["lr"] for group in state["param_groups"]]
    assert rates[1] == pytest.approx(5 * rates[0]) and rates[0] < 1e-3


def test_a_negative_multiplier_is_a_config_error(labelled: Path, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match="colour_lr_mult must be >= 0"):
        train(colour_config(labelled, -1.0, max_steps=1), tmp_path / "run")
