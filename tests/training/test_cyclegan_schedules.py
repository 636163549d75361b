"""CycleGAN's options for short runs: learning-rate warm-up and an identity term boosted early."""

from __future__ import annotations

import pytest
import torch

from i2i.data import TransformOptions, UnalignedDataset
from i2i.models import get_family, options_from_dict
from i2i.training.cyclegan import CycleGANTrainer, identity_weight, warmup_factor
from tests.conftest import tiny_config


def _trainer_and_batch(root, **changes):
    cfg = tiny_config(root, **changes)
    torch.manual_seed(cfg.seed)
    networks = get_family("cyclegan").build(options_from_dict("cyclegan", cfg.model))
    trainer = CycleGANTrainer(cfg, networks, torch.device("cpu"))
    ds = UnalignedDataset(root, transform=TransformOptions("crop", 32, 32))
    items = [ds[i] for i in range(cfg.batch_size)]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("A", "B")}
    return trainer, batch


def test_warmup_factor_values():
    assert [warmup_factor(step, 4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == warmup_factor(7, 0) == 1.0  # off


def test_identity_weight_values():
    assert identity_weight(0, 0.5, 4.0, 100) == pytest.approx(2.0)
    assert identity_weight(50, 0.5, 4.0, 100) == pytest.approx(1.25)
    assert identity_weight(100, 0.5, 4.0, 100) == pytest.approx(0.5)
    assert identity_weight(1000, 0.5, 4.0, 100) == pytest.approx(0.5)
    assert identity_weight(0, 0.5, 4.0, 0) == 0.5  # off
    assert identity_weight(0, 0.5, 1.0, 100) == 0.5  # off


def test_warmup_scales_the_rate_each_step_uses_and_gives_it_back(tiny_dataset):
    trainer, batch = _trainer_and_batch(tiny_dataset, loss={"lr_warmup_steps": 4}, lr=0.001)
    seen: dict[str, list[float]] = {"g": [], "d": []}
    for name, opt in trainer.optimizers.items():
        opt.register_step_pre_hook(
            lambda o, args, kwargs, name=name: seen[name].append(o.param_groups[0]["lr"])
        )
    for _ in range(5):
        trainer.step(batch)
        # The scheduler's rate is untouched between steps.
        assert all(o.param_groups[0]["lr"] == 0.001 for o in trainer.optimizers.values())
    expected = [0.00025, 0.0005, 0.00075, 0.001, 0.001]
    assert seen["g"] == pytest.approx(expected) and seen["d"] == pytest.approx(expected)


def test_warmup_off_by_default(tiny_dataset):
    trainer, batch = _trainer_and_batch(tiny_dataset, lr=0.001)
    seen: list[float] = []
    trainer.optimizers["g"].register_step_pre_hook(
        lambda o, args, kwargs: seen.append(o.param_groups[0]["lr"])
    )
    trainer.step(batch)
    assert seen == [0.001]


def test_identity_boost_weighs_the_first_steps(tiny_dataset):
    plain, batch = _trainer_and_batch(tiny_dataset, lambda_identity=0.5)
    boosted, _ = _trainer_and_batch(
        tiny_dataset,
        lambda_identity=0.5,
        loss={"identity_boost": 4.0, "identity_boost_steps": 2},
    )
    first_plain, first_boosted = plain.step(batch), boosted.step(batch)
    # Same networks and batch at step 0: the identity losses differ by the boost alone.
    for key in ("idt_ab", "idt_ba"):
        assert first_boosted[key] == pytest.approx(4.0 * first_plain[key], rel=1e-5)
    assert first_boosted["gan_ab"] == pytest.approx(first_plain["gan_ab"], rel=1e-5)
    boosted.step(batch)  # step 1: 2.5 x; from step 2 on the plain weight
    assert boosted.steps_done == 2
    assert identity_weight(boosted.steps_done, 0.5, 4.0, 2) == 0.5


def test_identity_boost_turns_the_term_on_only_with_lambda_identity(tiny_dataset):
    trainer, batch = _trainer_and_batch(
        tiny_dataset, lambda_identity=0.0, loss={"identity_boost": 4.0, "identity_boost_steps": 5}
    )
    assert "idt_ab" not in trainer.step(batch)


@pytest.mark.parametrize(
    ("loss", "match"),
    [
        ({"lr_warmup_steps": -1}, "lr_warmup_steps"),
        ({"identity_boost_steps": -2}, "identity_boost_steps"),
        ({"identity_boost": 0.5}, "identity_boost must be at least 1"),
    ],
)
def test_bad_schedule_values_are_refused(tiny_dataset, loss, match):
    with pytest.raises(ValueError, match=match):
        _trainer_and_batch(tiny_dataset, loss=loss)
