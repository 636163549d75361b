"""The loaded models: a backend and a dynamic batcher per model version and direction.

Loading reads each manifest, picks a backend (`backends.load_backend`), warms it as its
runtime needs (`warmup_plan`) and builds the batcher whose `execute` runs that backend. A
direction is found by (model, version, direction); anything not loaded is NotFound with
what is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from i2i.repository import RepositoryError, list_models, read_manifest, version_folder
from i2i.serving.backends import Backend, BackendError, Hardware, load_backend
from i2i.serving.backends.conditional import (
    ConditionalBackend,
    TargetBackend,
    load_conditional_backend,
)
from i2i.serving.backends.style import StyleEncoder, load_style_encoder
from i2i.serving.batcher import BatchObserver, DynamicBatcher
from i2i.serving.config import ModelSelection, ServerConfig
from i2i.serving.errors import InvalidArgument, NotFound
from i2i.shapes import ShapeRule

log = logging.getLogger(__name__)

# The metrics label of a multi-domain model's shared batcher (its batches mix directions).
CONDITIONAL_LABEL = "conditional"
# A multi-domain model's directions are "to_<domain>" (i2i.models.registry's names; serving
# does not import i2i.models, which needs torch).
TARGET_PREFIX = "to_"

Work = tuple[np.ndarray, "np.ndarray | None"]  # (H, W, C) pixels, (k, S) style or None


# The image side of the minimal warm-up: big enough that every convolution runs on a
# feature map of a few cells (a ResNet generator's is 1/4 of the side), small enough to
# cost tens of milliseconds with a ResNet-9 of 64 filters on a 2-core CPU.
MINIMAL_WARMUP_SIZE = 64
# Backends whose runtime needs one small run before serving (its first run allocates and
# starts its thread pool; its kernels do not depend on the image size). Every other
# backend, and any backend not named here, gets the full warm-up: TensorRT, CUDA and cuDNN
# choose kernels and algorithms per input shape and initialise lazily.
MINIMAL_WARMUP_BACKENDS = frozenset({"onnxruntime-cpu", "pytorch-cpu"})


class LoadError(RuntimeError):
    """A model could not be loaded; the server does not start."""


@dataclass(frozen=True)
class Warmup:
    """The warm-up one direction gets (or got): a plan, an image side and batch sizes."""

    plan: str  # "minimal" or "full"
    size: int  # images are size x size
    batches: tuple[int, ...]

    def describe(self) -> str:
        """E.g. "minimal warm-up at 64x64, batch 1"."""
        which = "batch" if len(self.batches) == 1 else "batches"
        listed = ", ".join(map(str, self.batches))
        return f"{self.plan} warm-up at {self.size}x{self.size}, {which} {listed}"


def warmup_plan(backend_name: str, choice: str) -> str:
    """The warm-up plan for a backend: `choice` ("minimal", "full"), or under "auto" what
    the backend's runtime needs (minimal on the CPU, full on GPUs and anything unknown)."""
    if choice in ("minimal", "full"):
        return choice
    if choice != "auto":
        raise ValueError(f"warm-up {choice!r}: choose auto, minimal or full")
    return "minimal" if backend_name in MINIMAL_WARMUP_BACKENDS else "full"


def plan_warmup(
    plan: str,
    rule: ShapeRule,
    *,
    warmup_size: int,
    max_batch: int,
    size_range: tuple[tuple[int, int], tuple[int, int]] | None = None,
) -> Warmup:
    """What a plan runs for one direction: full warms every batch size dynamic batching
    forms at `warmup_size`, minimal one batch of 1 at MINIMAL_WARMUP_SIZE; the side is
    fitted to the shape rule (a fixed size wins, else rounded down to a multiple, at least
    the smallest) and to an engine's profile (`size_range`)."""
    wanted = MINIMAL_WARMUP_SIZE if plan == "minimal" else warmup_size
    if rule.fixed_size is not None:
        size = rule.fixed_size
    else:
        size = max(rule.smallest, wanted // rule.multiple_of * rule.multiple_of)
    if size_range is not None:  # an engine's profile: warm inside it
        (low, _), (high, _) = size_range
        size = min(max(size, low), high)
    batches = (1,) if plan == "minimal" else tuple(_warmup_batches(max_batch))
    return Warmup(plan, size, batches)


def batch_runner(backend: Backend) -> Callable[[Hashable, list[Any]], list[np.ndarray]]:
    """The batcher's `execute`: stack the requests' images, run once, split the outputs."""

    def execute(key: Hashable, works: list[Any]) -> list[np.ndarray]:
        counts = [1 if work[1] is None else len(work[1]) for work in works]
        batch = np.stack(
            [work[0] for work, k in zip(works, counts, strict=True) for _ in range(k)]
        )  # (N, H, W, C_in)
        styles = [work[1] for work in works if work[1] is not None]
        style = np.concatenate(styles) if styles else None  # (N, S)
        outputs = backend.run(batch, style)  # (N, H, W, C_out)
        bounds = np.cumsum([0, *counts])
        return [outputs[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    return execute


def conditional_runner(
    backend: ConditionalBackend,
) -> Callable[[Hashable, list[Any]], list[np.ndarray]]:
    """The `execute` of a multi-domain model's shared batcher: works are (pixels, None,
    target index); one run of the conditional graph translates each into its own target."""

    def execute(key: Hashable, works: list[Any]) -> list[np.ndarray]:
        batch = np.stack([work[0] for work in works])  # (N, H, W, C_in)
        domains = np.array([work[2] for work in works], dtype=np.int64)  # (N,)
        outputs = backend.run_targets(batch, domains)
        return [outputs[i : i + 1] for i in range(len(works))]

    return execute


@dataclass
class LoadedDirection:
    """One direction of one model version, ready to take requests.

    `batcher` is None only for translation without a server (`LocalTranslator`).
    `style_encoder` computes a reference image's style code (None: the version has none).
    """

    model: str
    version: int
    name: str
    family: str
    backend: Backend
    max_batch: int
    batcher: DynamicBatcher | None = field(default=None, repr=False)
    warmup: Warmup | None = None  # what warmed it (None: not warmed, e.g. LocalTranslator)
    warmup_s: float = 0.0  # how long that took
    style_encoder: StyleEncoder | None = field(default=None, repr=False)
    # Multi-domain models: the domain this direction translates into, and its index in the
    # model's domains when the direction runs the shared conditional graph (else None).
    target_domain: str | None = None
    domain_index: int | None = None

    def close(self) -> None:
        """Release the backend and the style encoder."""
        self.backend.close()
        if self.style_encoder is not None:
            self.style_encoder.close()

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version} {self.name}"

    @property
    def in_channels(self) -> int:
        return self.backend.in_channels

    @property
    def out_channels(self) -> int:
        return self.backend.out_channels

    @property
    def style_size(self) -> int:
        return self.backend.style_size


@dataclass
class LoadedModel:
    name: str
    version: int
    manifest: dict[str, Any]
    directions: dict[str, LoadedDirection]
    # Multi-domain models whose directions run the conditional graph: one batcher for all.
    shared_batches: bool = False

    @property
    def domains(self) -> list[str]:
        return list(self.manifest["domains"])

    @property
    def multi_domain(self) -> bool:
        """Whether the directions are targets (``to_<domain>`` with a target_domain)."""
        specs = self.manifest["directions"].values()
        return bool(specs) and all(s.get("target_domain") is not None for s in specs)


class ModelStore:
    """Loads the configured models and finds them by name, version and direction."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        observer_for: Callable[[str, str], BatchObserver | None] | None = None,
        hardware: Hardware | None = None,
    ) -> None:
        self.config = config
        self.models: dict[tuple[str, int], LoadedModel] = {}
        self.latest: dict[str, int] = {}
        self._observer_for = observer_for or (lambda model, direction: None)
        self._hardware = hardware
        self.stop_loading = threading.Event()  # set by a shutdown that comes while loading

    def selections(self) -> list[ModelSelection]:
        """What to load: the --model flags, or every model of the repository."""
        if self.config.models:
            return list(self.config.models)
        try:
            found = list_models(self.config.repository)
        except RepositoryError as exc:
            raise LoadError(str(exc)) from None
        if not found:
            raise LoadError(
                f"the repository {self.config.repository} holds no model: export one with "
                f"i2i-export, or point --repository at the right folder"
            )
        return [ModelSelection(name) for name in sorted(found)]

    def load(self, on_loaded: Callable[[LoadedDirection, float], None] | None = None) -> None:
        """Load, warm and batch every selected model (blocking; raises LoadError).

        The models appear all at once at the end, so lookups never see half a store. If
        `stop_loading` is set meanwhile, what was loaded is closed and nothing appears.
        """
        hardware = self._hardware or Hardware.detect(self.config.device_id)
        models: dict[tuple[str, int], LoadedModel] = {}
        try:
            for selection in self.selections():
                self._load_model(selection, hardware, models, on_loaded)
        except BaseException:
            _close_all(models)
            raise
        if self.stop_loading.is_set():
            _close_all(models)
            return
        latest: dict[str, int] = {}
        for name, version in models:
            latest[name] = max(version, latest.get(name, 0))
        # latest first: a lookup that finds a model in `models` finds its latest version.
        self.latest = latest
        self.models = models

    def _load_model(
        self,
        selection: ModelSelection,
        hardware: Hardware,
        models: dict[tuple[str, int], LoadedModel],
        on_loaded: Callable[[LoadedDirection, float], None] | None,
    ) -> None:
        try:
            manifest = read_manifest(self.config.repository, selection.name, selection.version)
        except RepositoryError as exc:
            raise LoadError(str(exc)) from None
        name, version = manifest["name"], manifest["version"]
        folder = version_folder(self.config.repository, name, version)
        directions: dict[str, LoadedDirection] = {}
        model = models[(name, version)] = LoadedModel(name, version, manifest, directions)
        shared = self._load_conditional(folder, manifest, hardware)
        model.shared_batches = shared is not None
        for direction in manifest["directions"]:
            if self.stop_loading.is_set():
                if shared is not None and not directions:
                    shared[0].close()
                return
            start = time.monotonic()
            if shared is not None:
                loaded = self._target_direction(manifest, direction, *shared)
            else:
                loaded = self._load_direction(folder, manifest, direction, hardware)
            loaded.target_domain = manifest["directions"][direction].get("target_domain")
            seconds = time.monotonic() - start
            log.info(
                "loaded %s with %s (%s, %s) in %.2f s, of which %s: %.2f s",
                loaded.label,
                loaded.backend.name,
                loaded.backend.artifact,
                loaded.backend.precision,
                seconds,
                loaded.warmup.describe() if loaded.warmup else "no warm-up",
                loaded.warmup_s,
            )
            if on_loaded is not None:
                on_loaded(loaded, seconds)
            directions[direction] = loaded

    def _load_conditional(
        self, folder: Path, manifest: dict[str, Any], hardware: Hardware
    ) -> tuple[ConditionalBackend, DynamicBatcher, Warmup, float] | None:
        """A multi-domain version's conditional graph, warmed, and the one batcher all its
        directions share; None where it does not serve (see `load_conditional_backend`)."""
        config = self.config
        label = f"{manifest['name']}:{manifest['version']}"
        try:
            backend = load_conditional_backend(
                folder,
                manifest,
                choice=config.backend,
                precision=config.precision,
                hardware=hardware,
                device_id=config.device_id,
                threads=config.threads,
            )
        except BackendError as exc:
            raise LoadError(f"{label} conditional graph: {exc}") from None
        if backend is None:
            return None
        max_batch = config.max_batch
        warmup = plan_warmup(
            warmup_plan(backend.name, config.warmup),
            backend.shape_rule,
            warmup_size=config.warmup_size,
            max_batch=max_batch,
        )
        start = time.monotonic()
        try:
            backend.warmup(warmup.size, warmup.size, warmup.batches)
        except Exception as exc:
            backend.close()
            raise LoadError(
                f"{label} conditional graph: {warmup.describe()} failed on {backend.name}: {exc}"
            ) from exc
        warmup_s = time.monotonic() - start
        batcher = DynamicBatcher(
            conditional_runner(backend),
            max_batch=max_batch,
            max_delay_s=config.max_delay_ms / 1000.0,
            max_queue=config.max_queue,
            max_cost=config.max_batch_pixels or None,
            instances=config.instances,
            observer=self._observer_for(manifest["name"], CONDITIONAL_LABEL),
            name=f"{label}:{CONDITIONAL_LABEL}",
        )
        log.info(
            "%s: every target runs the conditional graph %s (%s, %s) in shared batches",
            label,
            backend.artifact,
            backend.name,
            backend.precision,
        )
        return backend, batcher, warmup, warmup_s

    def _target_direction(
        self,
        manifest: dict[str, Any],
        direction: str,
        backend: ConditionalBackend,
        batcher: DynamicBatcher,
        warmup: Warmup,
        warmup_s: float,
    ) -> LoadedDirection:
        """A direction of a multi-domain model that runs the shared conditional graph."""
        index = manifest["directions"][direction]["domain_index"]
        return LoadedDirection(
            model=manifest["name"],
            version=manifest["version"],
            name=direction,
            family=manifest["family"],
            backend=TargetBackend(backend, index),
            max_batch=self.config.max_batch,
            batcher=batcher,
            warmup=warmup,
            warmup_s=warmup_s,
            domain_index=index,
        )

    def _load_direction(
        self, folder: Path, manifest: dict[str, Any], direction: str, hardware: Hardware
    ) -> LoadedDirection:
        config = self.config
        try:
            backend = load_backend(
                folder,
                manifest,
                direction,
                choice=config.backend,
                precision=config.precision,
                hardware=hardware,
                device_id=config.device_id,
                threads=config.threads,
            )
        except BackendError as exc:
            raise LoadError(
                f"{manifest['name']}:{manifest['version']} {direction}: {exc}"
            ) from None
        try:
            style_encoder = load_style_encoder(
                folder,
                manifest,
                direction,
                backend,
                hardware=hardware,
                device_id=config.device_id,
                threads=config.threads,
            )
        except BackendError as exc:
            backend.close()
            raise LoadError(
                f"{manifest['name']}:{manifest['version']} {direction}: style encoder: {exc}"
            ) from None
        if style_encoder is not None:
            try:
                style_encoder.warmup()
            except Exception as exc:  # the runtime's own error types: the model cannot serve
                backend.close()
                style_encoder.close()
                raise LoadError(
                    f"{manifest['name']}:{manifest['version']} {direction}: the style "
                    f"encoder's warm-up failed on {style_encoder.name}: {exc}"
                ) from exc
        max_batch = min(config.max_batch, backend.max_batch or config.max_batch)
        warmup = plan_warmup(
            warmup_plan(backend.name, config.warmup),
            backend.shape_rule,
            warmup_size=config.warmup_size,
            max_batch=max_batch,
            size_range=backend.size_range,
        )
        start = time.monotonic()
        try:
            backend.warmup(warmup.size, warmup.size, warmup.batches)
        except Exception as exc:
            backend.close()
            if style_encoder is not None:
                style_encoder.close()
            raise LoadError(
                f"{manifest['name']}:{manifest['version']} {direction}: {warmup.describe()} "
                f"failed on {backend.name}: {exc}"
            ) from exc
        warmup_s = time.monotonic() - start
        batcher = DynamicBatcher(
            batch_runner(backend),
            max_batch=max_batch,
            max_delay_s=config.max_delay_ms / 1000.0,
            max_queue=config.max_queue,
            max_cost=config.max_batch_pixels or None,  # a request's cost is its pixels
            instances=config.instances,
            observer=self._observer_for(manifest["name"], direction),
            name=f"{manifest['name']}:{manifest['version']}:{direction}",
        )
        return LoadedDirection(
            model=manifest["name"],
            version=manifest["version"],
            name=direction,
            family=manifest["family"],
            backend=backend,
            max_batch=max_batch,
            batcher=batcher,
            warmup=warmup,
            warmup_s=warmup_s,
            style_encoder=style_encoder,
        )

    def directions(self) -> list[LoadedDirection]:
        return [d for m in self.models.values() for d in m.directions.values()]

    def batchers(self) -> list[DynamicBatcher]:
        """Every batcher once (a multi-domain model's directions may share one)."""
        found: dict[int, DynamicBatcher] = {}
        for direction in self.directions():
            assert direction.batcher is not None
            found.setdefault(id(direction.batcher), direction.batcher)
        return list(found.values())

    async def start(self) -> None:
        for batcher in self.batchers():
            await batcher.start()

    async def stop(self, drain: bool = True) -> None:
        """Stop every batcher (answering what they accepted when `drain`), then the backends."""
        for batcher in self.batchers():
            await batcher.stop(drain=drain)
        for direction in self.directions():
            direction.close()

    def model(self, name: str, version: int | None) -> LoadedModel:
        """A loaded model version; version None or 0 means the latest loaded."""
        if name not in self.latest:
            loaded = ", ".join(sorted(self.latest)) or "none"
            raise NotFound(f"model {name!r} is not loaded on this server; loaded: {loaded}")
        version = version or self.latest[name]
        found = self.models.get((name, version))
        if found is None:
            have = ", ".join(str(v) for n, v in sorted(self.models) if n == name)
            raise NotFound(
                f"version {version} of model {name!r} is not loaded on this server; loaded "
                f"versions: {have}"
            )
        return found

    def direction(
        self, name: str, version: int | None, direction: str, target_domain: str = ""
    ) -> LoadedDirection:
        """The loaded direction a request names: by `direction`, or for a multi-domain model
        by `target_domain` (direction ``to_<target_domain>``); both given must agree.

        Raises:
            NotFound: no such model, version, direction or domain (the message lists what
                there is).
            InvalidArgument: neither is given, or `direction` and `target_domain` disagree.
        """
        model = self.model(name, version)
        if target_domain:
            if target_domain not in model.domains or not model.multi_domain:
                raise NotFound(_no_domain(model, target_domain))
            wanted = TARGET_PREFIX + target_domain
            if direction and direction != wanted:
                raise InvalidArgument(
                    f"direction {direction!r} and target_domain {target_domain!r} name different "
                    f"targets: set one of them, or both to the same target ({wanted!r})"
                )
            direction = wanted
        if not direction:
            raise InvalidArgument(
                "direction is empty: name one (GetModel lists them), or a target_domain for a "
                "multi-domain model"
            )
        found = model.directions.get(direction)
        if found is None:
            if model.multi_domain and direction.startswith(TARGET_PREFIX):
                raise NotFound(_no_domain(model, direction[len(TARGET_PREFIX) :]))
            raise NotFound(
                f"model {name!r} version {model.version} has no direction {direction!r}; its "
                f"directions: {', '.join(model.directions)}"
            )
        return found


def _no_domain(model: LoadedModel, domain: str) -> str:
    """NOT_FOUND's message for a target domain a model does not have."""
    if not model.multi_domain:
        return (
            f"model {model.name!r} version {model.version} is not a multi-domain model, so it "
            f"takes no target_domain; name a direction: {', '.join(model.directions)}"
        )
    return (
        f"model {model.name!r} version {model.version} has no domain {domain!r}; its domains: "
        f"{', '.join(model.domains)} (name one as target_domain, or as direction "
        f"{TARGET_PREFIX}<domain>)"
    )


def _close_all(models: dict[tuple[str, int], LoadedModel]) -> None:
    for model in models.values():
        for direction in model.directions.values():
            direction.close()


def _warmup_batches(max_batch: int) -> Sequence[int]:
    """Batch sizes to warm: 1, powers of two and max_batch (what dynamic batching will see)."""
    sizes = {1, max_batch}
    size = 2
    while size < max_batch:
        sizes.add(size)
        size *= 2
    return sorted(sizes)
