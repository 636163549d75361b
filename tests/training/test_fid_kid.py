"""FID and KID in `i2i eval --inception-weights`: torchmetrics' metrics on the FID Inception
network, with a weights file the test makes itself (random weights test the path; the
numbers of the real weights are the library's, not ours to pin).

The toy multi-domain family (tests/toy_multidomain.py) made exact, ``to_<t>(x) = x +
offset[t]``, on test/<d>/ = base + offset[d]: the outputs of base -> bright ARE the images
of test/bright/ (FID ~0), those of bright -> base are off by 40 levels (FID and KID > 0).
Inception runs at 299x299 on the CPU (seconds per image on a busy machine): 2-3 images.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from i2i.cli.main import main
from i2i.data import make_sample_dataset
from i2i.training.evaluate import evaluate
from i2i.training.fid import (
    FIDError,
    FIDInceptionV3,
    InceptionScorer,
    InceptionWeightsError,
    frechet_distance,
    load_inception,
)
from tests.conftest import untrained_checkpoint
from tests.toy_multidomain import registered, toy_checkpoint

OFFSETS = {"base": 0, "bright": 40}
IMAGES = 3  # per domain
FID_KEYS = {"fid", "kid_mean", "kid_std", "kid_subset_size"}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A state dict of the FID Inception with seeded random weights (He-initialised
    convolutions, so features keep their scale through the 90-odd layers)."""
    torch.manual_seed(0)
    network = FIDInceptionV3()
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / "inception.pth"
    torch.save(network.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def offset_data(tmp_path_factory) -> Path:
    """test/<domain>/img_k.png: a smooth random base image in [70, 150] plus the offset."""
    root = tmp_path_factory.mktemp("offsets")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:24, 0:32] / 32
    for k in range(IMAGES):
        slopes = rng.uniform(-1, 1, (3, 2))
        ramp = np.stack([a * xx + b * yy for a, b in slopes], axis=-1)
        base = np.clip(110 + 40 * ramp + rng.normal(0, 6, ramp.shape), 70, 150).round()
        for domain, offset in OFFSETS.items():
            folder = root / "test" / domain
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((base + offset).astype(np.uint8)).save(folder / f"img_{k}.png")
    return root


@pytest.fixture(scope="module")
def offset_report(tmp_path_factory, offset_data, weights) -> dict:
    """`i2i eval` of the exact toy model with FID/KID, through the command line."""
    tmp = tmp_path_factory.mktemp("offset_eval")
    ckpt = toy_checkpoint(tmp / "toy.pt", list(OFFSETS), offsets=list(OFFSETS.values()))
    out = tmp / "eval"
    with registered():
        code = main(
            [
                "eval",
                str(ckpt),
                "--data",
                str(offset_data),
                "--out",
                str(out),
                "--inception-weights",
                str(weights),
            ]
        )
    assert code == 0
    return json.loads((out / "eval.json").read_text())


class Features(nn.Identity):
    """torchmetrics' feature module for features computed beforehand."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features


def _batch_of(paths: list[Path]) -> torch.Tensor:
    """Image files as uint8 [N, 3, H, W]."""
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _batch(folder: Path) -> torch.Tensor:
    """The images of a folder, sorted, as uint8 [N, 3, H, W]."""
    return _batch_of(sorted(folder.iterdir()))


@pytest.mark.slow
def test_fid_kid_of_a_set_against_itself_is_zero_and_grows_off_it(offset_report):
    pairs = offset_report["pairs"]
    exact, off = pairs["base->bright"], pairs["bright->base"]
    for rep in (exact, off):
        assert set(rep) >= FID_KEYS and rep["kid_subset_size"] == IMAGES  # KID on 3 images
    assert exact["psnr"] is None  # (infinite: the outputs are the test images themselves)
    assert abs(exact["fid"]) < 1e-6 * off["fid"]
    assert off["fid"] > 1e-3
    # KID's unbiased estimate of a set against itself is slightly negative, not 0.
    assert off["kid_mean"] > 1e-3 + exact["kid_mean"] and off["kid_mean"] > 0
    # Per target (one source each here) and the mean over the pairs.
    directions = offset_report["directions"]
    assert directions["to_bright"]["fid"] == pytest.approx(exact["fid"], abs=1e-9)
    assert directions["to_base"]["kid_mean"] == pytest.approx(off["kid_mean"])
    mean = offset_report["mean"]
    assert mean["fid"] == pytest.approx((exact["fid"] + off["fid"]) / 2)
    assert offset_report["inception"]["kid_subsets"] == 100


@pytest.mark.slow
def test_fid_kid_match_torchmetrics_called_directly(offset_report, offset_data, weights):
    """The same numbers as torchmetrics' metrics given the Inception module and the images;
    KID also as the unbiased polynomial-kernel MMD computed here from the features."""
    rep = offset_report["pairs"]["bright->base"]
    real = _batch(offset_data / "test" / "base")
    fake = _batch(offset_data / "test" / "bright")  # to_base adds 0: the bright images
    with torch.no_grad():
        network = load_inception(weights)
        x, y = network(real).double(), network(fake).double()
    # torchmetrics' own FID path (a 2048 x 2048 eigendecomposition: the slow part).
    fid = FrechetInceptionDistance(feature=Features(2048))
    fid.update(x, real=True)
    fid.update(y, real=False)
    assert rep["fid"] == pytest.approx(float(fid.compute()), rel=1e-4)
    kid = KernelInceptionDistance(feature=Features(2048), subsets=3, subset_size=IMAGES)
    kid.update(x, real=True)
    kid.update(y, real=False)
    kid_mean, _ = kid.compute()
    # A subset of the whole set is the set itself: every subset gives the same MMD.
    assert rep["kid_mean"] == pytest.approx(float(kid_mean), rel=1e-4)
    assert rep["kid_std"] == pytest.approx(0.0, abs=1e-6 * abs(rep["kid_mean"]))
    x, y = x.numpy(), y.numpy()
    k = lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3  # noqa: E731
    m = len(x)
    off_diagonal = lambda g: (g.sum() - np.trace(g)) / (m * (m - 1))  # noqa: E731
    mmd = off_diagonal(k(x, x)) + off_diagonal(k(y, y)) - 2 * k(x, y).mean()
    assert rep["kid_mean"] == pytest.approx(mmd, rel=1e-4)


@pytest.mark.slow
def test_two_domain_eval_writes_fid_kid_beside_psnr(tmp_path, weights, capsys):
    data = tmp_path / "data"
    make_sample_dataset("day2dusk", data, seed=0, size=32, n_train=1, n_test=2)
    ckpt = untrained_checkpoint(tmp_path / "run" / "latest.pt")
    out = tmp_path / "eval"
    args = ["eval", str(ckpt), "--data", str(data), "--out", str(out)]
    assert main([*args, "--inception-weights", str(weights)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "eval.json").read_text())
    for direction in ("A2B", "B2A"):
        rep = report["directions"][direction]
        assert set(rep) >= FID_KEYS and rep["kid_subset_size"] == 2
        assert math.isfinite(rep["psnr"]) and rep["fid"] > 0 and math.isfinite(rep["kid_std"])
    assert "FID" in printed and "KID" in printed
    # Without weights nothing changes: no FID/KID keys, no table.
    assert main(args) == 0
    printed = capsys.readouterr().out
    plain = json.loads((out / "eval.json").read_text())
    assert "inception" not in plain and "FID" not in printed
    for rep in plain["directions"].values():
        assert not FID_KEYS & set(rep)
    numbers = ("psnr", "ssim", "identity_psnr", "cycle_psnr")
    for direction, rep in plain["directions"].items():
        assert {k: rep[k] for k in numbers} == {
            k: report["directions"][direction][k] for k in numbers
        }


def test_missing_or_wrong_weights_are_named(tmp_path, capsys):
    ckpt = untrained_checkpoint(tmp_path / "c.pt")
    data = tmp_path / "data"
    make_sample_dataset("day2dusk", data, size=16, n_train=1, n_test=2)
    missing = tmp_path / "nowhere" / "pt_inception.pth"
    with pytest.raises(InceptionWeightsError, match=f"{missing}: Inception weights file not"):
        evaluate(ckpt, data, inception_weights=missing)
    code = main(["eval", str(ckpt), "--data", str(data), "--inception-weights", str(missing)])
    err = capsys.readouterr().err
    assert code == 2 and str(missing) in err and "pt_inception-2015-12-05" in err
    assert "Traceback" not in err
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(InceptionWeightsError, match=f"{other}: not the FID Inception.*missing"):
        load_inception(other)
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(InceptionWeightsError, match=f"{text}: not a PyTorch state dict"):
        load_inception(text)
    with pytest.raises(InceptionWeightsError, match="is a folder"):
        load_inception(tmp_path)


@pytest.mark.slow
def test_the_network_is_torch_fidelitys_inception():
    """Seeded weights made from i2i's parameter names give torch-fidelity's own features
    (tests/fixtures/make_fid_inception_fixture.py ran torch-fidelity's network)."""
    fixtures = Path(__file__).parents[1] / "fixtures"
    spec = importlib.util.spec_from_file_location(
        "make_fid_inception_fixture", fixtures / "make_fid_inception_fixture.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    network = FIDInceptionV3()
    network.load_state_dict(script.seeded_state(network.state_dict()))
    folder = fixtures / "fid_inception"
    batch = _batch_of([folder / "input_0.png", folder / "input_1.png"])
    with torch.no_grad():
        features = network.eval()(batch).numpy()
    expected = np.load(folder / "features.npy")
    assert np.abs(expected).mean() > 1e-2  # features of a useful scale
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize(("n_real", "n_fake", "dim"), [(5, 4, 64), (3, 3, 32), (40, 50, 8)])
def test_frechet_distance_is_torchmetrics_fid(n_real, n_fake, dim):
    """The low-rank FID of few images equals torchmetrics' eigenvalue FID (small dims here),
    and a set against itself is 0; larger sets than dims go through torchmetrics itself."""
    gen = torch.Generator().manual_seed(n_real)
    real = torch.randn(n_real, dim, generator=gen, dtype=torch.float64) * 2 + 1
    fake = torch.randn(n_fake, dim, generator=gen, dtype=torch.float64) ** 2
    metric = FrechetInceptionDistance(feature=Features(dim))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    expected = float(metric.compute())
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(real, fake, FrechetInceptionDistance) == pytest.approx(expected)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
def test_fid_needs_two_images_kid_takes_the_smaller_set(weights):
    scorer = InceptionScorer(weights, kid_subsets=5)
    rng = np.random.default_rng(1)
    rgb = [rng.integers(0, 256, (16, 20, 3), dtype=np.uint8) for _ in range(2)]
    gray = rng.integers(0, 256, (20, 16, 1), dtype=np.uint8)
    features = scorer.features([*rgb, gray])  # any sizes; gray is repeated to RGB
    assert features.shape == (3, 2048) and features.dtype == torch.float64
    as_rgb = scorer.features([np.repeat(gray, 3, axis=2)])
    assert torch.equal(features[2:], as_rgb)
    scores = scorer.scores(features, features[1:], "test")
    assert scores["kid_subset_size"] == 2 and scores["fid"] > 0
    with pytest.raises(FIDError, match="A2B: FID and KID need at least 2 images.*1 translated"):
        scorer.scores(features, features[:1], "A2B")
