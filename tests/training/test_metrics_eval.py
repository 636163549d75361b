"""PSNR/SSIM against scikit-image's reference implementation, and `evaluate` on known models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from i2i.checkpoint import make_checkpoint, save_checkpoint
from i2i.data import make_sample_dataset
from i2i.models import ShapeRule, create_networks
from i2i.training.evaluate import evaluate, format_report, translate_image
from i2i.training.metrics import psnr, ssim


def test_psnr_and_ssim_match_scikit_image():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), rel=1e-9)
    expected = structural_similarity(
        a,
        b,
        data_range=255,
        channel_axis=2,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert ssim(a, b) == pytest.approx(expected, abs=2e-3)
    assert psnr(a, a) == math.inf and ssim(a, a) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="equal shapes"):
        psnr(a, b[:10])


def test_translate_image_pads_to_the_shape_rule():
    """Translators take uint8 [N, H, W, C]: padding (reflect) and resizing happen on bytes."""
    image = np.random.default_rng(1).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x, style=None):
            assert x.dtype == torch.uint8
            seen.append((tuple(x.shape), None if style is None else tuple(style.shape)))
            return x

    out = translate_image(Probe(), image, ShapeRule(multiple_of=4), torch.device("cpu"))
    assert seen == [((1, 32, 48, 3), None)] and out.shape == (1, *image.shape)
    assert np.array_equal(out[0], image)  # identity translator: the padding is cropped away
    out = translate_image(Probe(), image, ShapeRule(fixed_size=64), torch.device("cpu"))
    assert seen[-1] == ((1, 64, 64, 3), None) and out.shape == (1, *image.shape)
    # A multimodal translator gets the image once per style code.
    styles = np.zeros((3, 8), dtype=np.float32)
    out = translate_image(Probe(), image, ShapeRule(multiple_of=4), torch.device("cpu"), styles)
    assert seen[-1] == ((3, 32, 48, 3), (3, 8)) and out.shape == (3, *image.shape)
    assert all(np.array_equal(o, image) for o in out)


def _checkpoint_with(tmp_path, g_ab, g_ba):
    payload = make_checkpoint(
        family="cyclegan",
        config={"family": "cyclegan", "model": {"ngf": 4, "netG": "resnet_6blocks"}},
        domains=["A", "B"],
        networks={"g_ab": g_ab.state_dict(), "g_ba": g_ba.state_dict()},
    )
    return save_checkpoint(payload, tmp_path / "model.pt")


def test_evaluate_reports_both_directions_and_baseline(tmp_path):
    data = tmp_path / "data"
    make_sample_dataset("day2dusk", data, seed=0, size=32, n_train=2, n_test=3)
    torch.manual_seed(0)  # an unseeded init beats the identity baseline now and then
    nets = create_networks("cyclegan", {"ngf": 4, "netG": "resnet_6blocks"})
    ckpt = _checkpoint_with(tmp_path, nets["g_ab"], nets["g_ba"])
    report = evaluate(ckpt, data, out_dir=tmp_path / "ev")
    for direction in ("A2B", "B2A"):
        rep = report["directions"][direction]
        assert rep["images"] == 3 and len(rep["per_image"]) == 3
        # An untrained generator is far worse than doing nothing.
        assert rep["psnr"] < rep["identity_psnr"]
        assert 0 < rep["identity_ssim"] <= 1 and math.isfinite(rep["cycle_psnr"])
    saved = json.loads(  # strict JSON: no NaN/Infinity literals
        (tmp_path / "ev" / "eval.json").read_text(), parse_constant=lambda c: pytest.fail(c)
    )
    assert saved["directions"]["A2B"]["psnr"] == pytest.approx(report["directions"]["A2B"]["psnr"])
    assert (tmp_path / "ev" / "eval_grid.png").stat().st_size > 0
    assert "A2B" in format_report(report)


def test_evaluate_a_single_direction_model(tmp_path):
    data = tmp_path / "data"
    make_sample_dataset("gray2color", data, seed=0, size=32, n_train=2, n_test=6)
    nets = create_networks("cyclegan", {"ngf": 4, "netG": "resnet_6blocks"})
    payload = make_checkpoint(
        family="cyclegan",
        config={"family": "cyclegan", "model": {"ngf": 4, "netG": "resnet_6blocks"}},
        domains=["A", "B"],
        networks={"g_ba": nets["g_ba"].state_dict()},
    )
    ckpt = save_checkpoint(payload, tmp_path / "b2a.pt")
    report = evaluate(ckpt, data, out_dir=tmp_path / "ev", grid_images=2)
    assert set(report["directions"]) == {"B2A"}
    assert report["directions"]["B2A"]["cycle_psnr"] is None  # no g_ab to cycle back with
    assert "-" in format_report(report)
    from PIL import Image

    # 2 rows (input | output | truth) of 32 px cells with 2 px padding
    assert Image.open(tmp_path / "ev" / "eval_grid.png").size == (3 * 34 + 2, 2 * 34 + 2)
