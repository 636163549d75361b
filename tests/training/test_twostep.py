"""Two-step training: step 1 (AC-GAN) then step 2 (the encoder) in one run, exact resume in
either step and across the boundary, starting at step 2, the encoder's latent MSE, export."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from i2i.checkpoint import load_checkpoint, load_trained_networks, save_checkpoint
from i2i.export import export_checkpoint
from i2i.models import get_family, options_from_dict
from i2i.training import ConfigError, train
from i2i.training.config import TrainConfig
from tests.conftest import TINY_MODEL_OPTIONS, tiny_config, write_images
from tests.training.test_resume import _assert_same_state, _losses

DOMAINS = ["day", "dusk", "night"]
SIZE = 32
STEP1 = 3  # 12 images, batch 4, one epoch


def write_labelled(root: Path) -> Path:
    """train/<domain>/ with 4 images in each of three domains, 32 px."""
    tints = {"day": (1, 1, 1), "dusk": (1.0, 0.7, 0.5), "night": (0.3, 0.3, 0.6)}
    for i, domain in enumerate(DOMAINS):
        write_images(root / "train" / domain, 4, size=SIZE, seed=10 + i, tint=tints[domain])
    return root


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_labelled(tmp_path_factory.mktemp("labelled"))


def twostep_config(root: Path, **changes: Any) -> TrainConfig:
    """One epoch of step 1 (3 steps), then ``encoder_steps`` (default 4) of step 2."""
    model = {k: v for k, v in TINY_MODEL_OPTIONS["twostep"].items() if k != "domains"}
    model.update(changes.pop("model", {}))
    loss = {"encoder_steps": 4, **changes.pop("loss", {})}
    settings: dict[str, Any] = {
        "family": "twostep",
        "model": model,
        "loss": loss,
        "gan_mode": "vanilla",
        "pool_size": 0,
        "batch_size": 4,
        "n_epochs": 1,
        "n_epochs_decay": 0,
        "keep_last": 100,
        **changes,
    }
    return tiny_config(root, **settings)


@pytest.fixture(scope="module")
def full_run(labelled: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 steps of step 1 and 4 of step 2, a checkpoint after every step."""
    run = tmp_path_factory.mktemp("full")
    summary = train(twostep_config(labelled, save_every=1), run)
    assert summary.step == STEP1 + 4
    return run


def _step(run: Path, n: int) -> dict[str, Any]:
    return load_checkpoint(run / f"step_{n:08d}.pt")


def _changed(a: dict[str, Any], b: dict[str, Any], name: str) -> list[str]:
    return [
        key
        for key, tensor in a["networks"][name].items()
        if not torch.equal(tensor, b["networks"][name][key])
    ]


def _assert_same_trainer_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    sa, sb = a["training_state"]["trainer"], b["training_state"]["trainer"]
    assert sa["phase"] == sb["phase"]
    assert torch.equal(sa["rng"], sb["rng"])
    ea, eb = sa["encoder_optimizer"]["state"], sb["encoder_optimizer"]["state"]
    assert ea.keys() == eb.keys()
    for idx in ea:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(ea[idx][key], eb[idx][key]), f"encoder optimizer [{idx}].{key}"


def test_the_run_does_step1_then_step2_by_itself(full_run: Path) -> None:
    records = _losses(full_run)
    assert [r["step"] for r in records] == list(range(1, STEP1 + 5))
    for r in records[:STEP1]:
        assert {"d_real", "d_fake", "d_cls_real", "d_cls_fake", "g_gan", "g_cls"} <= set(r)
        assert "e_mse" not in r
    for r in records[STEP1:]:
        assert "e_mse" in r and "g_gan" not in r
        # Step 2 reads no data: 4 more steps than an epoch holds, and no new epoch starts.
        assert r["epoch"] == records[STEP1]["epoch"]
    phases = [_step(full_run, n)["training_state"]["trainer"]["phase"] for n in range(1, 8)]
    assert phases == [1, 1, 1, 2, 2, 2, 2]
    assert load_checkpoint(full_run / "latest.pt")["domains"] == DOMAINS


def test_a_step1_step_changes_g_and_d_and_not_e(labelled: Path, full_run: Path) -> None:
    cfg = twostep_config(labelled)
    torch.manual_seed(cfg.seed)  # the loop builds the networks right after this
    initial = get_family("twostep").build(
        options_from_dict("twostep", {**cfg.model, "domains": DOMAINS})
    )
    before = {"networks": {n: net.state_dict() for n, net in initial.items()}}
    after = _step(full_run, 1)
    assert _changed(before, after, "g") and _changed(before, after, "d")
    assert not _changed(before, after, "e")


def test_a_step2_step_changes_only_e(full_run: Path) -> None:
    for n in (STEP1, STEP1 + 1):  # the first step 2 step, and one in its middle
        before, after = _step(full_run, n), _step(full_run, n + 1)
        assert _changed(before, after, "e")
        assert not _changed(before, after, "g"), "g (weights or batch-norm statistics) moved"
        assert not _changed(before, after, "d")
        for name in ("g", "d"):  # their optimisers rest too
            sa, sb = before["optimizers"][name]["state"], after["optimizers"][name]["state"]
            for idx in sa:
                for key in ("exp_avg", "exp_avg_sq", "step"):
                    assert torch.equal(sa[idx][key], sb[idx][key]), f"{name}[{idx}].{key}"


@pytest.mark.parametrize("stop_at", [2, STEP1, STEP1 + 2], ids=["step1", "boundary", "step2"])
def test_resume_is_bitwise_exact_in_either_step(
    labelled: Path, full_run: Path, tmp_path: Path, stop_at: int
) -> None:
    part = tmp_path / "part"
    train(twostep_config(labelled, max_steps=stop_at), part)
    assert load_checkpoint(part / "latest.pt")["step"] == stop_at
    train(twostep_config(labelled), part, resume=True)
    assert _losses(part) == _losses(full_run)
    full, resumed = load_checkpoint(full_run / "latest.pt"), load_checkpoint(part / "latest.pt")
    _assert_same_state(full, resumed)
    _assert_same_trainer_state(full, resumed)


def test_a_run_can_start_at_step2_from_a_step1_checkpoint(
    labelled: Path, full_run: Path, tmp_path: Path
) -> None:
    step1 = tmp_path / "step1.pt"
    shutil.copy(full_run / f"step_{STEP1:08d}.pt", step1)
    generator = load_checkpoint(step1)["networks"]["g"]

    run = tmp_path / "encoder"
    cfg = twostep_config(labelled, loss={"generator_checkpoint": str(step1), "encoder_steps": 3})
    assert train(cfg, run).step == 3
    records = _losses(run)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(set(r) - {"step", "epoch", "lr_g", "lr_d"} == {"e_mse"} for r in records)
    final = load_checkpoint(run / "latest.pt")
    for key, tensor in generator.items():
        assert torch.equal(final["networks"]["g"][key], tensor), key
    assert final["training_state"]["trainer"]["phase"] == 2
    # The same 3 encoder steps with a stop and a resume in between.
    part = tmp_path / "part"
    train(twostep_config(labelled, max_steps=1, loss=cfg.loss), part)
    train(cfg, part, resume=True)
    assert _losses(part) == records
    _assert_same_trainer_state(final, load_checkpoint(part / "latest.pt"))
    for key, tensor in final["networks"]["e"].items():
        assert torch.equal(load_checkpoint(part / "latest.pt")["networks"]["e"][key], tensor)


def test_a_generator_checkpoint_that_does_not_fit_is_a_config_error(
    labelled: Path, full_run: Path, tmp_path: Path
) -> None:
    step1 = str(full_run / f"step_{STEP1:08d}.pt")
    wider = twostep_config(labelled, model={"ngf": 8}, loss={"generator_checkpoint": step1})
    with pytest.raises(ConfigError, match="network 'g' does not match"):
        train(wider, tmp_path / "a")
    other = twostep_config(
        labelled, model={"domains": ["day", "night"]}, loss={"generator_checkpoint": step1}
    )
    with pytest.raises(ConfigError, match=r"trained on domains \['day', 'dusk', 'night'\]"):
        train(other, tmp_path / "b")
    missing = twostep_config(labelled, loss={"generator_checkpoint": str(tmp_path / "no.pt")})
    with pytest.raises(ConfigError, match="no such checkpoint"):
        train(missing, tmp_path / "c")


def test_wgangp_is_refused(labelled: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="vanilla or lsgan"):
        train(twostep_config(labelled, gan_mode="wgangp"), tmp_path / "run")


def test_the_encoders_latent_mse_falls_during_step2(labelled: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = twostep_config(labelled, lr=1e-3, loss={"encoder_steps": 150})
    train(twostep_config(labelled, lr=1e-3, max_steps=STEP1, loss=cfg.loss), run)
    shutil.copy(run / "latest.pt", tmp_path / "step1.pt")  # e as initialised
    train(cfg, run, resume=True)
    family = get_family("twostep")
    scores = []
    for path in (tmp_path / "step1.pt", run / "latest.pt"):
        payload, networks = load_trained_networks(path)
        options = options_from_dict("twostep", payload["config"]["model"])
        scores.append(family.metrics(networks, options, 123)["latent_mse"])
    before, after = scores
    # Measured: about 0.33 before (the variance of U(-1, 1)) and 0.03 after.
    assert after < 0.5 * before, scores


def test_translation_and_onnx_export_of_every_target(full_run: Path, tmp_path: Path) -> None:
    folder, manifest = export_checkpoint(
        full_run / "latest.pt", tmp_path / "repo", "ts", formats=("onnx", "onnx-fp16")
    )
    assert manifest["domains"] == DOMAINS
    assert sorted(manifest["directions"]) == [f"to_{d}" for d in DOMAINS]
    precisions = {(a.get("direction"), a["precision"]) for a in manifest["artifacts"]}
    assert {(f"to_{d}", p) for d in DOMAINS for p in ("fp32", "fp16")} <= precisions
    # Besides the fused translators: the conditional graph and the encoder and generator.
    graphs = {(a.get("graph"), a["precision"]) for a in manifest["artifacts"] if "graph" in a}
    assert graphs == {
        (g, p) for g in ("conditional", "encoder", "generator") for p in ("fp32", "fp16")
    }
    payload, networks = load_trained_networks(full_run / "latest.pt")
    options = options_from_dict("twostep", payload["config"]["model"])
    translators = get_family("twostep").translators(networks, options)
    images = np.random.default_rng(3).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    outputs = {}
    for index, domain in enumerate(DOMAINS):
        session = ort.InferenceSession(
            str(folder / f"to_{domain}.onnx"), providers=["CPUExecutionProvider"]
        )
        got = session.run(None, {session.get_inputs()[0].name: images})[0]
        with torch.no_grad():
            want = translators[f"to_{domain}"](torch.from_numpy(images)).numpy()
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
            by_hand = networks["g"](networks["e"](x), torch.full((2,), index))
        assert got.dtype == np.uint8 and got.shape == (2, SIZE, SIZE, 3)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
        pixels = ((by_hand + 1) * 127.5).round().clamp(0, 255).permute(0, 2, 3, 1).numpy()
        assert np.abs(want.astype(int) - pixels.astype(int)).max() <= 1
        outputs[domain] = got
    assert not np.array_equal(outputs["day"], outputs["night"])
    with pytest.raises(ValueError, match="exactly 32x32"):
        get_family("twostep").shape_rule(options).check(64, 64)


def test_step2_from_a_checkpoint_with_an_average_inverts_the_averaged_g(
    labelled: Path, full_run: Path, tmp_path: Path
) -> None:
    # The step-1 run's eval and export use g's average: that is the g step 2 must invert.
    payload = load_checkpoint(full_run / f"step_{STEP1:08d}.pt")
    averaged = {
        k: v * 0.5 if v.is_floating_point() else v for k, v in payload["networks"]["g"].items()
    }
    payload["ema"] = {"g": averaged}
    step1 = save_checkpoint(payload, tmp_path / "step1.pt")
    cfg = twostep_config(labelled, loss={"generator_checkpoint": str(step1), "encoder_steps": 1})
    train(cfg, tmp_path / "encoder")
    final = load_checkpoint(tmp_path / "encoder" / "latest.pt")
    for key, tensor in averaged.items():
        assert torch.equal(final["networks"]["g"][key], tensor), key
    # d has no average: it stays the step-1 run's own.
    for key, tensor in payload["networks"]["d"].items():
        assert torch.equal(final["networks"]["d"][key], tensor), key
