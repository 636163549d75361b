"""What a two-step model's translation can reach on a multi-domain sample (BENCHMARKS.md).

The two-step model translates x from domain s into t as ``g(e(x), t)``: all the picture
passes through the z_dim values of ``e(x)``. Two numbers bound what that can reach:

- ``same-label``: a checkpoint's reconstruction ``g(e(x), s)`` of each test image x of
  domain s against x itself (PSNR/SSIM, uint8 as exported). A translation into t is the
  same code regenerated with another label, so it cannot be more faithful to the picture
  than this (the grade aside).
- ``inverted``: the same with the best z for each image, found by gradient descent on
  ``|g(z, s) - x|^2`` (z = tanh(w), Adam, ``--invert-steps``) instead of ``e(x)``: what
  any encoder could reach with this generator, the bound the generator's range sets.
- ``pca``: the best *linear* code of k values, the test images projected on the first k
  principal components of the training images (all domains) and back; an encoder and a
  generator trained for minutes do not reach an optimal linear code.

Usage:
    python benchmarks/twostep_bound.py --data DATA [--checkpoint RUN/latest.pt
        [--invert-steps 300]] [--k 32 100]
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


def _scores(rec: torch.Tensor, ims: list[np.ndarray]) -> dict[str, float]:
    """Mean PSNR/SSIM of float images rec [N, C, H, W] in [-1, 1] against uint8 ims."""
    out = _float_to_image(rec.detach()).numpy()
    return {
        "psnr": float(np.mean([psnr(r, im) for r, im in zip(out, ims, strict=True)])),
        "ssim": float(np.mean([ssim(r, im) for r, im in zip(out, ims, strict=True)])),
    }


def _inverted(g: torch.nn.Module, x: torch.Tensor, label: torch.Tensor, steps: int) -> torch.Tensor:
    """g(z*, label) for the z* in (-1, 1) that fits x best (Adam on tanh-parametrised z,
    started at 0); the bound of any encoder for this generator."""
    for p in g.parameters():
        p.requires_grad_(False)
    w = torch.zeros(x.shape[0], g.z_dim, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((g(torch.tanh(w), label) - x) ** 2).mean(dim=(1, 2, 3)).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return g(torch.tanh(w), label)


def same_label(
    checkpoint: Path, data: Path, ema: bool, invert_steps: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Per domain s: mean PSNR/SSIM of g(e(x), s) (and of g(z*, s)) against x over
    test/<s>/."""
    ckpt, networks = load_trained_networks(checkpoint, ema=ema)
    if ckpt["family"] != "twostep":
        raise SystemExit(f"{checkpoint}: family {ckpt['family']!r}, expected twostep")
    options = options_from_dict("twostep", ckpt["config"].get("model", {}))
    g, e = networks["g"].eval(), networks["e"].eval()
    kinds = ("encoder", "inverted") if invert_steps else ("encoder",)
    out: dict[str, dict[str, dict[str, float]]] = {kind: {} for kind in kinds}
    for index, domain in enumerate(options.domains):
        ims = _images(data / "test" / domain)
        x = _image_to_float(torch.from_numpy(np.stack(ims)), 3)
        label = torch.full((len(ims),), index, dtype=torch.int64)
        with torch.no_grad():
            out["encoder"][domain] = _scores(g(e(x), label), ims)
        if invert_steps:
            out["inverted"][domain] = _scores(_inverted(g, x, label, invert_steps), ims)
    for kind in kinds:
        per = list(out[kind].values())
        out[kind]["mean"] = {k: float(np.mean([v[k] for v in per])) for k in ("psnr", "ssim")}
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the bounds as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a labelled sample dataset")
    parser.add_argument("--checkpoint", type=Path, help="a two-step checkpoint (same-label)")
    parser.add_argument("--k", type=int, nargs="*", default=[32, 100], help="PCA code sizes")
    parser.add_argument(
        "--invert-steps", type=int, default=0, help="also fit z per image (Adam steps)"
    )
    parser.add_argument("--no-ema", action="store_true", help="the raw weights, not the EMA")
    args = parser.parse_args(argv)
    domains = json.loads((args.data / "dataset.json").read_text(encoding="utf-8"))["domains"]
    report: dict[str, object] = {"pca": {k: pca_bound(args.data, domains, k) for k in args.k}}
    if args.checkpoint is not None:
        report["same_label"] = same_label(
            args.checkpoint, args.data, not args.no_ema, args.invert_steps
        )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
