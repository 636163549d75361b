"""`i2i eval`: translate the test split and measure it against the true translation."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from i2i.checkpoint import load_trained_networks
from i2i.data import DataError, list_images, load_rgb, to_tensor, to_uint8
from i2i.models import ShapeRule, get_family, options_from_dict

from .metrics import psnr, ssim
from .monitor import image_grid

# Which test folder feeds which direction, and which generator undoes it (for the cycle).
_DIRECTIONS = {"A2B": ("testA", "B2A"), "B2A": ("testB", "A2B")}


@dataclass
class DirectionReport:
    images: int = 0
    psnr: float | None = None
    ssim: float | None = None
    identity_psnr: float | None = None
    identity_ssim: float | None = None
    cycle_psnr: float | None = None
    per_image: list[dict[str, Any]] = field(default_factory=list)


@torch.no_grad()
def translate_image(
    net: nn.Module, image: np.ndarray, rule: ShapeRule, device: torch.device
) -> np.ndarray:
    """Translate one uint8 HWC image, padding (reflect) or resizing it to a size `rule` accepts."""
    h, w = image.shape[:2]
    x = to_tensor(image).unsqueeze(0).to(device)  # (1, C, H, W) in [-1, 1]
    th, tw = rule.nearest(h, w)
    if rule.fixed_size is not None:
        x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)
        y = F.interpolate(net(x), size=(h, w), mode="bilinear", align_corners=False)
    else:
        ph, pw = (-h) % rule.multiple_of, (-w) % rule.multiple_of
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        y = net(x)[:, :, :h, :w]
    return to_uint8(y[0].float().cpu())


def _mean_of(items: list[dict[str, Any]], key: str) -> float | None:
    """Mean of the finite values of `key` (identical images have infinite PSNR); None if absent."""
    values = [item[key] for item in items if key in item]
    finite = [v for v in values if math.isfinite(v)]
    if not values:
        return None
    return float(np.mean(finite)) if finite else math.inf


def _strict_json(value: Any) -> Any:
    """JSON has no Infinity: non-finite numbers become null (identical images)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict_json(v) for v in value]
    return value


def evaluate(
    checkpoint: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    max_images: int = 0,
    grid_images: int = 4,
) -> dict[str, Any]:
    """Translate testA/testB with a checkpoint's generators and report quality.

    For each direction: PSNR/SSIM of the output against `truth/<direction>/` (when the
    dataset has it), the same for the untranslated input (the identity baseline), and
    the PSNR of the cycle reconstruction against the input. Writes eval.json and
    eval_grid.png (input | output | truth rows) into `out_dir` when given.
    """
    data_root = Path(data_root)
    torch_device = torch.device(device)
    ckpt, networks = load_trained_networks(checkpoint)
    family = get_family(ckpt["family"])
    rule = family.shape_rule(options_from_dict(ckpt["family"], ckpt["config"].get("model", {})))
    nets = {d: networks[g].to(torch_device) for d, g in family.directions.items() if g in networks}
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "step": ckpt["step"],
        "data": str(data_root),
        "directions": {},
    }
    grid_rows: list[list[np.ndarray]] = []
    for direction, (folder, back) in _DIRECTIONS.items():
        if direction not in nets:
            continue
        files = list_images(data_root / folder)
        if max_images:
            files = files[:max_images]
        truth_dir = data_root / "truth" / direction
        rep = DirectionReport(images=len(files))
        for i, path in enumerate(files):
            real = np.asarray(load_rgb(path))
            fake = translate_image(nets[direction], real, rule, torch_device)
            item: dict[str, Any] = {"file": path.name}
            if back in nets:
                item["cycle_psnr"] = psnr(
                    translate_image(nets[back], fake, rule, torch_device), real
                )
            truth_path = truth_dir / path.relative_to(data_root / folder)
            truth = None
            if truth_path.is_file():
                truth = np.asarray(load_rgb(truth_path))
                if truth.shape != real.shape:
                    raise DataError(
                        f"{truth_path}: size {truth.shape} differs from {path} {real.shape}"
                    )
                item.update(
                    psnr=psnr(fake, truth),
                    ssim=ssim(fake, truth),
                    identity_psnr=psnr(real, truth),
                    identity_ssim=ssim(real, truth),
                )
            rep.per_image.append(item)
            if i < grid_images:
                grid_rows.append([real, fake] + ([truth] if truth is not None else []))
        rep.psnr, rep.ssim = _mean_of(rep.per_image, "psnr"), _mean_of(rep.per_image, "ssim")
        rep.identity_psnr = _mean_of(rep.per_image, "identity_psnr")
        rep.identity_ssim = _mean_of(rep.per_image, "identity_ssim")
        rep.cycle_psnr = _mean_of(rep.per_image, "cycle_psnr")
        report["directions"][direction] = rep.__dict__
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(
            json.dumps(_strict_json(report), indent=2, allow_nan=False) + "\n"
        )
        if grid_rows:
            Image.fromarray(image_grid(grid_rows)).save(out / "eval_grid.png")
        report["files"] = {"json": str(out / "eval.json"), "grid": str(out / "eval_grid.png")}
    return report


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable table of an evaluation report."""
    lines = [
        f"{'direction':<10}{'images':>7}{'PSNR':>9}{'SSIM':>8}{'id PSNR':>9}{'id SSIM':>9}{'cycle PSNR':>12}"
    ]

    def fmt(v: float | None, width: int, digits: int) -> str:
        return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"

    for direction, rep in report["directions"].items():
        lines.append(
            f"{direction:<10}{rep['images']:>7}{fmt(rep['psnr'], 9, 2)}{fmt(rep['ssim'], 8, 3)}"
            f"{fmt(rep['identity_psnr'], 9, 2)}{fmt(rep['identity_ssim'], 9, 3)}{fmt(rep['cycle_psnr'], 12, 2)}"
        )
    return "\n".join(lines)
