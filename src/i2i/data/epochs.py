"""The epoch a dataset's random crops and pairings are drawn for, shared with its workers."""

from __future__ import annotations

import torch


class EpochSeeded:
    """Mixin: ``epoch`` and ``set_epoch``, with the epoch in shared memory.

    A dataset draws item ``i``'s randomness from ``(seed, epoch, i)``. The epoch lives in a
    one-element shared tensor, so ``set_epoch`` reaches DataLoader workers that already
    exist (``persistent_workers=True``); call it before iterating, as with
    ``DistributedSampler.set_epoch``. Subclasses call :meth:`_init_epoch` in ``__init__``.
    """

    _epoch: torch.Tensor

    def _init_epoch(self) -> None:
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch whose crops, flips and pairings ``__getitem__`` produces."""
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (part of every item's random seed); call before each epoch."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch.fill_(int(epoch))
