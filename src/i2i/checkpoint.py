"""Contract 1: the i2i checkpoint, one self-describing `.pt` file.

A checkpoint is a plain dict that `torch.load(path, weights_only=True)` reads: strings,
numbers, lists, dicts and tensors only, so loading never unpickles arbitrary objects.

    {
      "format": "i2i.checkpoint", "format_version": 1,
      "family": "cyclegan", "config": {...}, "domains": ["A", "B"],
      "step": int, "epoch": int,
      "networks": {name: state_dict}, "optimizers": {...}, "schedulers": {...},
      "training_state": {...},  # RNG states, image pools, data position (resume only)
      "ema": {name: state_dict}  # runs with ema_decay > 0: the generators' moving average
    }

Writes are atomic: the payload goes to a temporary file in the same folder, is fsynced
and then renamed over the destination, so a crash mid-save leaves the previous file intact.
A process killed mid-save leaves its temporary file (`.latest.pt.<random>.tmp`); a run
folder's leftovers are removed when training starts or resumes there.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from i2i._files import atomic_write, remove_temporary_files

log = logging.getLogger(__name__)

FORMAT = "i2i.checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "family", "config", "domains", "step", "networks")

_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
# The files a run folder's CheckpointManager writes atomically (their temporary files are
# `.<name>.<random>.tmp`).
_RUN_FILES = r"latest\.pt|step_\d+\.pt|config\.json"


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
    return atomic_write(path, lambda f: torch.save(dict(payload), f))


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
    size = path.stat().st_size
    if size == 0:
        # torch's own messages for an empty file are an empty EOFError or, with mmap, advice
        # about _use_new_zipfile_serialization: neither says what is wrong.
        raise CheckpointError(f"{path}: the file is empty (0 bytes), not a checkpoint")
    with path.open("rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # what torch.save writes
    try:
        # mmap needs torch.save's zip format; for anything else a plain load says what it is.
        payload = torch.load(
            path, map_location=map_location, weights_only=True, mmap=mmap and is_zip
        )
    except Exception as exc:  # torch raises many types for truncated or foreign files
        # A zip that fails other than by the weights-only refusal is itself broken.
        if is_zip and not isinstance(exc, pickle.UnpicklingError):
            # torch's first sentence says what failed; the rest is generic advice.
            detail = str(exc).split(". ")[0].strip()
            raise CheckpointError(
                f"{path}: not a readable checkpoint, truncated or damaged ({size:,} bytes; "
                f"{detail})"
            ) from exc
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


def weights_used(checkpoint: Mapping[str, Any], ema: bool = True) -> str:
    """Which weights :func:`load_trained_networks` gives for `checkpoint`: "ema" (the
    generators' moving average, when it has one and `ema` is true) or "raw"."""
    return "ema" if ema and checkpoint.get("ema") else "raw"


def load_trained_networks(
    path: str | os.PathLike[str], ema: bool = True
) -> tuple[dict[str, Any], dict[str, torch.nn.Module]]:
    """Read a checkpoint and rebuild the networks it holds, in eval mode (eval, export).

    Only the networks and the config's `model` section are needed, so imported official
    checkpoints (generators only, maybe one direction) load as well as training runs.
    A checkpoint with a moving average of the generators (``"ema"``) gives the averaged
    generators unless `ema` is False (see :func:`weights_used`); which is logged.
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
    weights = weights_used(checkpoint, ema)
    states = dict(checkpoint["networks"])
    if weights == "ema":
        averaged = checkpoint["ema"]
        if not isinstance(averaged, Mapping) or not all(n in states for n in averaged):
            raise CheckpointError(
                f"{path}: its 'ema' names networks the checkpoint does not hold "
                "(load it with ema=False / --no-ema for the raw weights)"
            )
        states.update(averaged)
        log.info("%s: using the moving average (EMA) of %s", path, ", ".join(averaged))
    elif checkpoint.get("ema"):
        log.info("%s: using the raw weights; the moving average (EMA) is not used", path)
    for name, state in states.items():
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
    """A run folder's saved state: `config.json`, `latest.pt` and the last `keep_last`
    `step_<n>.pt` files."""

    def __init__(self, folder: str | os.PathLike[str], keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError("keep_last must be at least 1")
        self.folder = Path(folder)
        self.keep_last = keep_last

    @property
    def latest_path(self) -> Path:
        return self.folder / "latest.pt"

    @property
    def config_path(self) -> Path:
        return self.folder / "config.json"

    def step_paths(self) -> list[Path]:
        """The kept per-step checkpoints, oldest first."""
        found = []
        for p in self.folder.glob("step_*.pt"):
            m = _STEP_FILE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def has_checkpoints(self) -> bool:
        """Whether the folder holds `latest.pt` or a `step_<n>.pt`, readable or not."""
        return self.latest_path.exists() or bool(self.step_paths())

    def save(self, payload: Mapping[str, Any]) -> Path:
        """Write `step_<n>.pt`, then `latest.pt`, then drop step files beyond `keep_last`."""
        step_path = save_checkpoint(payload, self.folder / f"step_{int(payload['step']):08d}.pt")
        # latest.pt is a full copy, not a link: it must survive pruning and copying of the run.
        save_checkpoint(payload, self.latest_path)
        for old in self.step_paths()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return step_path

    def load_latest(
        self, map_location: str = "cpu", mmap: bool = False, warn: bool = True
    ) -> tuple[Path, dict[str, Any]] | None:
        """The newest intact checkpoint and its payload: `latest.pt`, else the newest
        `step_<n>.pt` that loads and validates; None if the folder holds no checkpoint.

        Falling back past an unusable `latest.pt` (or step file) logs a warning naming the
        file used and why the others were rejected, unless `warn` is False (a caller that
        only peeks before the one that uses it).

        Raises:
            CheckpointError: checkpoint files exist but none of them is intact.
        """
        candidates = [self.latest_path] if self.latest_path.exists() else []
        candidates += reversed(self.step_paths())
        rejected: list[str] = []
        for path in candidates:
            try:
                payload = load_checkpoint(path, map_location=map_location, mmap=mmap)
            except CheckpointError as exc:
                rejected.append(f"{path.name}: {str(exc).removeprefix(f'{path}: ')}")
                continue
            if rejected and warn:
                log.warning(
                    f"{self.folder}: using {path.name} (step {payload['step']}), the newest "
                    f"intact checkpoint; rejected {'; '.join(rejected)}"
                )
            return path, payload
        if rejected:
            raise CheckpointError(
                f"{self.folder}: no intact checkpoint; tried {'; '.join(rejected)}"
            )
        return None

    def find_latest(self) -> Path | None:
        """The newest intact checkpoint's path (see `load_latest`; only metadata is read)."""
        found = self.load_latest(mmap=True)
        return found[0] if found else None

    def read_config(self) -> dict[str, Any] | None:
        """The run's `config.json`, or None if the folder has none.

        Raises:
            CheckpointError: the file is not a JSON object.
        """
        try:
            text = self.config_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{self.config_path}: not valid JSON ({exc})") from exc
        if not isinstance(config, dict):
            raise CheckpointError(f"{self.config_path}: not a JSON object")
        return config

    def write_config(self, config: Mapping[str, Any]) -> Path:
        """Write the run's `config.json` atomically."""
        text = json.dumps(dict(config), indent=2) + "\n"
        return atomic_write(self.config_path, lambda f: f.write(text.encode("utf-8")))

    def remove_temporary_files(self) -> list[tuple[Path, int]]:
        """Delete what saves killed midway left (`.latest.pt.<random>.tmp` and the like for
        `step_<n>.pt` and `config.json`); logs and returns the files removed and their sizes.

        Call it only while no other process saves into this folder.
        """
        removed = remove_temporary_files(self.folder, _RUN_FILES)
        if removed:
            log.info(
                "%s: removed %d temporary file(s) of interrupted saves (%s bytes): %s",
                self.folder,
                len(removed),
                f"{sum(size for _, size in removed):,}",
                ", ".join(p.name for p, _ in removed),
            )
        return removed
