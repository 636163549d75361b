"""Resume is exact: stop at step k, resume, and get the uninterrupted run's losses and weights."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from i2i.checkpoint import load_checkpoint
from i2i.training import ResumeError, train
from i2i.training.config import TrainConfig
from i2i.training.monitor import read_loss_log
from tests.conftest import tiny_config


def _losses(run) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "time"} for r in read_loss_log(run / "losses.jsonl")
    ]


def _assert_same_state(a: dict, b: dict) -> None:
    for name in a["networks"]:
        for key, tensor in a["networks"][name].items():
            assert torch.equal(tensor, b["networks"][name][key]), f"{name}.{key} differs"
    for name in a["optimizers"]:
        sa, sb = a["optimizers"][name]["state"], b["optimizers"][name]["state"]
        for idx in sa:
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(sa[idx][key], sb[idx][key]), f"optimizer {name}[{idx}].{key}"
    assert a["schedulers"] == b["schedulers"]


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_run_equals_uninterrupted_run(tiny_dataset, tmp_path, workers):
    # 8 images, batch 2 -> 4 steps an epoch; 10 steps cross two epoch boundaries and the
    # start of the learning-rate decay (n_epochs 1, n_epochs_decay 2), with dropout on.
    changes = {"data": {"num_workers": workers}, "pool_size": 3, "gan_mode": "wgangp"}
    changes["model"] = {
        "netG": "resnet_6blocks",
        "netD": "n_layers",
        "n_layers_D": 2,
        "ngf": 4,
        "ndf": 4,
        "dropout": True,
    }
    full_cfg = tiny_config(tiny_dataset, max_steps=10, **changes)
    train(full_cfg, tmp_path / "full")

    part_cfg = tiny_config(tiny_dataset, max_steps=6, **changes)
    train(part_cfg, tmp_path / "part")
    assert load_checkpoint(tmp_path / "part" / "latest.pt")["step"] == 6
    train(tiny_config(tiny_dataset, max_steps=10, **changes), tmp_path / "part", resume=True)

    assert _losses(tmp_path / "part") == _losses(tmp_path / "full")
    assert [r["step"] for r in _losses(tmp_path / "full")] == list(range(1, 11))
    lrs = [r["lr_g"] for r in _losses(tmp_path / "full")]
    # epoch 1 at the base rate, then 1 - k/3 for the k-th decay epoch (the reference's rule)
    assert lrs == pytest.approx([2e-4] * 4 + [2e-4 * 2 / 3] * 4 + [2e-4 / 3] * 2)
    _assert_same_state(
        load_checkpoint(tmp_path / "full" / "latest.pt"),
        load_checkpoint(tmp_path / "part" / "latest.pt"),
    )


def test_resume_drops_log_lines_after_the_checkpoint(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_dataset, max_steps=3), run)
    with (run / "losses.jsonl").open("a") as f:  # as if it crashed after logging step 4
        f.write(json.dumps({"step": 4, "bogus": 1.0}) + "\n")
    train(tiny_config(tiny_dataset, max_steps=5), run, resume=True)
    assert [r["step"] for r in read_loss_log(run / "losses.jsonl")] == [1, 2, 3, 4, 5]
    assert all("bogus" not in r for r in read_loss_log(run / "losses.jsonl"))


def test_resume_refuses_a_changed_config(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_dataset, max_steps=1), run)
    with pytest.raises(ResumeError, match=r"lr: checkpoint 0.0002, now 0.001"):
        train(tiny_config(tiny_dataset, max_steps=2, lr=1e-3), run, resume=True)
    with pytest.raises(ResumeError, match="model.ngf"):
        bigger = tiny_config(tiny_dataset, max_steps=2)
        bigger.model["ngf"] = 8
        train(bigger, run, resume=True)
    other = tiny_config(tiny_dataset, max_steps=2)
    other.family = "unit"
    with pytest.raises(ResumeError, match="'cyclegan' run"):
        train(other, run, resume=True)
    with pytest.raises(ResumeError, match="already holds a run"):
        train(tiny_config(tiny_dataset, max_steps=2), run)
    with pytest.raises(ResumeError, match="no checkpoint"):
        train(tiny_config(tiny_dataset, max_steps=2), tmp_path / "empty", resume=True)
    assert isinstance(tiny_config(tiny_dataset), TrainConfig)


def test_resume_checks_the_checkpoint_against_the_runs_config_json(tiny_dataset, tmp_path, caplog):
    run = tmp_path / "run"
    train(tiny_config(tiny_dataset, max_steps=1), run)
    saved = json.loads((run / "config.json").read_text())
    saved["seed"] = 7  # as if latest.pt had come from a run seeded differently
    (run / "config.json").write_text(json.dumps(saved))
    with pytest.raises(
        ResumeError, match=r"config differs from .*config.json \(seed: config.json 7"
    ):
        train(tiny_config(tiny_dataset, max_steps=2), run, resume=True)
    assert json.loads((run / "config.json").read_text())["seed"] == 7  # not rewritten

    # Keys a resume may change (max_steps, data.root, ...) do not count.
    saved.update(seed=0, max_steps=99, log_every=5)
    (run / "config.json").write_text(json.dumps(saved))
    assert train(tiny_config(tiny_dataset, max_steps=2), run, resume=True).step == 2
    assert json.loads((run / "config.json").read_text())["max_steps"] == 2

    # Without config.json the check cannot be made: said, not skipped silently.
    (run / "config.json").unlink()
    with caplog.at_level(logging.WARNING, logger="i2i.training.loop"):
        assert train(tiny_config(tiny_dataset, max_steps=3), run, resume=True).step == 3
    assert "config.json is missing: cannot check that" in caplog.text
    assert (run / "config.json").is_file()


def test_a_resume_that_died_before_saving_with_another_batch_size_resumes_again(
    tiny_dataset, tmp_path
):
    # A resume on 2 ranks at batch 1 (the global batch kept) rewrites config.json's
    # batch_size at once; killed before its first checkpoint, the run must still resume.
    run = tmp_path / "run"
    train(tiny_config(tiny_dataset, max_steps=1), run)
    saved = json.loads((run / "config.json").read_text())
    saved["batch_size"] = 1
    (run / "config.json").write_text(json.dumps(saved))
    assert train(tiny_config(tiny_dataset, max_steps=2), run, resume=True).step == 2
    # A batch size that changes the global batch on one process is still refused.
    with pytest.raises(ResumeError, match="batch_size: checkpoint 2, now 1"):
        train(tiny_config(tiny_dataset, max_steps=3, batch_size=1), run, resume=True)


def test_step_lr_policy_decays_every_lr_step_size_steps_and_resumes_exactly(tiny_dataset, tmp_path):
    changes = {"lr_policy": "step", "lr_step_size": 3, "lr_gamma": 0.5, "weight_decay": 1e-4}
    train(tiny_config(tiny_dataset, max_steps=8, **changes), tmp_path / "full")
    lrs = [r["lr_g"] for r in _losses(tmp_path / "full")]
    # The rate each step used: 3 steps at lr, 3 at lr/2, then lr/4 (epochs do not matter).
    assert lrs == pytest.approx([2e-4] * 3 + [1e-4] * 3 + [5e-5] * 2)

    train(tiny_config(tiny_dataset, max_steps=4, **changes), tmp_path / "part")
    train(tiny_config(tiny_dataset, max_steps=8, **changes), tmp_path / "part", resume=True)
    assert _losses(tmp_path / "part") == _losses(tmp_path / "full")
    _assert_same_state(
        load_checkpoint(tmp_path / "full" / "latest.pt"),
        load_checkpoint(tmp_path / "part" / "latest.pt"),
    )


def test_a_family_without_a_trainer_and_a_loss_section_for_cyclegan_are_config_errors(
    tiny_dataset, tmp_path
):
    from i2i.training import ConfigError
    from i2i.training.loop import trainer_class

    with pytest.raises(ConfigError, match="has no trainer; trainable: cyclegan"):
        trainer_class("no-such-family")
    cfg = tiny_config(tiny_dataset, max_steps=1, loss={"lambda_l1": 1.0})
    with pytest.raises(ConfigError, match=r"top-level keys .* not loss\.lambda_l1"):
        train(cfg, tmp_path / "run")
