"""The two-step model with ``loss.lambda_rec`` (e trains on the photos in step 1) and
``model.translation: colour`` (the photo gets the colour change between g's two renderings
of its code): what a step trains, exact resume, the reconstruction it learns, export."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from i2i.checkpoint import load_checkpoint, load_trained_networks
from i2i.export import export_checkpoint
from i2i.models import get_family, options_from_dict
from i2i.models.twostep import colour_change
from i2i.training import ConfigError, config_from_dict, train
from i2i.training.config import TrainConfig
from i2i.training.evaluate import evaluate
from tests.conftest import write_images
from tests.training.test_resume import _assert_same_state, _losses
from tests.training.test_twostep import (
    DOMAINS,
    SIZE,
    STEP1,
    _assert_same_trainer_state,
    _changed,
    _step,
    twostep_config,
    write_labelled,
)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_labelled(tmp_path_factory.mktemp("labelled"))


def joint_config(root: Path, **changes: Any) -> TrainConfig:
    """twostep_config with e trained on the photos (lambda_rec 10) and the colour form."""
    loss = {"lambda_rec": 10.0, **changes.pop("loss", {})}
    model = {"translation": "colour", **changes.pop("model", {})}
    return twostep_config(root, model=model, loss=loss, **changes)


@pytest.fixture(scope="module")
def joint_run(labelled: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 joint steps of step 1 and 4 of step 2, a checkpoint after every step."""
    run = tmp_path_factory.mktemp("joint")
    assert train(joint_config(labelled, save_every=1), run).step == STEP1 + 4
    return run


def test_a_joint_step_trains_g_d_and_all_of_e(labelled: Path, joint_run: Path) -> None:
    records = _losses(joint_run)
    step1 = {"d_real", "d_fake", "d_cls_real", "d_cls_fake", "g_gan", "g_cls", "g_rec", "e_cls"}
    assert all(step1 <= set(r) for r in records[:STEP1])
    # Step 2 still trains e on g's samples, and its domain head on their domains.
    assert all({"e_mse", "e_cls"} <= set(r) and "g_rec" not in r for r in records[STEP1:])
    first = _step(joint_run, 1)
    cfg = joint_config(labelled)
    torch.manual_seed(cfg.seed)  # the loop builds the networks right after this
    initial = get_family("twostep").build(
        options_from_dict("twostep", {**cfg.model, "domains": DOMAINS})
    )
    before = {"networks": {n: net.state_dict() for n, net in initial.items()}}
    assert _changed(before, first, "g") and _changed(before, first, "d")
    weights = [k for k in first["networks"]["e"] if k.endswith("weight")]
    assert set(weights) <= set(_changed(before, first, "e")), "a part of e did not train"
    assert any(k.startswith("classes.") for k in weights)  # the domain head is there
    # e's Adam state moved in step 1 (the trainer's own optimiser, beside g's).
    state = first["training_state"]["trainer"]["encoder_optimizer"]["state"]
    assert state and all(int(s["step"]) == 1 for s in state.values())


def test_joint_resume_is_bitwise_exact(labelled: Path, joint_run: Path, tmp_path: Path) -> None:
    for stop_at in (2, STEP1 + 1):
        part = tmp_path / f"part{stop_at}"
        train(joint_config(labelled, max_steps=stop_at), part)
        train(joint_config(labelled), part, resume=True)
        assert _losses(part) == _losses(joint_run)
        full, resumed = (
            load_checkpoint(joint_run / "latest.pt"),
            load_checkpoint(part / "latest.pt"),
        )
        _assert_same_state(full, resumed)
        _assert_same_trainer_state(full, resumed)


def _trainer(root: Path, **changes: Any) -> Any:
    from i2i.training.twostep import TwoStepTrainer

    cfg = joint_config(root, **changes)
    cfg = config_from_dict({**cfg.to_dict(), "model": {**cfg.model, "domains": DOMAINS}})
    torch.manual_seed(cfg.seed)
    networks = get_family("twostep").build(options_from_dict("twostep", cfg.model))
    return TwoStepTrainer(cfg, networks, torch.device("cpu"))


def test_a_joint_step_shows_reconstructions_and_colour_translations(labelled: Path) -> None:
    # The step's visuals: the photos' reconstructions g(e(x), s) and translations, which
    # are the colour change of the photo between g(e(x), s) and g(e(x), t).
    trainer = _trainer(labelled)
    rng = torch.Generator().manual_seed(1)
    real = torch.rand(4, 3, SIZE, SIZE, generator=rng) * 2 - 1
    labels = torch.tensor([0, 1, 2, 0])
    trainer.step({"image": real, "domain": labels})
    visuals = trainer.last_visuals
    assert list(trainer.visual_rows()) == [("real", "reconstruction", "translation", "fake")]
    assert all(v.shape == real.shape for v in visuals.values())
    # A translation is the photo's colour change between two renderings: x's structure.
    # Its value per channel is an affine map of x's, so it correlates fully with x.
    trans, x = visuals["translation"].flatten(2), real.flatten(2)
    unclamped = trans.abs() < 1
    for i in range(4):
        for c in range(3):
            keep = unclamped[i, c]
            corr = np.corrcoef(trans[i, c, keep].numpy(), x[i, c, keep].numpy())[0, 1]
            assert abs(corr) > 0.999, (i, c, corr)
    assert not torch.allclose(visuals["translation"], real)


def test_the_reconstruction_of_the_photos_improves(labelled: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(joint_config(labelled, lr=1e-3, n_epochs=30, loss={"encoder_steps": 0}), run)
    rec = [r["g_rec"] for r in _losses(run)]
    assert len(rec) == 90
    # Measured: 0.49 over the first ten steps, 0.31 over the last ten (4-filter networks
    # and a code of 8 values on noise images).
    assert np.mean(rec[-10:]) < 0.75 * np.mean(rec[:10]), rec


def test_a_photo_is_translated_to_another_domain_than_its_own(labelled: Path) -> None:
    trainer = _trainer(labelled)
    labels = torch.arange(300) % 3
    targets = trainer._other_domains(labels)
    assert not (targets == labels).any()
    # Uniform over the two others: each (source, target) pair about 50 times.
    pairs = torch.bincount(labels * 3 + targets, minlength=9).reshape(3, 3)
    assert (pairs.diagonal() == 0).all() and pairs.sum() - pairs.trace() == 300
    assert pairs[~torch.eye(3, dtype=torch.bool)].min() > 30, pairs


def test_e_learns_at_gs_scheduled_rate_in_step1_and_at_lr_in_step2(
    labelled: Path, tmp_path: Path
) -> None:
    # A linear decay over the second epoch: g's rate falls, e's must follow it (they
    # minimise one loss); step 2 then runs e at the constant lr.
    run = tmp_path / "run"
    cfg = joint_config(
        labelled, n_epochs=1, n_epochs_decay=1, save_every=1, loss={"encoder_steps": 1}
    )
    train(cfg, run)
    records = _losses(run)
    for step in (STEP1 + 1, 2 * STEP1):  # the decay epoch: g's rate below lr
        state = _step(run, step)["training_state"]["trainer"]["encoder_optimizer"]
        lr_g = records[step - 1]["lr_g"]
        assert lr_g < cfg.lr
        assert state["param_groups"][0]["lr"] == pytest.approx(lr_g)
    last = load_checkpoint(run / "latest.pt")["training_state"]["trainer"]
    assert last["phase"] == 2
    assert last["encoder_optimizer"]["param_groups"][0]["lr"] == cfg.lr


def test_a_joint_bf16_step_with_an_average_trains_and_averages_e(
    labelled: Path, tmp_path: Path
) -> None:
    # bf16 autocast on the CPU, e's average folded in step 1, and e's domain head trained
    # even with lambda_cls 0 (it has a weight of its own).
    run = tmp_path / "run"
    cfg = joint_config(
        labelled,
        amp="bf16",
        ema_decay=0.5,
        max_steps=2,
        save_every=1,
        loss={"lambda_cls": 0.0},
    )
    train(cfg, run)
    records = _losses(run)
    assert all(np.isfinite(v) for r in records for k, v in r.items() if k not in ("step",))
    first, second = _step(run, 1), _step(run, 2)
    raw, average = second["networks"]["e"], second["ema"]["e"]
    moved = [k for k in raw if raw[k].is_floating_point() and not torch.equal(raw[k], average[k])]
    assert moved, "e's average did not move away from e in step 1"
    assert not torch.equal(first["ema"]["e"]["head.weight"], average["head.weight"])
    assert set(_changed(first, second, "e")) >= {"classes.weight", "head.weight"}


def test_lambda_rec_needs_step1_and_a_weight_of_zero_or_more(
    labelled: Path, joint_run: Path, tmp_path: Path
) -> None:
    step1 = str(joint_run / f"step_{STEP1:08d}.pt")
    with pytest.raises(ConfigError, match="lambda_rec trains e in step 1"):
        train(joint_config(labelled, loss={"generator_checkpoint": step1}), tmp_path / "a")
    with pytest.raises(ConfigError, match="lambda_rec must be >= 0"):
        train(joint_config(labelled, loss={"lambda_rec": -1.0}), tmp_path / "b")


def test_the_direct_form_with_lambda_rec_trains_e_without_a_head(
    labelled: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    train(twostep_config(labelled, max_steps=2, loss={"lambda_rec": 10.0}), run)
    records = _losses(run)
    assert all("g_rec" in r and "e_cls" not in r for r in records)
    networks = load_checkpoint(run / "latest.pt")["networks"]
    assert not any(k.startswith("classes.") for k in networks["e"])


def test_colour_translators_export_to_onnx_and_match(joint_run: Path, tmp_path: Path) -> None:
    folder, manifest = export_checkpoint(
        joint_run / "latest.pt", tmp_path / "repo", "ts", formats=("onnx", "onnx-fp16")
    )
    assert sorted(manifest["directions"]) == [f"to_{d}" for d in DOMAINS]
    payload, networks = load_trained_networks(joint_run / "latest.pt")
    options = options_from_dict("twostep", payload["config"]["model"])
    assert options.translation == "colour"
    translators = get_family("twostep").translators(networks, options)
    images = np.random.default_rng(3).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    e, g = networks["e"], networks["g"]
    with torch.no_grad():
        z, logits = e(x, True)
        source = logits.argmax(1)
    sent_home = 0
    for index, domain in enumerate(DOMAINS):
        session = ort.InferenceSession(
            str(folder / f"to_{domain}.onnx"), providers=["CPUExecutionProvider"]
        )
        got = session.run(None, {session.get_inputs()[0].name: images})[0]
        target = torch.full((3,), index)
        with torch.no_grad():
            want = translators[f"to_{domain}"](torch.from_numpy(images)).numpy()
            by_hand = colour_change(x, g(z, source), g(z, target))
        pixels = ((by_hand + 1) * 127.5).round().clamp(0, 255).permute(0, 2, 3, 1).numpy()
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
        assert np.abs(want.astype(int) - pixels.astype(int)).max() <= 1
        # An image whose domain e names as this target comes back as it was.
        same = (source == index).numpy()
        assert np.abs(got[same].astype(int) - images[same].astype(int)).max(initial=0) <= 1
        sent_home += int(same.sum())
    assert sent_home == 3  # every image was checked once against its own domain

    # The parts: the encoder graph also gives e's domain logits, so a client can compose
    # the colour translation from encoder and generator (renderings rounded to uint8).
    outputs = manifest["graphs"]["encoder"]["outputs"]
    assert [o["name"] for o in outputs] == ["z", "domain_logits"]
    assert outputs[1]["shape"] == ["batch", len(DOMAINS)]
    z_onnx, logits_onnx = ort.InferenceSession(
        str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"]
    ).run(None, {"image": images})
    np.testing.assert_allclose(logits_onnx, logits.numpy(), atol=1e-4)
    generator = ort.InferenceSession(
        str(folder / "generator.onnx"), providers=["CPUExecutionProvider"]
    )
    fused = ort.InferenceSession(str(folder / "to_night.onnx"), providers=["CPUExecutionProvider"])

    def render(domain: np.ndarray) -> torch.Tensor:
        pixels = generator.run(None, {"z": z_onnx, "domain": domain})[0]
        return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1

    composed = colour_change(
        x, render(logits_onnx.argmax(1)), render(np.full(3, DOMAINS.index("night")))
    )
    want = fused.run(None, {"image": images})[0].astype(int)
    got = ((composed + 1) * 127.5).round().clamp(0, 255).permute(0, 2, 3, 1).numpy()
    assert np.abs(got.astype(int) - want).mean() < 1.0


def test_the_forms_benchmark_scores_the_colour_form_as_i2i_eval(
    joint_run: Path, tmp_path: Path
) -> None:
    # The same test scenes in every domain (equal names), tinted as the training domains.
    root = tmp_path / "data"
    tints = {"day": (1, 1, 1), "dusk": (1.0, 0.7, 0.5), "night": (0.3, 0.3, 0.6)}
    for domain in DOMAINS:
        write_images(root / "test" / domain, 2, size=SIZE, seed=50, tint=tints[domain])
    report = evaluate(joint_run / "latest.pt", root)
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "twostep_forms.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(script), "--data", str(root), "--checkpoint"]
    result = subprocess.run(
        [*cmd, str(joint_run / "latest.pt")], env=env, capture_output=True, text=True, check=True
    )
    rows = {
        line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:4]]
        for line in result.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| form")
    }
    assert set(rows) == {"direct", "residual", "shift", "colour", "affine", "identity"}
    mean = report["mean"]
    assert rows["colour"] == pytest.approx([mean["psnr"], mean["ssim"]], abs=0.01)
    assert rows["identity"] == pytest.approx(
        [mean["identity_psnr"], mean["identity_ssim"]], abs=0.01
    )
