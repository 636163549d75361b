"""Which backend runs a direction: the manifest's artifacts, the hardware and the user's choice."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from i2i.repository import translator_artifacts
from i2i.serving.backends.base import (
    BACKEND_CHOICES,
    PRECISION_CHOICES,
    Backend,
    BackendError,
    Hardware,
    built_for,
    direction_spec,
    engine_mismatch,
)
from i2i.serving.backends.engine import TensorRTBackend
from i2i.serving.backends.ort import CPU, CUDA, TENSORRT, OnnxRuntimeBackend

log = logging.getLogger(__name__)


def load_backend(
    folder: Path,
    manifest: Mapping[str, Any],
    direction: str,
    *,
    choice: str = "auto",
    precision: str = "auto",
    hardware: Hardware | None = None,
    device_id: int = 0,
    threads: int | None = None,
    checkpoint: Path | None = None,
) -> Backend:
    """Load the backend that runs `direction` of a repository version.

    ``auto`` takes the fastest that can run here: a TensorRT engine built for this GPU and
    TensorRT version; else ONNX Runtime on the TensorRT or CUDA execution provider (the
    FP16 graph under precision ``auto`` where there is one); else PyTorch on CUDA when the
    checkpoint is at hand; else ONNX Runtime on the CPU (the FP32 graph under ``auto``).
    An engine built for another GPU or TensorRT version is skipped with one WARNING line.

    Args:
        folder: the version folder (``<repository>/<name>/<version>``).
        manifest: its manifest, as ``i2i.repository.read_manifest`` returns it.
        direction: the direction to run, e.g. "A2B".
        choice: one of BACKEND_CHOICES; an explicit choice that cannot run here raises.
        precision: one of PRECISION_CHOICES; fp16 or fp32 insists on that artifact.
        hardware: what this process can use; detected when None.
        device_id: the GPU to use.
        threads: intra-op threads for ONNX Runtime; None lets it decide.
        checkpoint: the weights for PyTorch; default the manifest's source checkpoint,
            used only if its sha256 still matches.

    Raises:
        ValueError: `choice` or `precision` is not one of the known values.
        BackendError: the direction, artifact or runtime is missing or cannot run here.
    """
    if choice not in BACKEND_CHOICES:
        raise ValueError(f"backend {choice!r}: choose one of {', '.join(BACKEND_CHOICES)}")
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISION_CHOICES)}")
    folder = Path(folder)
    spec = direction_spec(manifest, direction)
    hardware = hardware if hardware is not None else Hardware.detect(device_id)
    gpu_providers = _gpu_providers(hardware)

    def onnxruntime(providers: tuple[str, ...]) -> Backend:
        artifact = _onnx_artifact(manifest, direction, precision, gpu=bool(providers), at=folder)
        return OnnxRuntimeBackend(
            folder / artifact["file"],
            artifact,
            spec,
            providers=providers or (CPU,),
            device_id=device_id,
            threads=threads,
        )

    def pytorch() -> Backend:
        pytorch_backend, source_checkpoint = _pytorch_loaders()
        return pytorch_backend(
            source_checkpoint(manifest, checkpoint),
            direction,
            device=f"cuda:{device_id}" if hardware.cuda else "cpu",
            precision="fp32" if precision == "auto" else precision,
            family=manifest["family"],
        )

    backend: Backend | None
    if choice == "tensorrt":
        backend = _tensorrt(folder, manifest, direction, spec, precision, hardware, device_id, True)
    elif choice == "onnxruntime":
        backend = onnxruntime(gpu_providers)
    elif choice == "onnxruntime-cpu":
        backend = onnxruntime(())
    elif choice == "pytorch":
        backend = pytorch()
    else:
        backend = _tensorrt(
            folder, manifest, direction, spec, precision, hardware, device_id, False
        )
        # Under auto, ONNX Runtime on a GPU uses CUDA only: its TensorRT provider would
        # compile an engine in the middle of serving for every new image size (minutes).
        # Native engines (above) are the TensorRT path; --backend onnxruntime opts in.
        if backend is None and CUDA in gpu_providers:
            backend = onnxruntime((CUDA,))
        if backend is None and hardware.cuda:
            try:
                backend = pytorch()
            except BackendError as exc:
                if checkpoint is not None:
                    raise
                log.info("%s: not using PyTorch on the GPU: %s", direction, exc)
        if backend is None:
            backend = onnxruntime(())
    assert backend is not None  # an explicit tensorrt choice raises rather than return None
    log.info(
        "%s/%s %s: %s runs %s (%s)",
        manifest.get("name"),
        manifest.get("version"),
        direction,
        backend.name,
        backend.artifact,
        backend.precision,
    )
    return backend


def _pytorch_loaders() -> tuple[Any, Any]:
    """The PyTorch backend's loaders, imported only when asked for: serving needs no torch."""
    try:
        from i2i.serving.backends.pytorch import pytorch_backend, source_checkpoint
    except ModuleNotFoundError as exc:
        raise BackendError(
            f"pytorch: the PyTorch backend needs {exc.name!r}, which is not installed: "
            f"pip install 'i2i[train]', or choose --backend onnxruntime"
        ) from exc
    return pytorch_backend, source_checkpoint


def _gpu_providers(hardware: Hardware) -> tuple[str, ...]:
    """ONNX Runtime's GPU execution providers usable here, fastest first."""
    if not hardware.cuda:
        return ()
    # The TensorRT provider needs TensorRT's libraries, which come with the tensorrt wheel.
    wanted = (TENSORRT, CUDA) if hardware.tensorrt_version else (CUDA,)
    return tuple(p for p in wanted if p in hardware.ort_providers)


def _listing(manifest: Mapping[str, Any], direction: str) -> str:
    found = translator_artifacts(manifest, direction)
    return ", ".join(f"{a['file']} ({a['format']} {a['precision']})" for a in found) or "none"


def _onnx_artifact(
    manifest: Mapping[str, Any], direction: str, precision: str, *, gpu: bool, at: Path
) -> Mapping[str, Any]:
    """The ONNX artifact to run: `precision`'s, or under auto FP16 on a GPU, else FP32."""
    onnx = {
        a["precision"]: a
        for a in translator_artifacts(manifest, direction)
        if a["format"] == "onnx"
    }
    if precision == "auto":
        order = ("fp16", "fp32") if gpu else ("fp32", "fp16")
        for wanted in order:
            if wanted in onnx:
                return onnx[wanted]
        raise BackendError(
            f"onnxruntime: no ONNX artifact for {direction} in {at} (artifacts: "
            f"{_listing(manifest, direction)}); re-export with --formats onnx"
        )
    if precision not in onnx:
        fmt = "onnx-fp16" if precision == "fp16" else "onnx"
        raise BackendError(
            f"onnxruntime: precision {precision}: no {precision} ONNX artifact for {direction} in "
            f"{at} (artifacts: {_listing(manifest, direction)}); re-export with --formats {fmt} "
            f"or choose another --precision"
        )
    return onnx[precision]


def _tensorrt(
    folder: Path,
    manifest: Mapping[str, Any],
    direction: str,
    spec: Mapping[str, Any],
    precision: str,
    hardware: Hardware,
    device_id: int,
    explicit: bool,
) -> Backend | None:
    """A native TensorRT backend; None under auto when no engine fits (explicit: raises)."""
    if explicit:
        missing = []
        if hardware.tensorrt_version is None:
            missing.append("the tensorrt package is not installed (pip install 'i2i[gpu]')")
        if not hardware.cuda:
            missing.append("no CUDA GPU is visible to this process")
        if missing:
            raise BackendError(f"tensorrt: {' and '.join(missing)}; use --backend auto")
    engines = [
        a
        for a in translator_artifacts(manifest, direction)
        if a["format"] == "tensorrt" and precision in ("auto", a["precision"])
    ]
    if explicit and not engines:
        raise BackendError(
            f"tensorrt: no {'' if precision == 'auto' else precision + ' '}TensorRT engine for "
            f"{direction} in {folder} (artifacts: {_listing(manifest, direction)}); build one on "
            f"this GPU type with `i2i models build-engines {folder.parent.parent} "
            f"{folder.parent.name}`, or use --backend auto"
        )
    problems = []
    for artifact in engines:
        reason = engine_mismatch(artifact, hardware)
        if reason is None:
            try:
                return TensorRTBackend(folder / artifact["file"], artifact, spec, device_id)
            except BackendError as exc:
                if explicit:
                    raise
                reason = str(exc)
        problems.append(f"{artifact['file']} was built for {built_for(artifact)}: {reason}")
        if not explicit:
            # Expected on a machine without a GPU; a mistake worth a warning on one with a GPU.
            log.log(
                logging.WARNING if hardware.cuda else logging.INFO,
                "%s: not using this TensorRT engine (%s): built for %s, this machine has %s. "
                "Falling back to ONNX Runtime; build one here with `i2i models build-engines`",
                artifact["file"],
                reason,
                built_for(artifact),
                hardware.describe(),
            )
    if explicit:
        raise BackendError(
            f"tensorrt: no engine for this GPU ({hardware.describe()}): {'; '.join(problems)}. "
            f"Build one on this GPU type with `i2i models build-engines {folder.parent.parent} "
            f"{folder.parent.name}`, or use --backend auto"
        )
    return None
