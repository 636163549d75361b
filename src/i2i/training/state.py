"""What an exact resume and a clean stop need: RNG states, the loss log, signal handling."""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed

log = logging.getLogger(__name__)


def rng_state(device: torch.device) -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    np_state: tuple[Any, ...] = tuple(np.random.get_state())
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npy["key"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def truncate_loss_log(path: Path, step: int) -> None:
    """Drop records past `step` (written after the checkpoint a resume starts from)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [ln for ln in lines if ln.strip() and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")


class GracefulStop:
    """SIGINT/SIGTERM ask the loop to stop after the current step and save a checkpoint.

    Stopping between steps keeps the saved state exact; a second signal aborts at once.
    Under DDP the ranks agree (an all-reduce of the flag) so they stop at the same step.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning(
            "stopping after this step (signal %d); signal again to abort without saving", signum
        )

    def agreed(self, dist: distributed.DistInfo) -> bool:
        return distributed.any_rank(self.requested, dist)
