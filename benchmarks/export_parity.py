"""Export parity per model family: each family's reference architecture, exported and checked.

For each family, the networks of its reference preset (configs/<family>.yaml) are built
from a seed, saved as an i2i checkpoint and exported by i2i's own export to FP32 and FP16
ONNX; the table is the export's own parity report (every artifact against its reference
on the export's fixed test inputs: FP32 ONNX Runtime against PyTorch, FP16 against FP32),
plus the style encoders of multimodal families. Untrained weights: the numbers show how
faithfully each graph computes the network, not how good a translation is. With
``--checkpoint FAMILY=PATH`` a trained checkpoint replaces the seeded one.

    python benchmarks/export_parity.py                       # every registered family
    python benchmarks/export_parity.py --families munit --checkpoint munit=runs/m/latest.pt
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from machine import describe, identity


def seeded_checkpoint(family: str, folder: Path, seed: int = 0) -> Path:
    """The family's reference networks from ``seed``, as an i2i checkpoint in ``folder``."""
    import torch

    from i2i.checkpoint import make_checkpoint, save_checkpoint
    from i2i.models import get_family, options_from_dict
    from i2i.training.config import load_config

    cfg = load_config(family)
    torch.manual_seed(seed)
    networks = get_family(family).build(options_from_dict(family, cfg.model))
    payload = make_checkpoint(
        family=family,
        config=cfg.to_dict(),
        domains=["A", "B"],
        networks={n: m.state_dict() for n, m in networks.items()},
        step=0,
    )
    return save_checkpoint(payload, folder / f"{family}.pt")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--families", help="comma-separated (default: every registered family)")
    p.add_argument(
        "--checkpoint", action="append", default=[], help="FAMILY=PATH: a trained checkpoint"
    )
    p.add_argument("--json", help="also write the machine and the manifests' parity here")
    args = p.parse_args()

    from i2i.export import export_checkpoint
    from i2i.models import list_families

    families = args.families.split(",") if args.families else list_families()
    given = dict(item.split("=", 1) for item in args.checkpoint)
    ident = identity({})
    print(describe(ident))
    print(
        "\n| family | weights | artifact | precision | vs | max diff (levels) | pixels > 1 level "
        "| PSNR (dB) |"
    )
    print("|---|---|---|---|---|---:|---:|---:|")
    record: dict[str, Any] = {"machine": ident, "families": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for family in families:
            checkpoint = (
                Path(given[family]) if family in given else seeded_checkpoint(family, folder)
            )
            weights = "trained" if family in given else "seeded"
            _, manifest = export_checkpoint(
                checkpoint, folder / "repository", family, formats=("onnx", "onnx-fp16")
            )
            record["families"][family] = manifest["artifacts"]
            for a in manifest["artifacts"]:
                q = a["parity"]
                psnr = "inf" if q.get("psnr") is None else f"{q['psnr']:.1f}"
                print(
                    f"| {family} | {weights} | {a['file']} | {a['precision']} | {q['reference']} "
                    f"| {q['max_abs_diff']} | {100 * q['fraction_over_1']:.3f}% | {psnr} |",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
