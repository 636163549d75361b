"""An exponential moving average (EMA) of a family's generators (``ema_decay``).

After every training step that changed a generator (an optimiser holding its parameters
took a step: StarGAN's ``g`` every ``n_critic``-th step, the two-step model's ``e`` in its
step 2 and, with ``loss.lambda_rec``, in step 1; nothing when a GradScaler skipped an
overflowing step), the average of that generator becomes ``d * average + (1 - d) *
current`` for every parameter and every floating-point buffer (batch-norm running
statistics: they belong to the weights they were gathered with, so they are averaged over
the same window); integer buffers (``num_batches_tracked``) are copied. During the run's
first ``ema_start`` steps the average copies the generator instead.

The average follows the networks the trainer was given (the unwrapped modules), whose
parameters DDP and ``torch.compile`` share, so every rank computes the same average
from the same weights. Checkpoints store it under ``"ema"`` as ``{network name:
state_dict}``; eval, export and serving load those weights in place of the raw ones
unless asked not to (see :func:`i2i.checkpoint.load_trained_networks`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


class GeneratorEMA:
    """The moving average of some networks, updated when an optimiser changed them.

    Args:
        networks: all of the run's networks, by name (the unwrapped modules).
        names: the ones to average (the family's ``generators`` present in ``networks``).
        decay: ``d`` in ``average = d * average + (1 - d) * current``; 0 <= d < 1.
        start: steps (counted as :meth:`update` is told) up to which the average copies.
    """

    def __init__(
        self,
        networks: Mapping[str, nn.Module],
        names: Sequence[str],
        decay: float,
        start: int = 0,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.start = int(start)
        self.networks = {name: networks[name] for name in names if name in networks}
        if not self.networks:
            raise ValueError(f"none of the networks {', '.join(names)} to average is present")
        self.averages: dict[str, dict[str, torch.Tensor]] = {}
        self.copy_all()
        self._owner = {id(p): n for n, net in self.networks.items() for p in net.parameters()}
        self._changed: set[str] = set()
        self._hooks: list[Any] = []

    def copy_all(self) -> None:
        """Set every average to its network's current weights."""
        self.averages = {
            name: {k: v.detach().clone() for k, v in net.state_dict().items()}
            for name, net in self.networks.items()
        }

    def watch(self, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """Note the averaged networks each of ``optimizers`` changes whenever it steps."""
        for optimizer in optimizers:
            owned = {
                self._owner[id(p)]
                for group in optimizer.param_groups
                for p in group["params"]
                if id(p) in self._owner
            }
            if owned:
                self._hooks.append(optimizer.register_step_post_hook(self._noter(owned)))

    def _noter(self, owned: set[str]) -> Any:
        def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            self._changed |= owned

        return hook

    def close(self) -> None:
        """Stop watching the optimisers."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    @torch.no_grad()
    def update(self, step: int) -> list[str]:
        """Fold in the networks an optimiser changed since the last call (``step``: the
        steps done so far); return their names."""
        changed = sorted(self._changed)
        self._changed.clear()
        for name in changed:
            self.fold(name, copy=step <= self.start)
        return changed

    @torch.no_grad()
    def fold(self, name: str, copy: bool = False) -> None:
        """``average = d * average + (1 - d) * current`` for network ``name`` (or a copy)."""
        current = self.networks[name].state_dict()
        averaged: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        for key, average in self.averages[name].items():
            value = current[key].detach()
            if copy or not average.is_floating_point():
                average.copy_(value)
            else:
                averaged.append(average)
                values.append(value)
        if averaged:
            torch._foreach_mul_(averaged, self.decay)
            torch._foreach_add_(averaged, values, alpha=1.0 - self.decay)

    @torch.no_grad()
    def adopt(self, name: str) -> None:
        """Put network ``name``'s average into the network itself (both then agree)."""
        self.networks[name].load_state_dict(self.averages[name])

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{network name: state_dict}`` of the averages (the checkpoint's ``"ema"``)."""
        return {name: dict(state) for name, state in self.averages.items()}

    def load_state_dict(self, state: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        """Take the averages of a checkpoint's ``"ema"``; ValueError if they do not fit."""
        missing = sorted(set(self.averages) - set(state))
        if missing:
            raise ValueError(f"the saved average lacks network(s) {', '.join(missing)}")
        for name, averages in self.averages.items():
            saved = state[name]
            if set(saved) != set(averages):
                raise ValueError(f"the saved average of {name!r} has other entries than it")
            for key, average in averages.items():
                if saved[key].shape != average.shape:
                    raise ValueError(
                        f"the saved average of {name}.{key} has shape {tuple(saved[key].shape)}, "
                        f"the network {tuple(average.shape)}"
                    )
                average.copy_(saved[key])


def optimizers_of(trainer: Any) -> list[torch.optim.Optimizer]:
    """Every optimiser a trainer holds: its ``optimizers`` and any other attribute that is
    one (the two-step model's encoder optimiser)."""
    found = list(trainer.optimizers.values())
    found += [
        v for v in vars(trainer).values() if isinstance(v, torch.optim.Optimizer) and v not in found
    ]
    return found


def for_run(
    cfg: Any,
    generators: Sequence[str],
    networks: Mapping[str, nn.Module],
    trainer: Any,
    checkpoint: Mapping[str, Any] | None,
) -> GeneratorEMA | None:
    """The run's average (None when ``cfg.ema_decay`` is 0), watching the trainer's
    optimisers; resumed from ``checkpoint["ema"]`` when it has one, else started from the
    networks as they are (a new run, or a run that turns EMA on when resuming)."""
    if not cfg.ema_decay:
        return None
    ema = GeneratorEMA(networks, generators, cfg.ema_decay, cfg.ema_start)
    ema.watch(optimizers_of(trainer))
    if checkpoint is not None:
        if "ema" in checkpoint:
            try:
                ema.load_state_dict(checkpoint["ema"])
            except ValueError as exc:
                raise ValueError(f"cannot resume the average of the generators: {exc}") from exc
        else:
            log.info("the checkpoint holds no average of the generators: it starts here")
    log.info(
        "averaging %s (ema_decay %g, copying up to step %d)",
        ", ".join(ema.networks),
        ema.decay,
        ema.start,
    )
    return ema
