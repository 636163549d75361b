"""DDP is one process with the global batch: 2 ranks x batch 1 == 1 process x batch 2.

For every family in the registry, MUNIT with its translations reused and the two-step
model with its encoder trained on the photos (gloo, real processes under torchrun): the same seed, the same data, a few steps; the networks (generators, discriminators, encoders, batch-norm
statistics) must match within float tolerance. The runs are shared with the resume tests:
a 2-rank checkpoint resumed in one process at batch 2, and a one-process checkpoint resumed
on 2 ranks at batch 1, both reach the one-process run's weights.

Run as a script (``torchrun ... test_ddp_equivalence.py JOBS.json``) this file is the
worker: it joins the process group once and trains the listed jobs in order.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch

from i2i.checkpoint import load_checkpoint
from i2i.models import list_families
from i2i.training import config_from_dict, train
from i2i.training.distributed import DistInfo, rank_slice

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = list_families()
# Runs beyond one per family: a family with other settings (its CHANGES entry), by run name.
VARIANT_RUNS = {"munit-reuse": "munit", "twostep-colour": "twostep"}
RUNS = [*FAMILIES, *VARIANT_RUNS]
SIZE = 32
# (step where the 2-rank run stops and the resumes start, last step). 4 items and a global
# batch of 2: 2 steps an epoch, so the runs cross an epoch boundary.
STEPS = (2, 3)
# The two-step model: 8 labelled items, 4 steps of step 1, then 2 encoder steps.
STEPS_OF = {"twostep": (4, 6), "twostep-colour": (4, 6)}
# What each family's run sets beyond its tiny model (see tests/test_families.py), with
# per-sample randomness switched on where a family has it optional: CycleGAN with the
# WGAN-GP critic (penalty weights) and dropout, pix2pix with its batch norm and dropout.
# pool_size 0 everywhere: an image pool is per rank (docs/ddp-equivalence.md).
CHANGES: dict[str, dict[str, Any]] = {
    "cyclegan": {"gan_mode": "wgangp", "model": {"dropout": True}},
    "pix2pix": {"gan_mode": "vanilla", "model": {"norm": "batch", "dropout": True}},
    "unit": {"gan_mode": "lsgan", "lr_policy": "step", "lr_step_size": 2},
    "munit": {"gan_mode": "lsgan", "lr_policy": "step", "lr_step_size": 2},
    # MUNIT with one translation pass for both updates and no within-domain decodings
    # (munit-tiny's passes).
    "munit-reuse": {
        "gan_mode": "lsgan",
        "lr_policy": "step",
        "lr_step_size": 2,
        "loss": {"reuse_translations": True, "recon_x_w": 0.0},
    },
    "stargan": {"loss": {"n_critic": 1}},  # g trains every step
    "twostep": {"n_epochs": 1, "n_epochs_decay": 0, "loss": {"encoder_steps": 2}},
    # e trains in step 1 too (on the photos) and names their domains (twostep-tiny's).
    "twostep-colour": {
        "n_epochs": 1,
        "n_epochs_decay": 0,
        "model": {"translation": "colour"},
        "loss": {"encoder_steps": 2, "lambda_rec": 10.0},
    },
}
# Float tolerance: the ranks' gradients are averaged in another order than one batch's.
ATOL, RTOL = 2e-5, 1e-4
# The share of a network's values that may differ by more (Adam on rounding noise, see
# _assert_networks_close), and the bound on those, in learning rates per step. Measured:
# at most 0.7% (CycleGAN's generators) when equivalent; 25-95% with the ranks drawing the
# same noise or without synchronised batch norm.
NOISE_SHARE, ADAM_BOUND = 0.02, 4.0


def run_jobs(spec: Path) -> None:
    """The torchrun worker: join gloo once, train every job of ``spec`` in order."""
    logging.basicConfig(level=logging.WARNING)
    torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=180))
    try:
        for job in json.loads(spec.read_text()):
            train(config_from_dict(job["config"]), job["out"], resume=job["resume"])
    finally:
        torch.distributed.destroy_process_group()


def family_config(run: str, data: Path, batch_size: int, max_steps: int) -> dict[str, Any]:
    """The raw config of the equivalence run ``run`` (a family, or a VARIANT_RUNS name)."""
    from tests.conftest import TINY_MODEL_OPTIONS, tiny_config

    family = VARIANT_RUNS.get(run, run)
    changes = {k: v for k, v in CHANGES.get(run, {}).items()}
    model = {**TINY_MODEL_OPTIONS[family], **changes.pop("model", {})}
    cfg = tiny_config(
        data,
        family=family,
        model=model,
        pool_size=0,
        batch_size=batch_size,
        max_steps=max_steps,
        keep_last=5,
        **changes,
    )
    return cfg.to_dict()  # type: ignore[no-any-return]


def _torchrun(jobs: list[dict[str, Any]], spec: Path) -> subprocess.CompletedProcess:
    spec.write_text(json.dumps(jobs))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [*cmd, __file__, str(spec)], env=env, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Per family, the run folders: ``one`` (1 process, batch 2, to the last step),
    ``ddp`` (2 ranks, batch 1, to the split step, then resumed in 1 process at batch 2)
    and ``one_then_ddp`` (1 process to the split step, then 2 ranks at batch 1)."""
    from tests.conftest import write_images

    root = tmp_path_factory.mktemp("ddp")
    data = root / "data"
    write_images(data / "trainA", 4, seed=1, size=SIZE)
    write_images(data / "trainB", 4, seed=2, tint=(1.0, 0.8, 0.6), size=SIZE)
    folders: dict[str, dict[str, Path]] = {}
    jobs: list[dict[str, Any]] = []
    for family in RUNS:
        split, last = STEPS_OF.get(family, STEPS)
        out = {k: root / f"{family}-{k}" for k in ("one", "ddp", "one_then_ddp")}
        train(config_from_dict(family_config(family, data, 2, split)), out["one"])
        shutil.copytree(out["one"], out["one_then_ddp"])
        train(config_from_dict(family_config(family, data, 2, last)), out["one"], resume=True)
        jobs.append(
            {
                "config": family_config(family, data, 1, split),
                "out": str(out["ddp"]),
                "resume": False,
            }
        )
        jobs.append(
            {
                "config": family_config(family, data, 1, last),
                "out": str(out["one_then_ddp"]),
                "resume": True,
            }
        )
        folders[family] = out
    done = _torchrun(jobs, root / "jobs.json")
    assert done.returncode == 0, done.stderr[-6000:]
    for family in RUNS:
        _, last = STEPS_OF.get(family, STEPS)
        shutil.copytree(folders[family]["ddp"], root / f"{family}-ddp-at-split")
        folders[family]["ddp_at_split"] = root / f"{family}-ddp-at-split"
        cfg = config_from_dict(family_config(family, data, 2, last))
        train(cfg, folders[family]["ddp"], resume=True)  # 2 ranks -> 1 process
    return folders


def _checkpoint(run: Path, step: int) -> dict[str, Any]:
    ckpt = load_checkpoint(run / f"step_{step:08d}.pt")
    assert ckpt["step"] == step
    return ckpt  # type: ignore[no-any-return]


def _assert_networks_close(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    """Every network's tensors match within float tolerance, but for a few elements (at
    most NOISE_SHARE of a network) that Adam moves by rounding noise: a parameter whose
    gradient is zero in exact arithmetic (a bias before instance norm, the critic's output
    bias under WGAN, weights of StarGAN's constant domain channels) takes steps of
    sign(noise) * lr; those stay within Adam's bound of a few lr per step."""
    assert set(a["networks"]) == set(b["networks"])
    bound = ADAM_BOUND * a["step"] * float(a["config"]["lr"])
    for name, state in a["networks"].items():
        assert set(state) == set(b["networks"][name]), f"{what}: {name}'s keys differ"
        outside, total = 0, 0
        for key, tensor in state.items():
            other = b["networks"][name][key]
            if not tensor.is_floating_point():  # num_batches_tracked
                assert torch.equal(tensor, other), f"{what}: {name}.{key} differs"
                continue
            diff = (other - tensor).abs()
            assert float(diff.max()) <= bound, f"{what}: {name}.{key} differs by {diff.max()}"
            outside += int((diff > ATOL + RTOL * tensor.abs()).sum())
            total += tensor.numel()
        assert outside <= NOISE_SHARE * total, (
            f"{what}: {outside} of {total} values of {name} differ beyond float tolerance"
        )


def _assert_trained(before: dict[str, Any], after: dict[str, Any], family: str) -> None:
    """The resumed steps changed the networks: the comparison is not of untouched weights."""
    moved = [
        f"{name}.{k}"
        for name, state in after["networks"].items()
        for k, t in state.items()
        if t.is_floating_point() and not torch.equal(t, before["networks"][name][k])
    ]
    assert moved, f"{family}: the resumed steps changed no network"


@pytest.mark.slow
@pytest.mark.parametrize("family", RUNS)
def test_two_ranks_at_batch_1_train_as_one_process_at_batch_2(
    family: str, runs: dict[str, dict[str, Path]]
) -> None:
    split, _ = STEPS_OF.get(family, STEPS)
    one, ddp = (
        _checkpoint(runs[family]["one"], split),
        _checkpoint(runs[family]["ddp_at_split"], split),
    )
    assert ddp["training_state"]["world_size"] == 2 and ddp["config"]["batch_size"] == 1
    assert one["training_state"]["world_size"] == 1 and one["config"]["batch_size"] == 2
    _assert_networks_close(one, ddp, f"{family}, step {split}")
    # Every rank's random streams stayed equal, so any of them resumes the run.
    first, second = ddp["training_state"]["rng"]
    assert torch.equal(first["torch"], second["torch"])


@pytest.mark.slow
@pytest.mark.parametrize("family", RUNS)
def test_a_two_rank_checkpoint_resumes_in_one_process(
    family: str, runs: dict[str, dict[str, Path]]
) -> None:
    _, last = STEPS_OF.get(family, STEPS)
    one, resumed = _checkpoint(runs[family]["one"], last), _checkpoint(runs[family]["ddp"], last)
    assert resumed["training_state"]["world_size"] == 1
    _assert_networks_close(one, resumed, f"{family}, 2 ranks then 1 process, step {last}")
    _assert_trained(
        _checkpoint(runs[family]["ddp"], STEPS_OF.get(family, STEPS)[0]), resumed, family
    )


@pytest.mark.slow
@pytest.mark.parametrize("family", RUNS)
def test_a_one_process_checkpoint_resumes_on_two_ranks(
    family: str, runs: dict[str, dict[str, Path]]
) -> None:
    _, last = STEPS_OF.get(family, STEPS)
    one = _checkpoint(runs[family]["one"], last)
    resumed = _checkpoint(runs[family]["one_then_ddp"], last)
    assert resumed["training_state"]["world_size"] == 2
    _assert_networks_close(one, resumed, f"{family}, 1 process then 2 ranks, step {last}")


@pytest.mark.slow
def test_another_global_batch_resumes_from_the_same_item_with_a_warning(
    runs: dict[str, dict[str, Path]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """2 ranks x batch 1 resumed in 1 process at batch 1: not exact (the global batch
    halves), but it goes on from the item the run reached, and says so."""
    run = tmp_path / "run"
    shutil.copytree(runs["cyclegan"]["ddp_at_split"], run)
    ckpt = load_checkpoint(run / "latest.pt")
    assert ckpt["step"] == 2 and ckpt["training_state"]["batch_index"] == 2
    cfg = config_from_dict({**ckpt["config"], "max_steps": 3})
    with caplog.at_level(logging.WARNING, logger="i2i.training.loop"):
        summary = train(cfg, run, resume=True)
    assert summary.step == 3
    assert "global batch was 2 (2 process(es)) with a global batch of 1" in caplog.text
    # Item 4 of 4 read before: the epoch of 4 one-item batches is done at batch index 4,
    # so step 3 starts epoch 2.
    assert load_checkpoint(run / "latest.pt")["epoch"] == 2


@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_slices_of_a_global_draw_are_the_batch_in_the_loops_order(world: int) -> None:
    """rank r's item j is global item j * world + r (the loop's sharding of the data)."""
    draw = torch.arange(4 * world)
    slices = [rank_slice(draw, DistInfo(rank=r, world_size=world)) for r in range(world)]
    assert all(len(s) == 4 for s in slices)
    for r, s in enumerate(slices):
        assert s.tolist() == [j * world + r for j in range(4)]
    if world > 1:
        with pytest.raises(ValueError, match="does not split"):
            rank_slice(torch.arange(4 * world + 1), DistInfo(rank=0, world_size=world))


if __name__ == "__main__":
    run_jobs(Path(sys.argv[1]))
