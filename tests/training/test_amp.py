"""Mixed precision: ``amp: bf16`` trains every registered family on the CPU (finite losses, a
step changes every network, resume bitwise exact); ``amp: fp16`` is CUDA only, refused with a
clear error elsewhere before anything is built or written.

Parametrised over the registry like tests/test_families.py, with the same tiny settings.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from i2i.checkpoint import load_checkpoint
from i2i.models import get_family, list_families, options_from_dict
from i2i.training import load_config, train
from i2i.training.config import ConfigError
from i2i.training.losses import gan_loss, gradient_penalty, reconstruction_loss
from i2i.training.monitor import read_loss_log
from i2i.training.stargan import input_gradient_penalty
from i2i.training.unit import kl_loss, recon_criterion
from tests.conftest import write_images
from tests.test_families import SIZE, STEPS_FOR_EVERY_NETWORK, family_config
from tests.training.test_resume import _assert_same_state, _losses

FAMILIES = list_families()


@pytest.fixture(scope="module")
def paired_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """trainA/ and trainB/ with equal names, as tests/test_families.py's (all families)."""
    root = tmp_path_factory.mktemp("paired")
    write_images(root / "trainA", 6, seed=1, size=SIZE)
    write_images(root / "trainB", 6, seed=2, tint=(1.0, 0.8, 0.6), size=SIZE)
    return root


def _finite_losses(run: Path) -> dict[str, float]:
    record = read_loss_log(run / "losses.jsonl")[-1]
    losses = {k: v for k, v in record.items() if k not in ("step", "epoch", "time")}
    losses = {k: v for k, v in losses.items() if not k.startswith("lr_")}
    assert losses, f"no losses logged in {run}"
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    assert not bad, f"losses that are not finite under bf16: {bad}"
    return losses


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_step_changes_every_network_with_finite_losses(
    family: str, paired_data: Path, tmp_path: Path
) -> None:
    steps = STEPS_FOR_EVERY_NETWORK.get(family, 1)
    cfg = family_config(family, paired_data, max_steps=steps, amp="bf16", device="cpu")
    train(cfg, tmp_path / "run")
    _finite_losses(tmp_path / "run")
    torch.manual_seed(cfg.seed)  # the loop builds the networks right after this
    initial = get_family(family).build(options_from_dict(family, cfg.model))
    checkpoint = load_checkpoint(tmp_path / "run" / "latest.pt")
    assert checkpoint["config"]["amp"] == "bf16"
    trained = checkpoint["networks"]
    assert set(trained) == set(initial)
    for name, net in initial.items():
        state = net.state_dict()
        for key, tensor in trained[name].items():
            # Weights stay float32: autocast only lowers the precision of the operations.
            assert tensor.dtype == state[key].dtype, f"{family}: {name}.{key} is {tensor.dtype}"
            assert torch.isfinite(tensor).all() if tensor.is_floating_point() else True
        changed = [
            key
            for key, tensor in state.items()
            if tensor.is_floating_point() and not torch.equal(tensor, trained[name][key])
        ]
        assert changed, f"{family}: a bf16 step left every weight of {name} unchanged"


def test_bf16_trains_stargan_tiny_s_options(paired_data: Path, tmp_path: Path) -> None:
    """stargan-tiny's options for short runs, the colour transform included, under bf16 on
    images with saturated pixels: finite losses and weights, and g's steps move the
    transform (in bf16 its skip would meet atanh(1) and write NaN into the weights)."""
    cfg = family_config("stargan", paired_data, max_steps=3, amp="bf16", device="cpu")
    tiny = options_from_dict("stargan", load_config("stargan-tiny").model)
    for key in ("global_skip", "conditional_norm", "domain_critic", "padding", "colour_transform"):
        cfg.model[key] = getattr(tiny, key)
    assert cfg.model["colour_transform"] is True
    train(cfg, tmp_path / "run")
    _finite_losses(tmp_path / "run")
    g = load_checkpoint(tmp_path / "run" / "latest.pt")["networks"]["g"]
    assert all(torch.isfinite(t).all() for t in g.values() if t.is_floating_point())
    assert g["colour_weight"].abs().sum() > 0 and g["colour_bias"].abs().sum() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_resume_is_bitwise_exact(family: str, paired_data: Path, tmp_path: Path) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    train(family_config(family, paired_data, max_steps=4, amp="bf16", device="cpu"), full)
    train(family_config(family, paired_data, max_steps=2, amp="bf16", device="cpu"), part)
    train(
        family_config(family, paired_data, max_steps=4, amp="bf16", device="cpu"),
        part,
        resume=True,
    )
    assert [r["step"] for r in _losses(full)] == [1, 2, 3, 4]
    assert _losses(part) == _losses(full)
    _assert_same_state(load_checkpoint(full / "latest.pt"), load_checkpoint(part / "latest.pt"))


def test_bf16_changes_the_arithmetic(paired_data: Path, tmp_path: Path) -> None:
    """The bf16 run is not the float32 run (autocast really applies on the CPU)."""
    for amp in ("off", "bf16"):
        train(
            family_config("cyclegan", paired_data, max_steps=1, amp=amp, device="cpu"),
            tmp_path / amp,
        )
    assert _losses(tmp_path / "off") != _losses(tmp_path / "bf16")


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_fp16_on_the_cpu_is_refused_before_training(
    paired_data: Path, tmp_path: Path, device: str
) -> None:
    if device == "auto" and torch.cuda.is_available():
        pytest.skip("auto picks the GPU here, where fp16 is allowed")
    cfg = family_config("cyclegan", paired_data, max_steps=1, amp="fp16", device=device)
    with pytest.raises(ConfigError, match=r"amp: fp16 .*CUDA.*bf16") as error:
        train(cfg, tmp_path / "run")
    assert "cpu" in str(error.value)
    assert not (tmp_path / "run" / "latest.pt").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with GradScaler needs a CUDA GPU")
def test_fp16_with_gradient_scaling_on_cuda(paired_data: Path, tmp_path: Path) -> None:
    cfg = family_config("cyclegan", paired_data, max_steps=2, amp="fp16", device="cuda")
    train(cfg, tmp_path / "run")
    _finite_losses(tmp_path / "run")
    scalers = load_checkpoint(tmp_path / "run" / "latest.pt")["trainer"].get("scalers")
    assert scalers, "the fp16 run saved no GradScaler state"


def _bf16_output(*shape: int, seed: int) -> torch.Tensor:
    """What a network returns under bf16 autocast: a bfloat16 tensor."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).bfloat16()


LOSSES_OF_TWO = {
    "gan lsgan": lambda p, t: gan_loss(p, True, "lsgan"),
    "gan vanilla": lambda p, t: gan_loss(p, False, "vanilla"),
    "gan wgangp real": lambda p, t: gan_loss(p, True, "wgangp"),
    "gan wgangp fake": lambda p, t: gan_loss(p, False, "wgangp"),
    "reconstruction l1": lambda p, t: reconstruction_loss(p, t, "l1"),
    "reconstruction l2": lambda p, t: reconstruction_loss(p, t, "l2"),
    "unit recon_criterion": recon_criterion,
    "unit kl_loss": lambda p, t: kl_loss(p),
}
REFERENCE = {
    "gan lsgan": lambda p, t: ((p - 1) ** 2).mean(),
    "gan vanilla": lambda p, t: torch.nn.functional.softplus(p).mean(),
    "gan wgangp real": lambda p, t: -p.mean(),
    "gan wgangp fake": lambda p, t: p.mean(),
    "reconstruction l1": lambda p, t: (p - t).abs().mean(),
    "reconstruction l2": lambda p, t: ((p - t) ** 2).mean(),
    "unit recon_criterion": lambda p, t: (p - t).abs().mean(),
    "unit kl_loss": lambda p, t: (p**2).mean(),
}


@pytest.mark.parametrize("name", list(LOSSES_OF_TWO))
def test_losses_of_bf16_outputs_are_float32(name: str) -> None:
    """A loss of bf16 network outputs (content codes, critic scores, ...) is reduced in
    float32, not rounded to bf16's 8 significant bits, inside autocast as the trainers call it."""
    prediction, target = _bf16_output(4, 3, 16, 16, seed=1), _bf16_output(4, 3, 16, 16, seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = LOSSES_OF_TWO[name](prediction, target)
    assert loss.dtype == torch.float32, f"{name} is {loss.dtype}"
    expected = REFERENCE[name](prediction.double(), target.double())
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_gradient_penalties_under_bf16_are_float32() -> None:
    """WGAN-GP (cyclegan, pix2pix) and StarGAN's penalty of a bf16 critic: float32, finite."""
    critic = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 1)
    )
    real = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    fake = _bf16_output(2, 3, 8, 8, seed=3)  # a generator's output under autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        penalty = gradient_penalty(critic, real, fake)
        x_hat = (0.5 * real + 0.5 * fake.float()).requires_grad_(True)
        stargan_penalty = input_gradient_penalty(critic, x_hat)
    assert penalty.dtype == torch.float32 and stargan_penalty.dtype == torch.float32
    total = penalty + stargan_penalty
    assert math.isfinite(float(total.detach()))
    total.backward()
    for p in critic.parameters():
        if p.dim() == 1:
            continue  # biases do not change an input gradient: the penalty leaves them alone
        assert p.grad is not None and p.grad.dtype == torch.float32
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
