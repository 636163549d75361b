"""`i2i eval` through each family's translators: multimodal fidelity and diversity on a task
whose correct answers form a known family, seeded styles, and unchanged unimodal numbers.

A toy multimodal family, registered only for these tests, stands in for MUNIT: its A2B
translator outputs exactly the dusk grade at the strength its style code chooses (or at a
fixed strength when it ignores the style), so the numbers eval must report are known.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from i2i.checkpoint import make_checkpoint, save_checkpoint
from i2i.cli.main import main
from i2i.data import (
    DataError,
    dusk_grade_strength,
    load_rgb,
    make_sample_dataset,
    to_tensor,
    to_uint8,
)
from i2i.models import ModelFamily, ShapeRule, create_networks, registry
from i2i.training.evaluate import evaluate, format_report, style_codes
from i2i.training.metrics import mean_pairwise_l1, nearest_members, psnr
from tests.conftest import untrained_checkpoint, write_images

TOY = "toy-eval-style"
STYLE_DIM = 2
SIZE = 16


@dataclass
class ToyOptions:
    """respect_style: t follows the style code; otherwise t is always fixed_t."""

    respect_style: bool = True
    fixed_t: float = 0.9
    low: float = 0.2
    high: float = 1.0
    style_dim: int = STYLE_DIM


class ToyNet(nn.Module):
    """Holds the strength range as a buffer, so the checkpoint has a state dict to load."""

    def __init__(self, options: ToyOptions) -> None:
        super().__init__()
        self.register_buffer("t_range", torch.tensor([options.low, options.high]))


def style_to_t(style: np.ndarray, low: float, high: float) -> np.ndarray:
    """The strength the toy uses for style codes [N, S]: uniform on [low, high] for N(0, 1)."""
    z = torch.from_numpy(style[:, 0]).double()
    return (low + (high - low) * 0.5 * (1 + torch.erf(z / math.sqrt(2)))).numpy()


class ToyGrade(nn.Module):
    """A2B: the dusk grade at the strength the style code sets (contract 2, with a style)."""

    in_channels = out_channels = 3

    def __init__(self, net: ToyNet, options: ToyOptions) -> None:
        super().__init__()
        self.net, self.options, self.style_dim = net, options, options.style_dim

    def forward(self, image: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        assert image.dtype == torch.uint8 and image.dim() == 4
        assert style.dtype == torch.float32
        assert tuple(style.shape) == (image.shape[0], self.style_dim)
        low, high = self.net.t_range.tolist()
        if self.options.respect_style:
            ts = style_to_t(style.cpu().numpy(), low, high)
        else:
            ts = np.full(image.shape[0], self.options.fixed_t)
        graded = [
            dusk_grade_strength(x.numpy(), float(t)) for x, t in zip(image.cpu(), ts, strict=True)
        ]
        return torch.from_numpy(np.stack(graded)).to(image.device)


class ToyUndo(nn.Module):
    """B2A: returns its input, whatever the style."""

    in_channels = out_channels = 3

    def __init__(self, style_dim: int) -> None:
        super().__init__()
        self.style_dim = style_dim

    def forward(self, image: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        assert style.dtype == torch.float32
        assert tuple(style.shape) == (image.shape[0], self.style_dim)
        return image.clone()


def _toy_translators(networks, options):
    found = {}
    if "g_ab" in networks:
        found["A2B"] = ToyGrade(networks["g_ab"], options).eval()
    if "g_ba" in networks:
        found["B2A"] = ToyUndo(options.style_dim).eval()
    return found


TOY_FAMILY = ModelFamily(
    name=TOY,
    options_type=ToyOptions,
    build=lambda options: {"g_ab": ToyNet(options), "g_ba": ToyNet(options)},
    generators=("g_ab", "g_ba"),
    directions={"A2B": "g_ab", "B2A": "g_ba"},
    shape_rule=lambda options: ShapeRule(),
    description="test only: the dusk grade at a strength set by the style code",
    translators=_toy_translators,
    style_dim=STYLE_DIM,
)


@pytest.fixture
def toy_family(monkeypatch):
    """Registers the toy family for one test only (the registry-wide tests never see it)."""
    monkeypatch.setitem(registry._FAMILIES, TOY, TOY_FAMILY)
    return TOY_FAMILY


def toy_checkpoint(path: Path, **model) -> Path:
    options = ToyOptions(**model)
    nets = TOY_FAMILY.build(options)
    payload = make_checkpoint(
        family=TOY,
        config={"family": TOY, "model": model},
        domains=["A", "B"],
        networks={name: net.state_dict() for name, net in nets.items()},
    )
    return save_checkpoint(payload, path)


@pytest.fixture(scope="module")
def range_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("day2dusk-range")
    make_sample_dataset("day2dusk-range", root, seed=0, size=SIZE, n_train=1, n_test=3)
    return root


def test_style_respecting_toy_is_faithful_and_covers_the_range(toy_family, range_data, tmp_path):
    ckpt = toy_checkpoint(tmp_path / "toy.pt")
    report = evaluate(ckpt, range_data, out_dir=tmp_path / "ev", num_samples=32, seed=5)
    assert report["family"] == TOY and report["num_samples"] == 32 and report["style_dim"] == 2
    rep = report["directions"]["A2B"]
    assert rep["samples"] == 32 and rep["valid_range"] == [0.2, 1.0]
    # Every output is a member of the family: the nearest valid translation is (almost) it.
    assert rep["fidelity_psnr"] > 45 and rep["fidelity_exact"] > 0.5
    # The strengths the styles asked for are recovered by the fit.
    for i, item in enumerate(rep["per_image"]):
        asked = style_to_t(style_codes(5, 0, i, 32, STYLE_DIM), 0.2, 1.0)
        assert np.abs(np.array(item["best_t"]) - asked).max() < 0.01
        assert item["coverage"] == pytest.approx((asked.max() - asked.min()) / 0.8, abs=0.02)
    # 32 strengths uniform on the range: expected coverage (K - 1) / (K + 1) = 0.94.
    assert rep["coverage"] > 0.85
    assert rep["best_t_mean"] == pytest.approx(0.6, abs=0.1) and rep["best_t_std"] > 0.15
    assert 0 < rep["pairwise_l1"] < rep["valid_range_l1"]
    # The single-output figure is against the mid-range truth, so it is far lower.
    assert rep["psnr"] < rep["fidelity_psnr"] - 10
    # The cycle: sample 0 (A2B style from stream 0) back through the identity B2A.
    expected = []
    for i, path in enumerate(sorted((range_data / "testA").iterdir())):
        real = np.asarray(load_rgb(path))
        t0 = style_to_t(style_codes(5, 0, i, 32, STYLE_DIM), 0.2, 1.0)[0]
        expected.append(psnr(dusk_grade_strength(real, float(t0)), real))
    assert rep["cycle_psnr"] == pytest.approx(np.mean(expected), rel=1e-12)
    # B2A has one correct answer per image: no family, but its K outputs are compared.
    back = report["directions"]["B2A"]
    assert back["fidelity_psnr"] is None and back["coverage"] is None
    assert back["pairwise_l1"] == 0 and back["psnr"] == back["identity_psnr"]
    saved = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert saved["directions"]["A2B"]["coverage"] == pytest.approx(rep["coverage"])
    # Rows: input | 4 of the samples | truth, 16 px cells with 2 px padding.
    with Image.open(tmp_path / "ev" / "eval_grid.png") as grid:
        assert grid.size == (6 * 18 + 2, 6 * 18 + 2)
    table = format_report(report)
    assert "coverage" in table and "fidelity" in table


def test_style_ignoring_toy_covers_nothing(toy_family, range_data, tmp_path):
    ckpt = toy_checkpoint(tmp_path / "toy.pt", respect_style=False, fixed_t=0.9)
    rep = evaluate(ckpt, range_data, num_samples=16)["directions"]["A2B"]
    assert rep["coverage"] == 0 and rep["pairwise_l1"] == 0
    assert rep["best_t_std"] == pytest.approx(0, abs=1e-9)
    assert rep["best_t_mean"] == pytest.approx(0.9, abs=0.01)
    assert rep["fidelity_psnr"] > 45  # a valid translation, always the same one


def test_styles_are_seeded_and_extend_with_more_samples(toy_family, range_data, tmp_path):
    ckpt = toy_checkpoint(tmp_path / "toy.pt")
    first = evaluate(ckpt, range_data, num_samples=4, seed=1)["directions"]["A2B"]
    again = evaluate(ckpt, range_data, num_samples=4, seed=1)["directions"]["A2B"]
    other = evaluate(ckpt, range_data, num_samples=4, seed=2)["directions"]["A2B"]
    more = evaluate(ckpt, range_data, num_samples=6, seed=1)["directions"]["A2B"]
    assert first["per_image"] == again["per_image"]
    assert first["per_image"][0]["best_t"] != other["per_image"][0]["best_t"]
    assert more["per_image"][0]["best_t"][:4] == first["per_image"][0]["best_t"]
    np.testing.assert_array_equal(style_codes(1, 0, 0, 6, 2)[:4], style_codes(1, 0, 0, 4, 2))
    with pytest.raises(ValueError, match="num_samples"):
        evaluate(ckpt, range_data, num_samples=0)


def test_style_size_is_the_models_own(toy_family, range_data, tmp_path):
    """A model built with another style size than the family's default gets codes of its S."""
    ckpt = toy_checkpoint(tmp_path / "toy.pt", style_dim=5)
    report = evaluate(ckpt, range_data, num_samples=3, seed=4)
    assert report["style_dim"] == 5
    ts = report["directions"]["A2B"]["per_image"][1]["best_t"]
    asked = style_to_t(style_codes(4, 0, 1, 3, 5), 0.2, 1.0)
    assert np.abs(np.array(ts) - asked).max() < 0.01


def test_unimodal_model_on_a_multimodal_task(range_data, tmp_path):
    ckpt = untrained_checkpoint(tmp_path / "cyclegan.pt")
    report = evaluate(ckpt, range_data, num_samples=8)
    assert report["num_samples"] == 1  # no style: one output per image, whatever is asked
    rep = report["directions"]["A2B"]
    assert rep["samples"] == 1 and rep["coverage"] == 0 and rep["pairwise_l1"] == 0
    assert all(len(item["best_t"]) == 1 for item in rep["per_image"])
    # The nearest valid translation is at least as close as the mid-range truth.
    assert math.isfinite(rep["fidelity_psnr"]) and rep["fidelity_psnr"] >= rep["psnr"] - 0.01
    assert report["directions"]["B2A"]["fidelity_psnr"] is None


def test_cyclegan_numbers_are_those_of_its_generators(tmp_path):
    """Eval through the translators gives exactly what the float generators give (padded)."""
    data = tmp_path / "data"
    make_sample_dataset("day2dusk", data, seed=0, size=30, n_train=1, n_test=2)
    torch.manual_seed(0)
    nets = create_networks("cyclegan", {"ngf": 4, "netG": "resnet_6blocks"})
    payload = make_checkpoint(
        family="cyclegan",
        config={"family": "cyclegan", "model": {"ngf": 4, "netG": "resnet_6blocks"}},
        domains=["A", "B"],
        networks={name: net.state_dict() for name, net in nets.items()},
    )
    report = evaluate(save_checkpoint(payload, tmp_path / "m.pt"), data)

    def generate(net, image):  # what eval computed before it used the translators
        x = F.pad(to_tensor(image).unsqueeze(0), (0, 2, 0, 2), mode="reflect")  # 30 -> 32
        with torch.no_grad():
            return to_uint8(net.eval()(x)[:, :, :30, :30][0])

    for direction, folder, g, back in (
        ("A2B", "testA", "g_ab", "g_ba"),
        ("B2A", "testB", "g_ba", "g_ab"),
    ):
        rep = report["directions"][direction]
        assert rep["samples"] == 1 and rep["coverage"] is None and rep["pairwise_l1"] is None
        for path, item in zip(sorted((data / folder).iterdir()), rep["per_image"], strict=True):
            real = np.asarray(load_rgb(path))
            truth = np.asarray(load_rgb(data / "truth" / direction / path.name))
            fake = generate(nets[g], real)
            assert item["psnr"] == psnr(fake, truth)
            assert item["cycle_psnr"] == psnr(generate(nets[back], fake), real)
    assert "coverage" not in format_report(report)


def test_nearest_members_and_pairwise_l1():
    image = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    samples = np.stack([dusk_grade_strength(image, t) for t in (0.437, 0.9, 0.25)])
    fits = nearest_members(samples, lambda t: dusk_grade_strength(image, t), 0.2, 1.0)
    for (t, error), asked, sample in zip(fits, (0.437, 0.9, 0.25), samples, strict=True):
        assert error == 0 and abs(t - asked) < 0.01
        np.testing.assert_array_equal(dusk_grade_strength(image, t), sample)
    outside = dusk_grade_strength(image, 0.05)  # weaker than the range allows
    ((t, error),) = nearest_members(
        outside[None], lambda t: dusk_grade_strength(image, t), 0.2, 1.0
    )
    assert t == pytest.approx(0.2, abs=1e-3) and error > 0
    pair = np.stack([np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 10, np.uint8)])
    assert mean_pairwise_l1(pair) == 10 and mean_pairwise_l1(pair[:1]) == 0
    triple = np.concatenate([pair, np.full((1, 2, 2, 3), 40, np.uint8)])
    assert mean_pairwise_l1(triple) == pytest.approx((10 + 40 + 30) / 3)


def test_cli_eval_num_samples_and_seed(toy_family, range_data, tmp_path, capsys):
    ckpt = toy_checkpoint(tmp_path / "toy.pt")
    out = tmp_path / "ev"
    args = ["eval", str(ckpt), "--data", str(range_data), "--out", str(out)]
    assert main([*args, "--num-samples", "5", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "coverage" in printed and "fidelity" in printed
    saved = json.loads((out / "eval.json").read_text())
    assert saved["num_samples"] == 5 and saved["seed"] == 3
    assert len(saved["directions"]["A2B"]["per_image"][0]["best_t"]) == 5
    assert main([*args, "--num-samples", "0"]) == 2
    assert "--num-samples" in capsys.readouterr().err


def test_evaluate_on_the_aligned_layout(tmp_path):
    """The aligned layout's test halves and truth are read like the unaligned ones."""
    data = tmp_path / "pairs"
    make_sample_dataset("gray2color", data, seed=0, size=SIZE, n_train=1, n_test=2, aligned=True)
    report = evaluate(untrained_checkpoint(tmp_path / "cyclegan.pt"), data)
    for direction in ("A2B", "B2A"):
        rep = report["directions"][direction]
        assert rep["images"] == 2 and math.isfinite(rep["cycle_psnr"])
    for item in report["directions"]["A2B"]["per_image"]:
        pair = np.asarray(load_rgb(data / "test" / item["file"]))
        assert item["identity_psnr"] == psnr(pair[:, :SIZE], pair[:, SIZE:])


def _write_gray_and_color(root: Path, n: int = 2, size: int = 32) -> None:
    """testA grayscale ("L") and testB RGB, with truth/A2B RGB and truth/B2A grayscale."""
    for folder, truth, seed in (("testA", "B2A", 3), ("testB", "A2B", 4)):
        write_images(root / folder, n, size=size, seed=seed)
        write_images(root / "truth" / truth, n, size=size, seed=seed + 10)
    for folder in (root / "testA", root / "truth" / "B2A"):
        for path in folder.iterdir():
            with Image.open(path) as img:
                img.convert("L").save(path)


@pytest.mark.parametrize(
    ("family", "model", "directions"),
    [
        ("cyclegan", {"input_nc": 1}, {"A2B", "B2A"}),
        ("unit", {"input_dim_a": 1}, {"A2B", "B2A"}),
        ("munit", {"input_dim_a": 1}, {"A2B", "B2A"}),
        ("pix2pix", {"input_nc": 1}, {"A2B"}),
        ("pix2pix", {"output_nc": 1, "direction": "BtoA"}, {"B2A"}),
    ],
    ids=["cyclegan", "unit", "munit", "pix2pix-AtoB", "pix2pix-BtoA"],
)
def test_evaluate_a_grayscale_domain(family, model, directions, tmp_path):
    """Domain A is grayscale: inputs and truths are read with the translators' channels."""
    data = tmp_path / "data"
    _write_gray_and_color(data)
    ckpt = untrained_checkpoint(tmp_path / "m.pt", family, **model)
    report = evaluate(ckpt, data, out_dir=tmp_path / "ev", num_samples=2)
    assert set(report["directions"]) == directions and report["test_layout"] == "folders"
    for direction, rep in report["directions"].items():
        assert rep["images"] == 2
        values = [rep[k] for k in ("psnr", "ssim", "identity_psnr", "identity_ssim")]
        assert all(math.isfinite(v) for v in values)
        assert 0 < rep["ssim"] <= 1 and 0 < rep["identity_ssim"] <= 1
        if len(directions) == 2:
            assert math.isfinite(rep["cycle_psnr"])
        source, truth_channels = ("testA", 3) if direction == "A2B" else ("testB", 1)
        for item in rep["per_image"]:
            real = np.asarray(load_rgb(data / source / item["file"], 4 - truth_channels))
            truth = np.asarray(load_rgb(data / "truth" / direction / item["file"], truth_channels))
            # The identity baseline: the gray input repeated to RGB, the RGB one to luma.
            if truth_channels == 3:
                same = np.repeat(real[:, :, None], 3, axis=2)
            else:
                same = np.asarray(Image.fromarray(real).convert("L"))
            assert item["identity_psnr"] == psnr(same, truth)
    with Image.open(tmp_path / "ev" / "eval_grid.png") as grid:
        cols = 2 + (2 if family == "munit" else 1)  # input | output(s) | truth
        assert grid.mode == "RGB" and grid.size == (cols * 34 + 2, 2 * len(directions) * 34 + 2)


def _write_side_by_side(root: Path, n: int = 3, size: int = 32) -> list[tuple[np.ndarray, ...]]:
    """n [A | B] PNGs in root/test/ (A and B halves of size x size); the halves back."""
    halves_a = [np.asarray(Image.open(p).convert("RGB")) for p in write_images(root / "a", n)]
    halves_b = [
        np.asarray(Image.open(p).convert("RGB"))
        for p in write_images(root / "b", n, seed=7, tint=(1.0, 0.8, 0.6))
    ]
    (root / "test").mkdir(parents=True)
    for i, (a, b) in enumerate(zip(halves_a, halves_b, strict=True)):
        Image.fromarray(np.concatenate([a, b], axis=1)).save(root / "test" / f"{i:03d}.png")
    return list(zip(halves_a, halves_b, strict=True))


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_evaluate_side_by_side_test_pairs(direction, tmp_path):
    """A dataset with only test/ of [A | B] pairs: each half is the other's truth, and the
    numbers are those of the same halves written as testA/ + testB/ + truth/."""
    pairs = _write_side_by_side(tmp_path / "pairs")
    folders = tmp_path / "folders"
    for i, (a, b) in enumerate(pairs):
        for name, image in (("testA", a), ("truth/B2A", a), ("testB", b), ("truth/A2B", b)):
            (folders / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folders / name / f"{i:03d}.png")
    ckpt = untrained_checkpoint(tmp_path / "p2p.pt", "pix2pix", direction=direction)
    side = evaluate(ckpt, tmp_path / "pairs", out_dir=tmp_path / "ev")
    apart = evaluate(ckpt, folders)
    name = "A2B" if direction == "AtoB" else "B2A"
    assert side["test_layout"] == "side_by_side" and apart["test_layout"] == "folders"
    assert set(side["directions"]) == {name}
    rep = side["directions"][name]
    assert rep["images"] == 3 and math.isfinite(rep["psnr"])
    assert rep == apart["directions"][name]
    for (a, b), item in zip(pairs, rep["per_image"], strict=True):
        assert item["identity_psnr"] == psnr(a, b)
    with Image.open(tmp_path / "ev" / "eval_grid.png") as grid:
        assert grid.size == (3 * 34 + 2, 3 * 34 + 2)  # input | output | truth, 32 px cells


def test_evaluate_side_by_side_grayscale_half(tmp_path):
    """pix2pix with a grayscale input: the A half is read as gray, the B half as RGB."""
    pairs = _write_side_by_side(tmp_path / "pairs", n=2)
    ckpt = untrained_checkpoint(tmp_path / "p2p.pt", "pix2pix", input_nc=1)
    rep = evaluate(ckpt, tmp_path / "pairs")["directions"]["A2B"]
    for (a, b), item in zip(pairs, rep["per_image"], strict=True):
        gray = np.asarray(Image.fromarray(a).convert("L"))
        assert item["identity_psnr"] == psnr(np.repeat(gray[:, :, None], 3, axis=2), b)
        assert math.isfinite(item["psnr"]) and 0 < item["ssim"] <= 1


def test_evaluate_side_by_side_odd_width_is_an_error(tmp_path):
    (tmp_path / "pairs" / "test").mkdir(parents=True)
    Image.new("RGB", (33, 16)).save(tmp_path / "pairs" / "test" / "odd.png")
    ckpt = untrained_checkpoint(tmp_path / "p2p.pt", "pix2pix")
    with pytest.raises(DataError, match="width 33 is odd"):
        evaluate(ckpt, tmp_path / "pairs")
