"""Contract 1: the i2i checkpoint, one self-describing `.pt` file.

A checkpoint is a plain dict that `torch.load(path, weights_only=True)` reads: strings,
numbers, lists, dicts and tensors only, so loading never unpickles arbitrary objects.

    {
      "format": "i2i.checkpoint", "format_version": 1,
      "family": "cyclegan", "config": {...}, "domains": ["A", "B"],
      "step": int, "epoch": int,
      "networks": {name: state_dict}, "optimizers": {...}, "schedulers": {...},
      "training_state": {...}   # RNG states, image pools, data position (resume only)
    }

Writes are atomic: the payload goes to a temporary file in the same folder, is fsynced
and then renamed over the destination, so a crash mid-save leaves the previous file intact.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from i2i._files import fsync_dir

FORMAT = "i2i.checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "family", "config", "domains", "step", "networks")

_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, foreign or of an unknown version."""


def make_checkpoint(
    *,
    family: str,
    config: Mapping[str, Any],
    domains: list[str],
    networks: Mapping[str, Mapping[str, torch.Tensor]],
    step: int = 0,
    epoch: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """Assemble a checkpoint payload with the format tag and version filled in."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": family,
        "config": dict(config),
        "domains": list(domains),
        "step": int(step),
        "epoch": int(epoch),
        "networks": {name: dict(sd) for name, sd in networks.items()},
    }
    payload.update(extra)
    return payload


def save_checkpoint(payload: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write `payload` to `path` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(payload), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Read and validate a checkpoint; never unpickles anything but plain data and tensors.

    With `mmap`, tensor data is mapped rather than read: cheap when only the metadata
    (config, family, step) is wanted.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    validate_checkpoint(payload, source=str(path))
    return payload


def validate_checkpoint(payload: Any, source: str = "checkpoint") -> None:
    """Raise CheckpointError unless `payload` is an i2i checkpoint of a version we read."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{source}: not an i2i checkpoint (no format tag {FORMAT!r}); "
            "official CycleGAN generator files are converted with `i2i import cyclegan`"
        )
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: checkpoint format version {version!r} is not supported "
            f"(this i2i reads version {FORMAT_VERSION})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{source}: checkpoint lacks {', '.join(missing)}")


def load_trained_networks(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Any], dict[str, torch.nn.Module]]:
    """Read a checkpoint and rebuild the networks it holds, in eval mode (eval, export).

    Only the networks and the config's `model` section are needed, so imported official
    checkpoints (generators only, maybe one direction) load as well as training runs.
    """
    from i2i.models import get_family, options_from_dict

    checkpoint = load_checkpoint(path)
    try:
        family = get_family(checkpoint["family"])
    except KeyError as exc:
        raise CheckpointError(f"{path}: unknown model family {checkpoint['family']!r}") from exc
    try:
        options = options_from_dict(checkpoint["family"], checkpoint["config"].get("model", {}))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model options ({exc})") from exc
    if not any(n in checkpoint["networks"] for n in family.generators):
        raise CheckpointError(
            f"{path}: checkpoint holds none of the generators {', '.join(family.generators)}"
        )
    built = family.build(options)
    networks = {}
    for name, state in checkpoint["networks"].items():
        if name in built:
            try:
                built[name].load_state_dict(state)
            except RuntimeError as exc:
                raise CheckpointError(
                    f"{path}: network {name!r} does not match its config ({exc})"
                ) from exc
            networks[name] = built[name].eval()
    return checkpoint, networks


class CheckpointManager:
    """Keeps `step_<n>.pt` files (the last `keep_last`) and `latest.pt` in a run folder."""

    def __init__(self, folder: str | os.PathLike[str], keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError("keep_last must be at least 1")
        self.folder = Path(folder)
        self.keep_last = keep_last

    @property
    def latest_path(self) -> Path:
        return self.folder / "latest.pt"

    def step_paths(self) -> list[Path]:
        """The kept per-step checkpoints, oldest first."""
        found = []
        for p in self.folder.glob("step_*.pt"):
            m = _STEP_FILE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def save(self, payload: Mapping[str, Any]) -> Path:
        """Write `step_<n>.pt`, then `latest.pt`, then drop step files beyond `keep_last`."""
        step_path = save_checkpoint(payload, self.folder / f"step_{int(payload['step']):08d}.pt")
        # latest.pt is a full copy, not a link: it must survive pruning and copying of the run.
        save_checkpoint(payload, self.latest_path)
        for old in self.step_paths()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return step_path

    def find_latest(self) -> Path | None:
        """`latest.pt`, or the newest step file if latest is missing."""
        if self.latest_path.is_file():
            return self.latest_path
        steps = self.step_paths()
        return steps[-1] if steps else None
