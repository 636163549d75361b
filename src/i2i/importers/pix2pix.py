"""`i2i import pix2pix`: the reference's `latest_net_G.pth` → an i2i checkpoint.

The reference saves the pix2pix generator's bare state dict; its keys equal those of i2i's
``g``. Reading, checking and the plain-words diagnosis of wrong flags are the CycleGAN
importer's (the generators are the same networks); only the defaults differ: pix2pix
trains a U-Net-256 with batch norm and dropout. The discriminator is not needed to
translate and is not imported.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from i2i._files import sha256_file
from i2i.checkpoint import make_checkpoint, save_checkpoint
from i2i.models import CycleGANOptions, Pix2PixOptions, get_family
from i2i.models.pix2pix import pix2pix_direction

from .cyclegan import fit_state_dict


def import_pix2pix(
    out: str | os.PathLike[str],
    g: str | os.PathLike[str],
    options: Pix2PixOptions | None = None,
) -> dict[str, Any]:
    """Convert the reference's pix2pix generator file into an i2i checkpoint at `out`.

    Args:
        out: the checkpoint to write.
        g: the reference's generator file, e.g. `latest_net_G.pth`.
        options: the architecture and direction it was trained with (the reference's
            flags; ``input_nc`` is the generator's input, domain B under ``BtoA``).

    Returns a summary: the direction imported, keys dropped (stale InstanceNorm
    statistics) and filled (zero BatchNorm ``num_batches_tracked`` of files saved before
    PyTorch 0.4.1), source hash, output path.
    """
    opts = options or Pix2PixOptions()
    path = Path(g)
    generator = get_family("pix2pix").build(opts)["g"]
    # The generator's flags, in the type the shared diagnosis speaks.
    g_opts = CycleGANOptions(
        input_nc=opts.input_nc,
        output_nc=opts.output_nc,
        ngf=opts.ngf,
        netG=opts.netG,
        norm=opts.norm,
        dropout=opts.dropout,
        init_type=opts.init_type,
        init_gain=opts.init_gain,
    )
    state, dropped, filled = fit_state_dict(path, generator, g_opts)
    source = {"file": str(path), "sha256": sha256_file(path)}
    payload = make_checkpoint(
        family="pix2pix",
        config={"family": "pix2pix", "model": asdict(opts)},
        domains=["A", "B"],
        networks={"g": state},
        imported_from={"implementation": "junyanz/pytorch-CycleGAN-and-pix2pix", "g": source},
    )
    save_checkpoint(payload, out)
    return {
        "out": str(out),
        "direction": pix2pix_direction(opts),
        "dropped_keys": dropped,
        "filled_keys": filled,
        "source": source,
    }
