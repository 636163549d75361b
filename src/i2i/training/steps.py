"""What every family's trainer does the same way: mixed precision, batches, optimiser steps."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from .config import ConfigError, TrainConfig

# Devices on which ``amp: fp16`` (float16 autocast with gradient scaling) is supported.
FP16_DEVICES = ("cuda",)


def check_amp(amp: str, device: torch.device) -> None:
    """Refuse ``amp: fp16`` on a device without CUDA's float16 path, naming what to use instead.

    bf16 needs no gradient scaling and runs wherever autocast does (CPU included); fp16 is
    only supported with GradScaler on CUDA GPUs, as issue 12 settles.
    """
    if amp == "fp16" and device.type not in FP16_DEVICES:
        raise ConfigError(
            f"amp: fp16 (float16 with gradient scaling) needs a CUDA GPU, but this run trains "
            f"on {device.type}; use amp: bf16 (--amp bf16) there, or amp: off"
        )


class StepHelpers:
    """Mixed into a trainer that has ``cfg``, ``device``, ``optimizers`` and ``scalers``."""

    cfg: TrainConfig
    device: torch.device
    optimizers: dict[str, torch.optim.Optimizer]
    scalers: dict[str, torch.amp.GradScaler]

    def make_scalers(self) -> dict[str, torch.amp.GradScaler]:
        """One GradScaler per optimiser, active under ``amp: fp16`` only.

        ``train`` refuses fp16 off CUDA (:func:`check_amp`); a trainer built directly may
        still use CPU scalers, which tests of the scaling arithmetic rely on.
        """
        fp16 = self.cfg.amp == "fp16"
        return {n: torch.amp.GradScaler(self.device.type, enabled=fp16) for n in self.optimizers}

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward passes' autocast: float16 (CUDA) or bfloat16 (CUDA or CPU), or none.

        Parameters, optimiser state and the losses stay float32 (losses cast their inputs).
        """
        if self.cfg.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.cfg.amp == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _backward_and_step(
        self, name: str, loss: torch.Tensor, also: Sequence[torch.optim.Optimizer] = ()
    ) -> None:
        """Backward ``loss`` through ``name``'s scaler, then step its optimiser and ``also``
        (optimisers of networks that minimise the same loss) with that one scaler."""
        scaler = self.scalers[name]
        scaler.scale(loss).backward()
        for optimizer in (self.optimizers[name], *also):
            scaler.step(optimizer)
        scaler.update()
