"""What a two-step model's translation can reach on a multi-domain sample (BENCHMARKS.md).

The two-step model translates x from domain s into t as ``g(e(x), t)``: all the picture
passes through the z_dim values of ``e(x)``. Two numbers bound what that can reach:

- ``same-label``: a checkpoint's reconstruction ``g(e(x), s)`` of each test image x of
  domain s against x itself (PSNR/SSIM, uint8 as exported). A translation into t is the
  same code regenerated with another label, so it cannot be more faithful to the picture
  than this (the grade aside).
- ``pca``: the best *linear* code of k values, the test images projected on the first k
  principal components of the training images (all domains) and back; an encoder and a
  generator trained for minutes do not reach an optimal linear code.

Usage:
    python benchmarks/twostep_bound.py --data DATA [--checkpoint RUN/latest.pt] [--k 32 100]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from i2i.checkpoint import load_trained_networks
from i2i.models import options_from_dict
from i2i.models.translators import _float_to_image, _image_to_float
from i2i.training.metrics import psnr, ssim


def _images(folder: Path) -> list[np.ndarray]:
    """The folder's PNGs as uint8 HWC RGB, sorted by name."""
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]


def pca_bound(data: Path, domains: list[str], k: int) -> dict[str, float]:
    """Mean PSNR/SSIM of the test images through the first k principal components."""
    train = np.stack([im for d in domains for im in _images(data / "train" / d)])
    flat = train.reshape(len(train), -1).astype(np.float64)
    mean = flat.mean(0)
    # The principal directions: right singular vectors of the centred training images.
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    basis = vt[:k]
    psnrs, ssims = [], []
    for d in domains:
        for im in _images(data / "test" / d):
            x = im.reshape(-1).astype(np.float64) - mean
            back = (basis.T @ (basis @ x) + mean).reshape(im.shape)
            rec = np.clip(np.rint(back), 0, 255).astype(np.uint8)
            psnrs.append(psnr(rec, im))
            ssims.append(ssim(rec, im))
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}


@torch.no_grad()
def same_label(checkpoint: Path, data: Path, ema: bool) -> dict[str, dict[str, float]]:
    """Per domain s: mean PSNR/SSIM of g(e(x), s) against x over test/<s>/."""
    ckpt, networks = load_trained_networks(checkpoint, ema=ema)
    if ckpt["family"] != "twostep":
        raise SystemExit(f"{checkpoint}: family {ckpt['family']!r}, expected twostep")
    options = options_from_dict("twostep", ckpt["config"].get("model", {}))
    g, e = networks["g"].eval(), networks["e"].eval()
    out: dict[str, dict[str, float]] = {}
    for index, domain in enumerate(options.domains):
        ims = _images(data / "test" / domain)
        x = _image_to_float(torch.from_numpy(np.stack(ims)), 3)
        label = torch.full((len(ims),), index, dtype=torch.int64)
        rec = _float_to_image(g(e(x), label)).numpy()
        out[domain] = {
            "psnr": float(np.mean([psnr(r, im) for r, im in zip(rec, ims, strict=True)])),
            "ssim": float(np.mean([ssim(r, im) for r, im in zip(rec, ims, strict=True)])),
        }
    out["mean"] = {key: float(np.mean([v[key] for v in out.values()])) for key in ("psnr", "ssim")}
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the bounds as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a labelled sample dataset")
    parser.add_argument("--checkpoint", type=Path, help="a two-step checkpoint (same-label)")
    parser.add_argument("--k", type=int, nargs="*", default=[32, 100], help="PCA code sizes")
    parser.add_argument("--no-ema", action="store_true", help="the raw weights, not the EMA")
    args = parser.parse_args(argv)
    domains = json.loads((args.data / "dataset.json").read_text(encoding="utf-8"))["domains"]
    report: dict[str, object] = {"pca": {k: pca_bound(args.data, domains, k) for k in args.k}}
    if args.checkpoint is not None:
        report["same_label"] = same_label(args.checkpoint, args.data, not args.no_ema)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
