"""UNIT and MUNIT steps: what each pass computes, and the two ways to leave passes out.

A term of weight 0 is not computed (the within-domain reconstructions are decodings of
their own), and ``loss.reuse_translations`` lets the discriminators learn from the
generators' update's translations instead of translating once more. Without the VAE
(CoGAN's deterministic encoders) the translations are always reused: both passes would
compute the same images, and the networks after a step are those of the reference's order.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from tests.training.test_unit import family_config, trainer_and_batch


def record_calls(module: torch.nn.Module) -> list[torch.Tensor]:
    """The first input of every call of ``module`` from now on (detached copies)."""
    inputs: list[torch.Tensor] = []
    module.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
    return inputs


@pytest.mark.parametrize("family", ["unit", "munit"])
@pytest.mark.parametrize(
    ("recon_x_w", "reuse", "decodings"),
    [
        (10.0, False, 1 + 3),  # the discriminators' pass, then translation, recon, cycle
        (0.0, False, 1 + 2),  # no within-domain reconstruction
        (0.0, True, 2),  # and one pass for both updates
    ],
)
def test_each_generator_decodes_only_what_the_step_uses(
    tiny_dataset, family, recon_x_w, reuse, decodings
):
    loss = {"recon_x_w": recon_x_w, "recon_x_cyc_w": 1.0, "reuse_translations": reuse}
    trainer, networks, batch = trainer_and_batch(family_config(family, tiny_dataset, loss=loss))
    calls = {name: record_calls(networks[name].dec) for name in ("gen_a", "gen_b")}
    losses = trainer.step(batch)
    assert {name: len(c) for name, c in calls.items()} == {"gen_a": decodings, "gen_b": decodings}
    assert ("gen_recon_x_a" in losses) == (recon_x_w > 0)
    assert "gen_cyc_x_a" in losses or "gen_cycrecon_x_a" in losses


@pytest.mark.parametrize("family", ["unit", "munit"])
@pytest.mark.parametrize("reuse", [False, True])
def test_reused_translations_are_what_the_discriminators_learn_from(tiny_dataset, family, reuse):
    """dis_a sees x_ba in the discriminators' update (its first call) and in the
    generators' adversarial term (its third): the same image only when reused; the
    reference translates again with fresh noise (UNIT) or fresh styles (MUNIT)."""
    loss = {"reuse_translations": reuse}
    trainer, networks, batch = trainer_and_batch(family_config(family, tiny_dataset, loss=loss))
    seen = record_calls(networks["dis_a"])
    trainer.step(batch)
    fake_for_dis, real_for_dis, fake_for_gen = seen
    assert torch.equal(real_for_dis, batch["A"])
    assert torch.equal(fake_for_dis, fake_for_gen) == reuse


def test_munit_reuse_draws_one_pair_of_styles_per_step(tiny_dataset):
    draws = {}
    for reuse in (False, True):
        cfg = family_config("munit", tiny_dataset, loss={"reuse_translations": reuse})
        trainer, _, batch = trainer_and_batch(cfg)
        drawn: list[Any] = []
        random_styles = trainer._random_styles
        trainer._random_styles = lambda n, f=random_styles, d=drawn: d.append(n) or f(n)
        trainer.step(batch)
        draws[reuse] = len(drawn)
    assert draws == {False: 2, True: 1}


def assert_same_weights(left: dict, right: dict, exact: bool = False) -> None:
    for name, net in left.items():
        theirs = right[name].state_dict()
        for key, p in net.state_dict().items():
            if exact:
                assert torch.equal(p, theirs[key]), f"{name}.{key}"
            else:
                torch.testing.assert_close(p, theirs[key], rtol=1e-6, atol=1e-7)


def test_deterministic_encoders_reuse_and_train_as_the_reference_order(tiny_dataset):
    """CoGAN (model.vae false) reuses its translations: after two steps every weight
    equals that of the reference's order (a no-grad pass for the discriminators, then
    the generators' pass), run on networks built alike."""
    loss = {"recon_kl_w": 0.0, "recon_kl_cyc_w": 0.0}
    cfg = family_config("unit", tiny_dataset, model={"vae": False}, loss=loss)
    trainer, networks, batch = trainer_and_batch(cfg)
    assert trainer.reuse and not trainer.loss.reuse_translations
    reference, ref_networks, _ = trainer_and_batch(cfg)
    reference.reuse = False
    assert_same_weights(networks, ref_networks, exact=True)
    before = copy.deepcopy(networks)
    for _ in range(2):
        got, want = trainer.step(batch), reference.step(batch)
        assert got == pytest.approx(want, rel=1e-6, abs=1e-7)
    assert_same_weights(networks, ref_networks)
    with pytest.raises(AssertionError):  # the steps did change the networks
        assert_same_weights(networks, before)


@pytest.mark.parametrize("family", ["unit", "munit"])
def test_leaving_out_a_weight_0_reconstruction_trains_the_same_networks(tiny_dataset, family):
    """recon_x_w 0 (the decodings left out) against a weight so small that its gradient
    underflows to exactly 0 in float32 (the decodings computed, as before the change):
    after three steps every weight and the optimisers' moments are the same, bit for bit."""
    runs = {}
    for weight in (0.0, 1e-45):
        loss = {"recon_x_w": weight, "recon_x_cyc_w": 1.0}
        trainer, networks, batch = trainer_and_batch(family_config(family, tiny_dataset, loss=loss))
        torch.manual_seed(7)
        for _ in range(3):
            losses = trainer.step(batch)
        assert ("gen_recon_x_a" in losses) == (weight > 0)
        runs[weight] = (networks, trainer.optimizers["gen"].state_dict()["state"])
    (nets, moments), (computed, computed_moments) = runs[0.0], runs[1e-45]
    assert_same_weights(nets, computed, exact=True)
    for index, state in moments.items():
        for key, value in state.items():
            assert torch.equal(value, computed_moments[index][key]), (index, key)
