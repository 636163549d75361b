"""`i2i import cyclegan`: the reference's `*_net_G_A.pth` / `*_net_G_B.pth` → an i2i checkpoint.

The reference saves each generator's bare state dict. Its keys equal ours (i2i's
networks reproduce the reference's module structure), so conversion is: read the file
without unpickling objects, drop what the reference itself drops (`module.` prefixes,
InstanceNorm running statistics saved by PyTorch < 0.4), fill in the BatchNorm
`num_batches_tracked` counters that files saved before PyTorch 0.4.1 lack (as PyTorch's
own BatchNorm loading does: they only matter when training with momentum=None and are
not used to translate), check every key and shape
against the architecture the flags describe, and explain any mismatch in plain words.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from i2i._files import sha256_file
from i2i.checkpoint import make_checkpoint, save_checkpoint
from i2i.models import GENERATOR_ARCHS, CycleGANOptions, build_generator, get_family


class ImportError_(ValueError):
    """An official checkpoint does not match the architecture it is imported as."""


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a reference generator file as a flat {key: tensor} dict (weights_only)."""
    if not path.is_file():
        raise ImportError_(f"{path}: no such file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ImportError_(
            f"{path}: not a readable PyTorch state dict ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(raw, Mapping) and "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ImportError_(
            f"{path}: expected a generator state dict (a mapping of names to tensors)"
        )
    return {k.removeprefix("module."): v for k, v in raw.items()}


def _drop_instance_norm_stats(state: dict[str, torch.Tensor], net: nn.Module) -> list[str]:
    """Remove running_mean/var/num_batches_tracked of InstanceNorm layers (pre-0.4 files)."""
    modules = dict(net.named_modules())
    dropped = []
    for key in list(state):
        owner, _, leaf = key.rpartition(".")
        if leaf in ("running_mean", "running_var", "num_batches_tracked"):
            module = modules.get(owner)
            if isinstance(module, nn.InstanceNorm2d) and not module.track_running_stats:
                dropped.append(key)
                del state[key]
    return dropped


def _fill_num_batches_tracked(
    state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> list[str]:
    """Add a zero ``num_batches_tracked`` for each BatchNorm whose other statistics are there.

    Files saved before PyTorch 0.4.1 have running_mean/running_var but no counter; a
    BatchNorm missing its running_mean too is a real mismatch and is left to be reported.
    """
    filled = []
    for key in expected:
        owner, _, leaf = key.rpartition(".")
        if (
            leaf == "num_batches_tracked"
            and key not in state
            and f"{owner}.running_mean" in state
            and f"{owner}.running_var" in state
        ):
            state[key] = torch.zeros((), dtype=torch.long)
            filled.append(key)
    return filled


def _fits(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> bool:
    return set(state) == set(expected) and all(
        state[k].shape == expected[k].shape for k in expected
    )


def _diagnose(state: dict[str, torch.Tensor], opts: CycleGANOptions) -> list[str]:
    """The reference flags under which `state` would load, found by trying the alternatives.

    Networks are built on the meta device, so trying every architecture costs no memory.
    """
    first = state.get("model.1.weight", state.get("model.model.0.weight"))
    ngf = int(first.shape[0]) if first is not None else opts.ngf
    for net_g in GENERATOR_ARCHS:
        for norm in ("instance", "batch", "none"):
            for dropout in (False, True):
                candidate = replace(opts, netG=net_g, ngf=ngf, norm=norm, dropout=dropout)
                with torch.device("meta"):
                    net = build_generator(
                        net_g, opts.input_nc, opts.output_nc, ngf, norm, dropout, init_type="normal"
                    )
                expected = net.state_dict()
                trimmed = {k: v for k, v in state.items() if k in expected or not _is_stat(k)}
                _fill_num_batches_tracked(trimmed, expected)
                if _fits(trimmed, expected):
                    return _flags_that_differ(opts, candidate)
    return []


def _flags_that_differ(now: CycleGANOptions, fits: CycleGANOptions) -> list[str]:
    flags = []
    if fits.netG != now.netG:
        flags.append(f"--netG {fits.netG}")
    if fits.ngf != now.ngf:
        flags.append(f"--ngf {fits.ngf}")
    if fits.norm != now.norm:
        flags.append(f"--norm {fits.norm}")
    if fits.dropout != now.dropout:
        flags.append("--dropout" if fits.dropout else "--no-dropout")
    return flags


def _is_stat(key: str) -> bool:
    return key.rpartition(".")[2] in ("running_mean", "running_var", "num_batches_tracked")


def fit_state_dict(
    path: Path, net: nn.Module, opts: CycleGANOptions
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Read `path` and make it load into `net` exactly, or raise ImportError_ saying why.

    Returns the state dict, the stale InstanceNorm statistics dropped and the BatchNorm
    ``num_batches_tracked`` counters filled in with zero (files older than PyTorch 0.4.1).
    """
    original = read_state_dict(path)
    state = dict(original)
    dropped = _drop_instance_norm_stats(state, net)
    expected = net.state_dict()
    filled = _fill_num_batches_tracked(state, expected)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [k for k in set(state) & set(expected) if state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        hints = _diagnose(original, opts)
        details = []
        if missing:
            details.append(f"{len(missing)} missing key(s), e.g. {', '.join(missing[:3])}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:3])}")
        if wrong_shape:
            k = sorted(wrong_shape)[0]
            details.append(
                f"{len(wrong_shape)} key(s) of another shape, e.g. {k}: file "
                f"{tuple(state[k].shape)}, expected {tuple(expected[k].shape)}"
            )
        message = f"{path} does not fit --netG {opts.netG} --ngf {opts.ngf} --norm {opts.norm} "
        message += f"{'--dropout' if opts.dropout else '--no-dropout'}: " + "; ".join(details)
        if hints:
            message += ". The file fits with: " + " ".join(hints)
        else:
            message += (
                ". It matches no CycleGAN/pix2pix generator of the reference with these channels"
            )
        raise ImportError_(message)
    return {k: state[k].to(expected[k].dtype) for k in expected}, dropped, filled


def import_cyclegan(
    out: str | os.PathLike[str],
    g_a: str | os.PathLike[str] | None = None,
    g_b: str | os.PathLike[str] | None = None,
    options: CycleGANOptions | None = None,
) -> dict[str, Any]:
    """Convert reference generator files into one i2i checkpoint at `out`.

    Args:
        out: the checkpoint to write.
        g_a: the reference's G_A file (maps domain A to B), e.g. `latest_net_G_A.pth`, or a
            single-direction `latest_net_G.pth`.
        g_b: the reference's G_B file (B to A), optional.
        options: the architecture the files were trained with (the reference's flags).

    Returns a summary: directions imported, keys dropped (stale InstanceNorm statistics)
    and filled (zero BatchNorm ``num_batches_tracked`` of pre-0.4.1 files) per network,
    source hashes, output path.
    """
    if g_a is None and g_b is None:
        raise ImportError_("give at least one generator file (--g-a and/or --g-b)")
    opts = options or CycleGANOptions()
    family = get_family("cyclegan")
    networks = family.build(opts)
    sources = {"g_ab": g_a, "g_ba": g_b}
    converted: dict[str, dict[str, torch.Tensor]] = {}
    summary: dict[str, Any] = {
        "out": str(out),
        "directions": [],
        "dropped_keys": {},
        "filled_keys": {},
        "sources": {},
    }
    direction_of = {net: d for d, net in family.directions.items()}
    for name, source in sources.items():
        if source is None:
            continue
        path = Path(source)
        converted[name], dropped, filled = fit_state_dict(path, networks[name], opts)
        summary["directions"].append(direction_of[name])
        summary["dropped_keys"][name] = dropped
        summary["filled_keys"][name] = filled
        summary["sources"][name] = {"file": str(path), "sha256": sha256_file(path)}
    model_config = asdict(opts)
    config = {"family": "cyclegan", "model": model_config}
    payload = make_checkpoint(
        family="cyclegan",
        config=config,
        domains=["A", "B"],
        networks=converted,
        imported_from={
            "implementation": "junyanz/pytorch-CycleGAN-and-pix2pix",
            **summary["sources"],
        },
    )
    save_checkpoint(payload, out)
    return summary
