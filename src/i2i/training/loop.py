"""The shared training loop: devices, data order, schedules, checkpoints, logging, resume.

Data order is a pure function of (seed, epoch): each epoch's permutation is drawn from
its own generator and every item's augmentation from (seed, epoch, index), so a resumed
run reads exactly the batches the uninterrupted run would have read. Together with the
saved RNG states, optimisers, schedulers and image pools, resuming is exact.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from i2i.checkpoint import CheckpointManager, make_checkpoint
from i2i.data import (
    DataError,
    LabelledDataset,
    TransformOptions,
    UnalignedDataset,
    labelled_domains,
)
from i2i.models import get_family, options_from_dict

from . import distributed, ema
from .config import ConfigError, TrainConfig, resume_differences
from .monitor import TrainingMonitor, visuals_grid
from .state import GracefulStop, rng_state, set_rng_state, truncate_loss_log
from .steps import check_amp

log = logging.getLogger(__name__)

# family -> "module:class" of its trainer, imported when a run of that family starts.
TRAINERS: dict[str, str] = {
    "cyclegan": "i2i.training.cyclegan:CycleGANTrainer",
    "pix2pix": "i2i.training.pix2pix:Pix2PixTrainer",
    "unit": "i2i.training.unit:UNITTrainer",
    "munit": "i2i.training.munit:MUNITTrainer",
    "twostep": "i2i.training.twostep:TwoStepTrainer",
    "stargan": "i2i.training.stargan:StarGANTrainer",
}


def trainer_class(family: str) -> Any:
    """The trainer class of ``family``; ConfigError if the family has none.

    A trainer class takes ``(cfg, networks, device, wrap=None)`` and has ``optimizers``
    (name -> optimiser; one scheduler each), ``step(batch) -> losses``, ``last_visuals``,
    ``visual_rows()``, ``state_dict()`` and ``load_state_dict()``. It may define
    ``build_dataset(cfg, options, transform)`` (a static method); the default reads
    unaligned ``trainA``/``trainB`` folders. A class attribute ``paired = True`` says the
    family trains on aligned pairs (the demo then writes the aligned sample layout).

    A trainer may also define ``plan_steps(data_steps) -> (fed, total)``: given the steps
    the epochs hold, how many of them read batches (at most ``data_steps``) and how many
    steps the run takes in all. Steps past ``fed`` call ``step(None)``: they take no data
    (the two-step model's encoder step, which trains on the generator's own samples).
    Without it, every step reads a batch and the epochs decide the length.
    """
    try:
        target = TRAINERS[family]
    except KeyError:
        raise ConfigError(
            f"family {family!r} has no trainer; trainable: {', '.join(sorted(TRAINERS))}"
        ) from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def unaligned_dataset(cfg: TrainConfig, options: Any, transform: TransformOptions) -> Any:
    """The default training data: unaligned trainA/ and trainB/ folders."""
    return UnalignedDataset(
        cfg.data.root,
        phase="train",
        transform=transform,
        channels_a=options.input_nc,
        channels_b=options.output_nc,
        serial=cfg.data.serial,
        seed=cfg.seed,
        skip_bad_images=cfg.data.skip_bad_images,
    )


def labelled_dataset(cfg: TrainConfig, options: Any, transform: TransformOptions) -> Any:
    """The training data of the multi-domain families: images labelled by domain folder,
    in the model's domain order (see :mod:`i2i.data.labelled`)."""
    return LabelledDataset(
        cfg.data.root,
        phase="train",
        transform=transform,
        channels=options.input_nc,
        domains=list(options.domains),
        seed=cfg.seed,
        skip_bad_images=cfg.data.skip_bad_images,
    )


def fill_domains(cfg: TrainConfig, family: Any) -> None:
    """A multi-domain config without ``model.domains`` gets the data's domain names, so the
    saved config (and every checkpoint) records the order the networks were built for."""
    if family.multi_domain and not cfg.model.get("domains"):
        try:
            cfg.model["domains"] = labelled_domains(cfg.data.root)
        except DataError as exc:
            raise ConfigError(f"model.domains is not set and the data names none: {exc}") from exc
        log.info("domains from %s: %s", cfg.data.root, ", ".join(cfg.model["domains"]))


class ResumeError(ValueError):
    """The run folder cannot be resumed with the requested configuration."""


@dataclass
class RunSummary:
    out_dir: Path
    step: int
    epoch: int
    seconds: float
    steps_per_second: float
    last_losses: dict[str, float]
    checkpoint: Path | None
    rank: int = 0
    stopped_early: bool = False


def linear_decay(n_epochs: int, n_epochs_decay: int) -> Callable[[int], float]:
    """The reference's 'linear' policy: constant for n_epochs, then linearly toward zero.

    `e` counts finished epochs (0-based), so epoch k (1-based) trains with factor
    1 - max(0, k - n_epochs) / (n_epochs_decay + 1).
    """

    def rule(e: int) -> float:
        return 1.0 - max(0, e + 1 - n_epochs) / float(n_epochs_decay + 1)

    return rule


def step_decay(step_size: int, gamma: float) -> Callable[[int], float]:
    """The UNIT/MUNIT 'step' policy: ``gamma ** (steps // step_size)``, stepped every step."""

    def rule(steps: int) -> float:
        return float(gamma ** (steps // step_size))

    return rule


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but no CUDA GPU is available")
    return device


def epoch_batches(
    n_items: int, batch_size: int, seed: int, epoch: int, serial: bool, rank: int, world: int
) -> list[list[int]]:
    """This rank's batches of item indices for one epoch (equal count on every rank)."""
    order = (
        np.arange(n_items) if serial else np.random.default_rng([seed, epoch]).permutation(n_items)
    )
    per_rank = math.ceil(n_items / world)
    order = np.concatenate([order, order[: per_rank * world - n_items]])
    mine = order[rank::world].tolist()
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


def train(cfg: TrainConfig, out_dir: str | os.PathLike[str], resume: bool = False) -> RunSummary:
    """Train `cfg` into `out_dir`; with `resume`, continue from `out_dir`'s latest checkpoint."""
    out_dir = Path(out_dir)
    try:
        family = get_family(cfg.family)
    except KeyError as exc:
        raise ConfigError(f"family: {exc.args[0]}") from exc
    fill_domains(cfg, family)
    manager = CheckpointManager(out_dir, keep_last=cfg.keep_last)
    checkpoint = None
    if resume:
        found = manager.load_latest()
        if found is None:
            raise ResumeError(f"{out_dir}: no checkpoint to resume from (latest.pt or step_*.pt)")
        path, checkpoint = found
        _check_resumable(path, checkpoint, cfg, manager.read_config(), manager.config_path)
    elif manager.has_checkpoints():
        raise ResumeError(
            f"{out_dir} already holds a run; pass --resume to continue it or choose another --out"
        )

    dist = distributed.setup()
    if dist.is_main:  # the checks passed: this process now owns the folder
        manager.remove_temporary_files()
    device = distributed.device_for(dist, pick_device(cfg.device))
    check_amp(cfg.amp, device)  # fp16 is CUDA only: say so before building anything
    try:
        options = options_from_dict(cfg.family, cfg.model)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"model: {exc.args[0] if exc.args else exc}") from exc

    torch.manual_seed(cfg.seed)
    networks = {name: net.to(device) for name, net in family.build(options).items()}
    if cfg.channels_last:
        for net in networks.values():
            net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    for net in networks.values():
        net.train()
    distributed.prepare_networks(networks, dist)  # sync batch norm, global dropout masks

    def wrap(module: nn.Module) -> nn.Module:
        module = distributed.wrap(module, dist)
        return torch.compile(module) if cfg.compile else module  # type: ignore[return-value]

    trainer_type = trainer_class(cfg.family)
    trainer = trainer_type(cfg, networks, device, wrap=wrap)
    per_step = cfg.lr_policy == "step"
    rule = (
        step_decay(cfg.lr_step_size, cfg.lr_gamma)
        if per_step
        else linear_decay(cfg.n_epochs, cfg.n_epochs_decay)
    )
    schedulers = {
        name: torch.optim.lr_scheduler.LambdaLR(opt, rule)
        for name, opt in trainer.optimizers.items()
    }

    try:
        transform = TransformOptions(
            preprocess=cfg.data.preprocess,
            load_size=cfg.data.load_size,
            crop_size=cfg.data.crop_size,
            no_flip=cfg.data.no_flip,
            rotate=cfg.data.rotate,
            zoom=cfg.data.zoom,
        )
    except ValueError as exc:
        raise ConfigError(f"data: {exc}") from exc
    if transform.preprocess in ("crop", "resize_and_crop", "scale_width_and_crop"):
        try:  # square crops of crop_size: the generators must take that size
            family.shape_rule(options).check(transform.crop_size, transform.crop_size)
        except ValueError as exc:
            raise ConfigError(
                f"data.crop_size={transform.crop_size} does not fit the {cfg.family} model "
                f"({exc}); change data.crop_size or the model options"
            ) from exc
    dataset = getattr(trainer_type, "build_dataset", unaligned_dataset)(cfg, options, transform)
    dataset[0]  # fail now, not in a worker mid-epoch, if the settings don't fit the images
    n_epochs_total = cfg.n_epochs + cfg.n_epochs_decay
    steps_per_epoch = len(
        epoch_batches(
            len(dataset), cfg.batch_size, cfg.seed, 1, cfg.data.serial, dist.rank, dist.world_size
        )
    )
    total_steps = steps_per_epoch * n_epochs_total
    fed = total_steps  # steps that read a batch; the rest call trainer.step(None)
    plan = getattr(trainer, "plan_steps", None)
    if plan is not None:
        fed, total_steps = plan(total_steps)
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    fed = min(fed, total_steps)

    step, epoch, batch_index = 0, 1, 0
    if checkpoint is not None:
        for name, net in networks.items():
            net.load_state_dict(checkpoint["networks"][name])
        for name, opt in trainer.optimizers.items():
            opt.load_state_dict(checkpoint["optimizers"][name])
        for name, sched in schedulers.items():
            sched.load_state_dict(checkpoint["schedulers"][name])
        state = checkpoint["training_state"]
        trainer.load_state_dict(state["trainer"])
        # Every rank's random streams are the same (see distributed.rank_slice): any rank's
        # state continues them, whatever the number of processes now.
        set_rng_state(state["rng"][min(dist.rank, len(state["rng"]) - 1)], device)
        step, epoch, batch_index = checkpoint["step"], checkpoint["epoch"], state["batch_index"]
        batch_index = _resumed_batch_index(
            batch_index,
            old_global=int(checkpoint["config"]["batch_size"]) * int(state["world_size"]),
            new_global=cfg.batch_size * dist.world_size,
            old_world=int(state["world_size"]),
            new_world=dist.world_size,
        )
        if dist.is_main:
            truncate_loss_log(out_dir / "losses.jsonl", step)
        log.info("resuming %s at step %d (epoch %d, batch %d)", out_dir, step, epoch, batch_index)
    average = ema.for_run(cfg, family.generators, networks, trainer, checkpoint)
    trainer.average = average  # a trainer may adopt the average (twostep freezes g so)

    monitor = TrainingMonitor(out_dir, tensorboard=cfg.tensorboard) if dist.is_main else None
    if dist.is_main:
        manager.write_config(cfg.to_dict())

    def save() -> Path | None:
        rng_states = distributed.gather_objects(rng_state(device), dist)
        if not dist.is_main:
            return None
        payload = make_checkpoint(
            family=cfg.family,
            config=cfg.to_dict(),
            domains=list(family.domains_for(options)),
            networks={n: m.state_dict() for n, m in networks.items()},
            step=step,
            epoch=epoch,
            optimizers={n: o.state_dict() for n, o in trainer.optimizers.items()},
            schedulers={n: s.state_dict() for n, s in schedulers.items()},
            training_state={
                "trainer": trainer.state_dict(),
                "rng": rng_states,
                "batch_index": batch_index,
                "world_size": dist.world_size,
            },
            **({"ema": average.state_dict()} if average is not None else {}),
        )
        return manager.save(payload)

    progress = None
    if dist.is_main and cfg.progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=total_steps, initial=step, unit="it", dynamic_ncols=True)

    start_time, start_step = time.perf_counter(), step
    losses: dict[str, float] = {}
    last_saved: Path | None = None
    stop = GracefulStop()

    def report() -> None:
        """Average the generators the step changed, log it and advance per-step schedules."""
        if average is not None:
            average.update(step)
        if monitor is not None:
            if step % cfg.log_every == 0 or step == total_steps:
                lrs = {n: o.param_groups[0]["lr"] for n, o in trainer.optimizers.items()}
                monitor.log_losses(step, epoch, losses, lrs)
            if step % cfg.sample_every == 0:
                monitor.log_samples(step, _grid(trainer))
        if progress is not None:
            progress.update(1)
            progress.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
        if per_step:  # after logging, so the log shows the rate this step used
            for sched in schedulers.values():
                sched.step()

    halted = False
    try:
        with stop:
            while epoch <= n_epochs_total and step < total_steps:
                dataset.set_epoch(epoch)
                batches = epoch_batches(
                    len(dataset),
                    cfg.batch_size,
                    cfg.seed,
                    epoch,
                    cfg.data.serial,
                    dist.rank,
                    dist.world_size,
                )
                if step >= fed and batch_index < len(batches):
                    break  # the rest of the run reads no data (see plan_steps)
                loader = DataLoader(
                    dataset,
                    batch_sampler=batches[batch_index:],
                    num_workers=cfg.data.num_workers,
                    pin_memory=device.type == "cuda",
                    # Its own generator: creating an iterator must not draw from the global
                    # RNG, or a resumed run would diverge from an uninterrupted one.
                    generator=torch.Generator().manual_seed(cfg.seed),
                )
                for batch in loader:
                    losses = trainer.step(batch)
                    step += 1
                    batch_index += 1
                    report()
                    if step >= total_steps:
                        break
                    if stop.agreed(dist):
                        halted = True
                        break
                    if step % cfg.save_every == 0:
                        last_saved = save()
                    if step >= fed and batch_index < len(batches):
                        break  # the data part of the run ends mid-epoch
                else:  # the epoch is complete
                    if not per_step:
                        for sched in schedulers.values():
                            sched.step()
                    epoch, batch_index = epoch + 1, 0
                    continue
                break
            # The steps that take no data (see trainer_class), after the epochs. Only a
            # trainer that plans them has them: for the others, epochs that end early (a
            # resume on more data changes the steps per epoch) end the run, as they always did.
            while plan is not None and not halted and step >= fed and step < total_steps:
                losses = trainer.step(None)
                step += 1
                report()
                if step >= total_steps or stop.agreed(dist):
                    break
                if step % cfg.save_every == 0:
                    last_saved = save()
    except BaseException as exc:
        if monitor is not None:
            monitor.close()  # keep what was logged; the last checkpoint stays as it was
        distributed.cleanup(dist)
        if isinstance(exc, DataError):
            # A worker's error arrives wrapped with its traceback; keep what a person needs.
            message = str(exc).strip().splitlines()[-1]
            message = message.removeprefix("i2i.data.folders.DataError: ")
            raise DataError(message.removeprefix("DataError: ")) from None
        raise
    finally:
        if progress is not None:
            progress.close()
        if average is not None:
            average.close()  # the steps are over: unhook the optimisers
    if stop.requested:
        log.warning("stopped by a signal at step %d; saving a checkpoint to resume from", step)
    last_saved = save() or last_saved
    if monitor is not None:
        if trainer.last_visuals:
            monitor.log_samples(step, _grid(trainer))
        monitor.close()
    distributed.cleanup(dist)
    seconds = time.perf_counter() - start_time
    done = step - start_step
    return RunSummary(
        out_dir=out_dir,
        step=step,
        epoch=epoch,
        seconds=seconds,
        steps_per_second=done / seconds if seconds > 0 else 0.0,
        last_losses=losses,
        checkpoint=manager.latest_path if last_saved else None,
        rank=dist.rank,
        stopped_early=stop.requested,
    )


def _check_resumable(
    path: Path,
    checkpoint: dict[str, Any],
    cfg: TrainConfig,
    run_config: dict[str, Any] | None,
    run_config_path: Path,
) -> None:
    """Raise ResumeError unless `checkpoint` belongs to the run and `cfg` continues it.

    The checkpoint must compute what the run folder's config.json says (a checkpoint copied
    in from another run does not) and what `cfg` asks for; keys in RESUME_MAY_CHANGE may
    differ in both comparisons.
    """
    if run_config is None:
        log.warning(
            "%s is missing: cannot check that %s belongs to this run", run_config_path, path
        )
    else:
        diffs = resume_differences(run_config, checkpoint["config"])
        # A resume on another number of processes may have rewritten config.json's
        # batch_size (keeping the global batch) and died before its first checkpoint; the
        # comparison with `cfg` below checks batch_size by the global-batch rule.
        diffs.pop("batch_size", None)
        if diffs:
            detail = "; ".join(
                f"{k}: {run_config_path.name} {run!r}, checkpoint {saved!r}"
                for k, (run, saved) in diffs.items()
            )
            raise ResumeError(
                f"{path} does not belong to the run in {path.parent}: its config differs from "
                f"{run_config_path} ({detail}). Was it copied from "
                "another run? Put back this run's own checkpoint, or resume the other run "
                "in its own folder."
            )
    if checkpoint["family"] != cfg.family:
        raise ResumeError(
            f"{path} is a {checkpoint['family']!r} run; the config asks for {cfg.family!r}"
        )
    if "training_state" not in checkpoint:
        raise ResumeError(f"{path} holds no training state (an imported model?); cannot resume")
    diffs = resume_differences(checkpoint["config"], cfg.to_dict())
    if "batch_size" in diffs:
        # Another number of processes may keep the global batch with another batch_size.
        old, new = diffs["batch_size"]
        old_world = int(checkpoint["training_state"].get("world_size", 1))
        if old * old_world == new * distributed.requested_world_size():
            del diffs["batch_size"]
    if diffs:
        detail = "; ".join(
            f"{k}: checkpoint {old!r}, now {new!r}" for k, (old, new) in diffs.items()
        )
        raise ResumeError(
            f"cannot resume {path}: the configuration differs ({detail}). Resume with the "
            "run's own config (omit --config), or start a new run folder."
        )


def _resumed_batch_index(
    batch_index: int, old_global: int, new_global: int, old_world: int, new_world: int
) -> int:
    """The batch of the current epoch where a resumed run continues: the same items when
    the global batch is unchanged (the continuation is then exact, even with another
    number of processes), else as near as whole batches allow (with a warning)."""
    if old_global == new_global:
        if old_world != new_world:
            log.info(
                "resuming a %d-process run with %d processes and the same global batch (%d): "
                "the continuation is exact up to float rounding",
                old_world,
                new_world,
                new_global,
            )
        return batch_index
    items = batch_index * old_global
    resumed = items // new_global
    log.warning(
        "resuming a run whose global batch was %d (%d process(es)) with a global batch of %d "
        "(%d process(es)): the batches differ, so the continuation is not the run's exact "
        "one; it goes on from item %d of the epoch (%d read before)",
        old_global,
        old_world,
        new_global,
        new_world,
        resumed * new_global,
        items,
    )
    return resumed


def _grid(trainer: Any) -> np.ndarray:
    return visuals_grid(trainer.last_visuals, list(trainer.visual_rows()))
