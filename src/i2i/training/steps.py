"""What every family's trainer does the same way: mixed precision, batches, optimiser steps."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from .config import TrainConfig


class StepHelpers:
    """Mixed into a trainer that has ``cfg``, ``device``, ``optimizers`` and ``scalers``."""

    cfg: TrainConfig
    device: torch.device
    optimizers: dict[str, torch.optim.Optimizer]
    scalers: dict[str, torch.amp.GradScaler]

    def make_scalers(self) -> dict[str, torch.amp.GradScaler]:
        """One GradScaler per optimiser, active under ``amp: fp16`` only."""
        fp16 = self.cfg.amp == "fp16"
        return {n: torch.amp.GradScaler(self.device.type, enabled=fp16) for n in self.optimizers}

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.cfg.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.cfg.amp == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _backward_and_step(self, name: str, loss: torch.Tensor) -> None:
        scaler = self.scalers[name]
        scaler.scale(loss).backward()
        scaler.step(self.optimizers[name])
        scaler.update()
