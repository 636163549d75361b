"""UNIT training: one step, shared layers, loss options, the step LR policy, exact resume."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from i2i.checkpoint import load_checkpoint
from i2i.data import TransformOptions, UnalignedDataset
from i2i.models import get_family, options_from_dict
from i2i.training import train
from i2i.training.config import ConfigError, TrainConfig, load_config, loss_options
from i2i.training.loop import trainer_class
from i2i.training.monitor import read_loss_log
from i2i.training.unit import (
    UNITLossOptions,
    multiscale_dis_loss,
    multiscale_gen_loss,
    unique_parameters,
)
from tests.conftest import TINY_MODEL_OPTIONS, tiny_config

UNIT_LOSSES = {
    "dis_a",
    "dis_b",
    "dis_total",
    "gen_recon_x_a",
    "gen_recon_x_b",
    "gen_recon_kl_a",
    "gen_recon_kl_b",
    "gen_recon_kl_cyc_aba",
    "gen_recon_kl_cyc_bab",
    "gen_cyc_x_a",
    "gen_cyc_x_b",
    "gen_adv_a",
    "gen_adv_b",
    "gen_total",
}


def family_config(family: str, root: Path, **changes) -> TrainConfig:
    """tiny_config for `family` with its tiny networks (model.* keys in `changes` added)."""
    model = {**TINY_MODEL_OPTIONS[family], **changes.pop("model", {})}
    return tiny_config(root, family=family, model=model, **changes)


def trainer_and_batch(cfg: TrainConfig):
    """(trainer, networks, batch) for `cfg`, networks seeded as the loop seeds them."""
    torch.manual_seed(cfg.seed)
    networks = get_family(cfg.family).build(options_from_dict(cfg.family, cfg.model))
    for net in networks.values():
        net.train()
    trainer = trainer_class(cfg.family)(cfg, networks, torch.device("cpu"))
    ds = UnalignedDataset(cfg.data.root, transform=TransformOptions("crop", 32, 32))
    items = [ds[i] for i in range(cfg.batch_size)]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("A", "B")}
    return trainer, networks, batch


def assert_every_network_learns(networks, step) -> None:
    """After `step()`, every network has changed, and every unchanged tensor is a bias.

    (A convolution's bias followed by instance normalisation gets no gradient at all.)
    """
    before = {n: {k: p.detach().clone() for k, p in net.named_parameters()} for n, net in
              networks.items()}  # fmt: skip
    step()
    for name, net in networks.items():
        params = dict(net.named_parameters())
        unchanged = [k for k, p in params.items() if torch.equal(before[name][k], p)]
        assert len(unchanged) < len(params), f"{name}: no parameter changed"
        assert all(k.endswith("bias") for k in unchanged), f"{name}: unchanged {unchanged}"


@pytest.mark.parametrize("gan_mode", ["lsgan", "vanilla"])
def test_one_step_changes_every_network(tiny_dataset, gan_mode):
    trainer, networks, batch = trainer_and_batch(
        family_config("unit", tiny_dataset, gan_mode=gan_mode)
    )
    losses: dict[str, float] = {}
    assert_every_network_learns(networks, lambda: losses.update(trainer.step(batch)))
    assert set(losses) == UNIT_LOSSES
    assert all(math.isfinite(v) for v in losses.values())
    # The discriminators are trainable again after the generators' update.
    assert all(p.requires_grad for n in ("dis_a", "dis_b") for p in networks[n].parameters())


def test_totals_are_the_reference_weighted_sums(tiny_dataset):
    trainer, _, batch = trainer_and_batch(family_config("unit", tiny_dataset))
    out = trainer.step(batch)
    assert out["dis_total"] == pytest.approx(out["dis_a"] + out["dis_b"], rel=1e-5)
    w = UNITLossOptions()
    expected = (
        w.gan_w * (out["gen_adv_a"] + out["gen_adv_b"])
        + w.recon_x_w * (out["gen_recon_x_a"] + out["gen_recon_x_b"])
        + w.recon_kl_w * (out["gen_recon_kl_a"] + out["gen_recon_kl_b"])
        + w.recon_x_cyc_w * (out["gen_cyc_x_a"] + out["gen_cyc_x_b"])
        + w.recon_kl_cyc_w * (out["gen_recon_kl_cyc_aba"] + out["gen_recon_kl_cyc_bab"])
    )
    assert out["gen_total"] == pytest.approx(expected, rel=1e-5)
    assert (w.gan_w, w.recon_x_w, w.recon_kl_w, w.recon_x_cyc_w, w.recon_kl_cyc_w) == (
        1.0, 10.0, 0.01, 10.0, 0.01,
    )  # fmt: skip


def hand_dis_loss(dis, fake, real, mode: str) -> torch.Tensor:
    """The reference's MsImageDis.calc_dis_loss, written out: per scale, fake -> 0, real -> 1."""
    loss = torch.zeros(())
    for out0, out1 in zip(dis(fake), dis(real), strict=True):
        if mode == "lsgan":
            loss = loss + torch.mean((out0 - 0) ** 2) + torch.mean((out1 - 1) ** 2)
        else:  # the reference's nsgan
            loss = loss + torch.mean(
                F.binary_cross_entropy(torch.sigmoid(out0), torch.zeros_like(out0))
                + F.binary_cross_entropy(torch.sigmoid(out1), torch.ones_like(out1))
            )
    return loss


def hand_gen_loss(dis, fake, mode: str) -> torch.Tensor:
    """The reference's MsImageDis.calc_gen_loss, written out: every scale's output -> 1."""
    loss = torch.zeros(())
    for out0 in dis(fake):
        if mode == "lsgan":
            loss = loss + torch.mean((out0 - 1) ** 2)
        else:
            loss = loss + torch.mean(
                F.binary_cross_entropy(torch.sigmoid(out0), torch.ones_like(out0))
            )
    return loss


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The reference's recon_criterion."""
    return torch.mean(torch.abs(a - b))


def assert_terms_match(logged: dict[str, float], expected: dict[str, torch.Tensor]) -> None:
    """Every logged loss equals its hand-computed value, and nothing is left unchecked."""
    assert set(logged) == set(expected)
    for name, value in expected.items():
        assert logged[name] == pytest.approx(float(value), rel=1e-5, abs=1e-6), name


def differ(a: dict[str, torch.nn.Module], b: dict[str, torch.nn.Module], name: str) -> bool:
    """Whether network `name` has different weights in the two network sets."""
    pa, pb = a[name].state_dict(), b[name].state_dict()
    return any(not torch.equal(pa[k], pb[k]) for k in pa)


UNIT_HAND_WEIGHTS = {
    "gan_w": 1.5,
    "recon_x_w": 3.0,
    "recon_kl_w": 0.2,
    "recon_x_cyc_w": 4.0,
    "recon_kl_cyc_w": 0.3,
}


@pytest.mark.parametrize("gan_mode", ["lsgan", "vanilla"])
@pytest.mark.parametrize("share", [True, False])
def test_every_loss_term_matches_the_reference_trainer_by_hand(tiny_dataset, gan_mode, share):
    """Each logged term of one step, recomputed as the reference's UNIT_Trainer does.

    Following mingyuliutw/UNIT trainer.py line by line with the networks' own
    encode/decode and the discriminators' per-scale outputs (not i2i's loss code):
    dis_update on the initial networks, then gen_update with the initial generators and
    the discriminators after the dis step (the gen step leaves them alone). Both draw
    their encoder noise from the global RNG in the reference's order.
    """
    cfg = family_config(
        "unit", tiny_dataset, gan_mode=gan_mode, model={"share": share}, loss=UNIT_HAND_WEIGHTS
    )
    trainer, networks, batch = trainer_and_batch(cfg)
    initial = copy.deepcopy(networks)  # one deepcopy: shared layers stay shared
    torch.manual_seed(1234)
    logged = trainer.step(batch)
    assert differ(initial, networks, "dis_a") and differ(initial, networks, "dis_b")
    assert differ(initial, networks, "gen_a") and differ(initial, networks, "gen_b")

    w = UNIT_HAND_WEIGHTS
    x_a, x_b = batch["A"], batch["B"]
    gen_a, gen_b = initial["gen_a"], initial["gen_b"]
    torch.manual_seed(1234)
    with torch.no_grad():
        # dis_update: encode, decode (cross domain), D loss.
        h_a, n_a = gen_a.encode(x_a)
        h_b, n_b = gen_b.encode(x_b)
        x_ba = gen_a.decode(h_b + n_b)
        x_ab = gen_b.decode(h_a + n_a)
        dis_a = hand_dis_loss(initial["dis_a"], x_ba, x_a, gan_mode)
        dis_b = hand_dis_loss(initial["dis_b"], x_ab, x_b, gan_mode)
        expected = {
            "dis_a": dis_a,
            "dis_b": dis_b,
            "dis_total": w["gan_w"] * dis_a + w["gan_w"] * dis_b,
        }
        # gen_update, against the discriminators the dis step produced.
        d_a, d_b = networks["dis_a"], networks["dis_b"]
        h_a, n_a = gen_a.encode(x_a)
        h_b, n_b = gen_b.encode(x_b)
        x_a_recon = gen_a.decode(h_a + n_a)
        x_b_recon = gen_b.decode(h_b + n_b)
        x_ba = gen_a.decode(h_b + n_b)
        x_ab = gen_b.decode(h_a + n_a)
        h_b_recon, n_b_recon = gen_a.encode(x_ba)
        h_a_recon, n_a_recon = gen_b.encode(x_ab)
        x_aba = gen_a.decode(h_a_recon + n_a_recon)
        x_bab = gen_b.decode(h_b_recon + n_b_recon)
        gen = {
            "gen_recon_x_a": l1(x_a_recon, x_a),
            "gen_recon_x_b": l1(x_b_recon, x_b),
            "gen_recon_kl_a": torch.mean(h_a**2),
            "gen_recon_kl_b": torch.mean(h_b**2),
            "gen_cyc_x_a": l1(x_aba, x_a),
            "gen_cyc_x_b": l1(x_bab, x_b),
            "gen_recon_kl_cyc_aba": torch.mean(h_a_recon**2),
            "gen_recon_kl_cyc_bab": torch.mean(h_b_recon**2),
            "gen_adv_a": hand_gen_loss(d_a, x_ba, gan_mode),
            "gen_adv_b": hand_gen_loss(d_b, x_ab, gan_mode),
        }
        gen["gen_total"] = (
            w["gan_w"] * gen["gen_adv_a"]
            + w["gan_w"] * gen["gen_adv_b"]
            + w["recon_x_w"] * gen["gen_recon_x_a"]
            + w["recon_kl_w"] * gen["gen_recon_kl_a"]
            + w["recon_x_w"] * gen["gen_recon_x_b"]
            + w["recon_kl_w"] * gen["gen_recon_kl_b"]
            + w["recon_x_cyc_w"] * gen["gen_cyc_x_a"]
            + w["recon_kl_cyc_w"] * gen["gen_recon_kl_cyc_aba"]
            + w["recon_x_cyc_w"] * gen["gen_cyc_x_b"]
            + w["recon_kl_cyc_w"] * gen["gen_recon_kl_cyc_bab"]
        )
        expected.update(gen)
        # The adversarial terms see the updated discriminators: with the initial ones the
        # values differ (so this test tells the two apart).
        stale = hand_gen_loss(initial["dis_a"], x_ba, gan_mode)
    assert_terms_match(logged, expected)
    if gan_mode == "lsgan":  # BCE near log 4 barely moves after one step: only LSGAN tells
        assert abs(float(stale) - logged["gen_adv_a"]) > 1e-4 * abs(logged["gen_adv_a"])


def test_cycle_weight_zero_drops_the_cycle_terms_and_weights_apply(tiny_dataset):
    cfg = family_config("unit", tiny_dataset, loss={"recon_x_cyc_w": 0, "gan_w": 2.0})
    trainer, _, batch = trainer_and_batch(cfg)
    out = trainer.step(batch)
    assert "gen_cyc_x_a" not in out and "gen_cyc_x_b" not in out
    assert out["dis_total"] == pytest.approx(2.0 * (out["dis_a"] + out["dis_b"]), rel=1e-5)


def test_multiscale_losses_follow_the_reference():
    """lsgan: sum over scales of mean(fake^2) + mean((real - 1)^2); gen: mean((fake - 1)^2)."""
    outputs = {
        "fake": [torch.full((1, 1, 4, 4), 0.5), torch.full((1, 1, 2, 2), -1.0)],
        "real": [torch.full((1, 1, 4, 4), 2.0), torch.full((1, 1, 2, 2), 1.0)],
    }

    def dis(x):
        return outputs["fake" if x.item() == 0 else "real"]

    fake, real = torch.zeros(()), torch.ones(())
    assert multiscale_dis_loss(dis, fake, real, "lsgan").item() == pytest.approx(
        (0.25 + 1.0) + (1.0 + 0.0)
    )
    assert multiscale_gen_loss(dis, fake, "lsgan").item() == pytest.approx(0.25 + 4.0)
    # nsgan: binary cross-entropy of sigmoid(logits), here -log(1 - s(0.5)) and so on.
    nll = torch.nn.functional.softplus
    expected = nll(torch.tensor(0.5)) + nll(torch.tensor(-2.0)) + nll(torch.tensor(-1.0)) * 2
    assert multiscale_dis_loss(dis, fake, real, "vanilla").item() == pytest.approx(
        expected.item(), rel=1e-6
    )


def test_shared_layers_are_optimised_once(tiny_dataset):
    cfg = family_config("unit", tiny_dataset, model={"share": True})
    trainer, networks, _ = trainer_and_batch(cfg)
    ids_a = {id(p) for p in networks["gen_a"].parameters()}
    shared = [p for p in networks["gen_b"].parameters() if id(p) in ids_a]
    assert shared, "share=True should make gen_a and gen_b hold the same layers"
    params = trainer.optimizers["gen"].param_groups[0]["params"]
    assert len({id(p) for p in params}) == len(params)
    assert len(params) == len(list(networks["gen_a"].parameters())) + len(
        list(networks["gen_b"].parameters())
    ) - len(shared)
    # Without sharing, nothing is common and every parameter is there.
    separate, nets, _ = trainer_and_batch(
        family_config("unit", tiny_dataset, model={"share": False})
    )
    n = len(list(nets["gen_a"].parameters())) + len(list(nets["gen_b"].parameters()))
    assert len(separate.optimizers["gen"].param_groups[0]["params"]) == n
    assert unique_parameters([nets["dis_a"], nets["dis_a"]]) == list(nets["dis_a"].parameters())


def test_optimisers_use_the_configured_adam_settings(tiny_dataset):
    cfg = family_config("unit", tiny_dataset, lr=1e-4, beta1=0.5, beta2=0.99, weight_decay=1e-4)
    trainer, _, _ = trainer_and_batch(cfg)
    assert set(trainer.optimizers) == {"dis", "gen"}
    for opt in trainer.optimizers.values():
        group = opt.param_groups[0]
        assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-4, (0.5, 0.99), 1e-4)


def test_bad_loss_options_are_config_errors(tiny_dataset):
    with pytest.raises(ConfigError, match=r"loss\.recon_kl_weight.*valid: .*loss\.recon_kl_w"):
        trainer_and_batch(family_config("unit", tiny_dataset, loss={"recon_kl_weight": 1}))
    with pytest.raises(ConfigError, match="recon_x_w must be >= 0"):
        trainer_and_batch(family_config("unit", tiny_dataset, loss={"recon_x_w": -1}))
    with pytest.raises(ConfigError, match="loss.gan_w must be float"):
        trainer_and_batch(family_config("unit", tiny_dataset, loss={"gan_w": "high"}))
    with pytest.raises(ConfigError, match="gan_mode='wgangp'.*lsgan or vanilla"):
        trainer_and_batch(family_config("unit", tiny_dataset, gan_mode="wgangp"))


def test_samples_do_not_disturb_the_random_stream(tiny_dataset):
    """Asking for the sample images between steps leaves the losses of later steps alone."""
    runs = []
    for look in (False, True):
        trainer, _, batch = trainer_and_batch(family_config("unit", tiny_dataset))
        losses = []
        for _ in range(3):
            losses.append(trainer.step(batch))
            if look:
                visuals = trainer.last_visuals
                assert set(visuals) == {n for row in trainer.visual_rows() for n in row}
                assert all(v.shape == batch["A"].shape for v in visuals.values())
        runs.append(losses)
    assert runs[0] == runs[1]


def _losses(run: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "time"} for r in read_loss_log(run / "losses.jsonl")
    ]


def assert_exact_resume(cfg_for, tmp_path: Path, total: int, stop: int) -> None:
    """`total` steps in one go equal `stop` steps, then a resume to `total`, bitwise."""
    train(cfg_for(total), tmp_path / "full")
    train(cfg_for(stop), tmp_path / "part")
    assert load_checkpoint(tmp_path / "part" / "latest.pt")["step"] == stop
    train(cfg_for(total), tmp_path / "part", resume=True)
    assert _losses(tmp_path / "part") == _losses(tmp_path / "full")
    a = load_checkpoint(tmp_path / "full" / "latest.pt")
    b = load_checkpoint(tmp_path / "part" / "latest.pt")
    for name, state in a["networks"].items():
        for key, tensor in state.items():
            assert torch.equal(tensor, b["networks"][name][key]), f"{name}.{key} differs"
    for name, opt in a["optimizers"].items():
        for idx, st in opt["state"].items():
            for key, tensor in st.items():
                assert torch.equal(tensor, b["optimizers"][name]["state"][idx][key]), (
                    f"optimizer {name}[{idx}].{key} differs"
                )
    assert a["schedulers"] == b["schedulers"]
    assert a["training_state"]["trainer"].keys() == b["training_state"]["trainer"].keys()


def test_resume_is_exact(tiny_dataset, tmp_path):
    # 8 images, batch 2: 4 steps an epoch; 7 steps cross an epoch boundary and, with a step
    # size of 3, two learning-rate decays; samples are drawn every 2 steps.
    def cfg_for(steps: int) -> TrainConfig:
        return family_config(
            "unit",
            tiny_dataset,
            max_steps=steps,
            lr_policy="step",
            lr_step_size=3,
            sample_every=2,
            weight_decay=1e-4,
        )

    assert_exact_resume(cfg_for, tmp_path, total=7, stop=3)


def test_step_policy_decays_every_lr_step_size_steps(tiny_dataset, tmp_path):
    cfg = family_config(
        "unit", tiny_dataset, max_steps=5, lr=1e-4, lr_policy="step", lr_step_size=2
    )
    train(cfg, tmp_path / "run")
    records = read_loss_log(tmp_path / "run" / "losses.jsonl")
    # Logged with each step: the rate that step used, 1e-4 * 0.5 ** ((step - 1) // 2).
    expected = [1e-4, 1e-4, 5e-5, 5e-5, 2.5e-5]
    assert [r["lr_gen"] for r in records] == pytest.approx(expected)
    assert [r["lr_dis"] for r in records] == pytest.approx(expected)


@pytest.mark.parametrize("name", ["unit", "unit-tiny"])
def test_presets_are_valid(name):
    cfg = load_config(name)
    assert cfg.family == "unit"
    assert loss_options(cfg, UNITLossOptions) == UNITLossOptions(**cfg.loss)
    options_from_dict("unit", cfg.model)
    TransformOptions(cfg.data.preprocess, cfg.data.load_size, cfg.data.crop_size)


DDP_SCRIPT = """
import sys
import torch
import torch.distributed as dist
from i2i.models import get_family, options_from_dict
from i2i.training import distributed
from i2i.training.config import config_from_dict
from i2i.training.loop import trainer_class
from tests.conftest import TINY_MODEL_OPTIONS

info = distributed.setup()  # gloo on the CPU
rank = info.rank
family = sys.argv[1]
cfg = config_from_dict({"family": family, "model": TINY_MODEL_OPTIONS[family]})
torch.manual_seed(0)
nets = get_family(family).build(options_from_dict(family, cfg.model))
trainer = trainer_class(family)(
    cfg, nets, torch.device("cpu"), wrap=torch.nn.parallel.DistributedDataParallel
)
torch.manual_seed(100 + rank)  # each rank its own images, noise and styles
batch = {k: torch.rand(2, 3, 32, 32) * 2 - 1 for k in ("A", "B")}
trainer.step(batch)
for name, net in sorted(nets.items()):
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(2)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        print(name, "same" if torch.equal(gathered[0], gathered[1]) else "differs")
# The loop's own way out: the process group torn down while gloo's threads still free
# finished collectives aborted this script under load ("terminate called without an
# active exception"); cleanup() waits for them first.
distributed.cleanup(info)
"""


@pytest.mark.slow
@pytest.mark.parametrize("family", ["unit", "munit"])
def test_ddp_keeps_every_network_in_sync(family, tmp_path):
    """Under DDP (gloo, two processes, different data) all four networks stay equal: the
    generators' encode/decode calls go through the wrapped module's forward."""
    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "ddp_step.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*cmd, str(script), family], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [ln for ln in done.stdout.splitlines() if ln.split()[:1] in (["dis_a"], ["dis_b"],
             ["gen_a"], ["gen_b"])]  # fmt: skip
    assert sorted(lines) == ["dis_a same", "dis_b same", "gen_a same", "gen_b same"]


@pytest.mark.parametrize("preset", ["unit-tiny", "munit-tiny"])
def test_tiny_presets_train_through_the_cli(preset, tmp_path, capsys):
    """Two steps of each tiny preset through `i2i train`, on 64 px images as it expects."""
    from i2i.cli import main
    from tests.conftest import write_images

    data = tmp_path / "data"
    write_images(data / "trainA", 3, size=64, seed=1)
    write_images(data / "trainB", 3, size=64, seed=2, tint=(1.0, 0.8, 0.6))
    run = tmp_path / "run"
    args = ["train", "--config", preset, "--data", str(data), "--out", str(run)]
    assert main([*args, "--max-steps", "2", "--no-progress", "--set", "data.num_workers=0"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert load_checkpoint(run / "latest.pt")["family"] == preset.removesuffix("-tiny")
    assert list((run / "samples").glob("*.png"))
