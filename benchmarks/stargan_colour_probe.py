"""Can StarGAN's generator express the gradings at all? (BENCHMARKS.md, "Demo quality").

Two measurements on the ``gradings`` sample (``i2i data sample --task gradings``), each grade
made from the day images with the sample's own functions (i2i.data.sample):

- ``affine``: the best per-pixel affine colour map ``y = A x + b`` (3 x 4, least squares
  over all test pixels) from a day image to each grade: what a colour transform alone can
  reach.
- ``supervised``: stargan-tiny's ``g`` (the preset's ``model:`` options; ``--set
  KEY=VALUE`` changes any key of the preset, as ``i2i-train --set`` does) trained *with the
  true grade as target*, L1, Adam (the preset's rate and betas), batches of the preset's
  size of random day images and random targets, for ``--steps`` steps: what the
  architecture learns when the GAN's signal is perfect. A GAN run of 1,600 steps at
  ``n_critic`` 5 updates ``g`` 320 times.

PSNR is in dB, per image on the [-1, 1] floats (range 2), mean over the 24 test images.

Usage:
    python benchmarks/stargan_colour_probe.py --data G [--steps 320] [--seed 0]
        [--set model.colour_transform=false]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from i2i.data.sample import dusk_grade, night_grade, sepia_grade
from i2i.models import create_networks
from i2i.training import load_config
from i2i.training.config import ConfigError, TrainConfig, apply_overrides
from i2i.training.metrics import psnr_of_mse

GRADES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "day": lambda rgb: rgb,
    "dusk": dusk_grade,
    "night": night_grade,
    "sepia": sepia_grade,
}


def _load(folder: Path) -> np.ndarray:
    """The folder's PNGs, sorted by name, as uint8 (N, H, W, 3)."""
    files = sorted(folder.glob("*.png"))
    if not files:
        raise SystemExit(f"no PNG images in {folder}: make the sample with `i2i data sample`")
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def _float(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _psnr(out: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean over the images of each one's PSNR, on floats in [-1, 1] (range 2)."""
    mse = ((out - truth) ** 2).mean(dim=(1, 2, 3))
    return float(np.mean([psnr_of_mse(float(m), max_value=2.0) for m in mse]))


def affine(test: np.ndarray) -> dict[str, float]:
    """The best per-pixel affine map from day to each other grade, PSNR on the test images."""
    x = _float(test)
    pixels = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, 3), torch.ones(x[:, 0].numel(), 1)], 1)
    out = {}
    for name, grade in GRADES.items():
        if name == "day":
            continue
        y = _float(grade(test))
        solution = torch.linalg.lstsq(
            pixels.double(), y.permute(0, 2, 3, 1).reshape(-1, 3).double()
        )
        fit = (pixels.double() @ solution.solution).float().view(*y.permute(0, 2, 3, 1).shape)
        out[name] = _psnr(fit.permute(0, 3, 1, 2), y)
    return out


def supervised(
    train: np.ndarray, test: np.ndarray, steps: int, seed: int, cfg: TrainConfig
) -> dict[str, float]:
    """The preset's g trained on the true grades for ``steps`` steps, PSNR per target."""
    torch.manual_seed(seed)
    g = create_networks("stargan", {**cfg.model, "domains": list(GRADES)})["g"]
    optimiser = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    x_train = _float(train)
    y_train = torch.stack([_float(grade(train)) for grade in GRADES.values()])  # (K, N, ...)
    draw = torch.Generator().manual_seed(seed)
    eye = torch.eye(len(GRADES))
    for _ in range(steps):
        index = torch.randint(0, len(x_train), (cfg.batch_size,), generator=draw)
        target = torch.randint(0, len(GRADES), (cfg.batch_size,), generator=draw)
        loss = (g(x_train[index], eye[target]) - y_train[target, index]).abs().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    x_test = _float(test)
    out = {}
    with torch.no_grad():
        for k, (name, grade) in enumerate(GRADES.items()):
            out[name] = _psnr(g(x_test, eye[[k] * len(x_test)]), _float(grade(test)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the gradings sample")
    parser.add_argument("--steps", type=int, default=320, help="supervised steps of g")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change a key of stargan-tiny, as i2i-train --set does "
                        "(model.colour_transform=false; repeatable)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        cfg = apply_overrides(load_config("stargan-tiny"), args.set)
    except ConfigError as error:
        raise SystemExit(f"--set: {error}") from None
    train, test = _load(args.data / "train" / "day"), _load(args.data / "test" / "day")
    identity = {
        name: _psnr(_float(test), _float(grade(test))) for name, grade in GRADES.items()
        if name != "day"
    }  # fmt: skip
    report = {
        "identity": identity,
        "affine": affine(test),
        "supervised": supervised(train, test, args.steps, args.seed, cfg),
        "steps": args.steps,
        "seed": args.seed,
        "set": args.set,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
