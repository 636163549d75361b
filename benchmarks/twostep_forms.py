"""One two-step checkpoint's translations read in several forms, scored against the truth.

`i2i eval` scores the form the checkpoint was trained for. This script takes the same
networks and translates the multi-domain test split (``test/<domain>/``, equal names across
domains) in each form, with the source domain from e's domain head where it has one and
the true source otherwise, and prints the 12-pair (K·(K-1)-pair) means of PSNR and SSIM:

- ``direct``: g(e(x), t), the paper's;
- ``residual``: x + g(e(x), t) - g(e(x), s), clamped;
- ``shift``: x plus the mean of that change per channel (a colour shift per image);
- ``colour``: i2i's ``model.translation: colour`` (a gain and offset per channel, fitted
  from g(e(x), s) to g(e(x), t), ridge toward gain 1);
- ``affine``: a full C x (C+1) affine colour map fitted the same way (least squares);
- ``identity``: x itself.

    python benchmarks/twostep_forms.py --data G --checkpoint R/latest.pt [--no-ema]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from i2i.checkpoint import load_trained_networks
from i2i.models import options_from_dict
from i2i.models.translators import _float_to_image, _image_to_float
from i2i.models.twostep import colour_change
from i2i.training.metrics import psnr, ssim


def load_domain(root: Path, domain: str) -> torch.Tensor:
    """test/<domain>/*.png as float [N, 3, S, S] in [-1, 1], scaled as the translators do."""
    files = sorted((root / "test" / domain).glob("*.png"))
    if not files:
        raise SystemExit(f"{root / 'test' / domain}: no test images")
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    return _image_to_float(torch.from_numpy(pixels), 3)


def affine_map(x: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """x through the least-squares affine colour map from ``source`` to ``target``."""
    flat = source.flatten(2).transpose(1, 2)  # [N, P, C]
    ones = torch.ones_like(flat[..., :1])
    design = torch.cat((flat, ones), dim=2)
    normal = design.transpose(1, 2) @ design + 1e-3 * torch.eye(design.shape[2])
    coeffs = torch.linalg.solve(normal, design.transpose(1, 2) @ target.flatten(2).transpose(1, 2))
    xs = torch.cat((x.flatten(2).transpose(1, 2), ones), dim=2)
    return (xs @ coeffs).transpose(1, 2).reshape(x.shape).clamp(-1, 1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Pixels rounded as the exported translators round them."""
    return _float_to_image(x).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="a labelled dataset root")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a two-step checkpoint")
    parser.add_argument("--no-ema", action="store_true", help="the raw weights, not the average")
    args = parser.parse_args()
    payload, networks = load_trained_networks(args.checkpoint, ema=not args.no_ema)
    if payload["family"] != "twostep":
        raise SystemExit(f"{args.checkpoint} is a {payload['family']!r} checkpoint")
    options = options_from_dict("twostep", payload["config"]["model"])
    g, e = networks["g"].eval(), networks["e"].eval()
    domains = list(options.domains)
    names = {d: [f.name for f in sorted((args.data / "test" / d).glob("*.png"))] for d in domains}
    if any(names[d] != names[domains[0]] for d in domains):
        raise SystemExit(f"{args.data}/test: the domains' test images must have equal names")
    images = {d: load_domain(args.data, d) for d in domains}
    scores: dict[str, list[tuple[float, float]]] = {}
    with torch.no_grad():
        for si, source_domain in enumerate(domains):
            x = images[source_domain]
            n = x.shape[0]
            if e.classes is not None:
                z, logits = e(x, True)
                source = logits.argmax(1)
            else:
                z, source = e(x), torch.full((n,), si)
            from_source = g(z, source)
            for ti, target_domain in enumerate(domains):
                if ti == si:
                    continue
                to_target = g(z, torch.full((n,), ti))
                change = to_target - from_source
                forms = {
                    "direct": to_target,
                    "residual": (x + change).clamp(-1, 1),
                    "shift": (x + change.mean(dim=(2, 3), keepdim=True)).clamp(-1, 1),
                    "colour": colour_change(x, from_source, to_target),
                    "affine": affine_map(x, from_source, to_target),
                    "identity": x,
                }
                truth = to_uint8(images[target_domain])
                for name, out in forms.items():
                    pixels = to_uint8(out)
                    pair = (
                        float(np.mean([psnr(a, b) for a, b in zip(pixels, truth, strict=True)])),
                        float(np.mean([ssim(a, b) for a, b in zip(pixels, truth, strict=True)])),
                    )
                    scores.setdefault(name, []).append(pair)
    trained = options.translation
    print(f"{args.checkpoint} (trained for translation: {trained}), {len(domains)} domains")
    print("| form | PSNR | SSIM |")
    print("|---|---:|---:|")
    for name, pairs in scores.items():
        mean = np.mean(pairs, axis=0)
        print(f"| {name} | {mean[0]:.2f} | {mean[1]:.3f} |")


if __name__ == "__main__":
    main()
