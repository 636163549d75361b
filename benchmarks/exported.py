"""A seeded, untrained CycleGAN exported to an ONNX model repository, for the benchmarks.

Serving benchmarks need a model of a given size, not a trained one: the weights do not
change the work a generator does. `export_untrained` builds the networks from a seed,
saves them as an i2i checkpoint and exports it with i2i's own export, so the served files
are what `i2i export` writes. torch and i2i are imported inside, so a script that only
imports this module (or the load generator in PyTriton's venv) does not need them.
"""

from __future__ import annotations

from pathlib import Path


def export_untrained(
    folder: Path,
    name: str,
    *,
    ngf: int,
    ndf: int = 4,
    net: str = "resnet_9blocks",
    seed: int = 0,
) -> Path:
    """Export a seeded, untrained CycleGAN as FP32 ONNX model `name`; the repository folder."""
    import torch

    from i2i.checkpoint import make_checkpoint, save_checkpoint
    from i2i.export import export_checkpoint
    from i2i.models import create_networks

    options = {"ngf": ngf, "ndf": ndf, "netG": net}
    torch.manual_seed(seed)
    nets = create_networks("cyclegan", options)
    payload = make_checkpoint(
        family="cyclegan",
        config={"family": "cyclegan", "model": options},
        domains=["A", "B"],
        networks={n: m.state_dict() for n, m in nets.items()},
        step=1,
    )
    checkpoint = save_checkpoint(payload, Path(folder) / f"{name}.pt")
    repository = Path(folder) / "repository"
    export_checkpoint(checkpoint, repository, name, formats=["onnx"])
    return repository
