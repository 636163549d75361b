"""Multi-domain models: the whole conditional graph, shared by every target direction.

A multi-domain version (directions ``to_<domain>``) may carry its conditional graph
(manifest ``conditional``, artifacts with ``"graph": "conditional"``): uint8 images (N, H,
W, C) and int64 target indices (N,) -> uint8 images. Served with ONNX Runtime, one session
of it runs every direction, so requests for different targets share a batch: each
direction is a :class:`TargetBackend`, a view of the shared :class:`ConditionalBackend`
with its index fixed. Where it cannot run (an explicit TensorRT or PyTorch backend, a
manifest without it), each direction runs its own fused graph and batches alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from i2i.repository import conditional_artifacts
from i2i.serving.backends.base import Backend, BackendError, Hardware
from i2i.serving.backends.ort import (
    CPU,
    CUDA,
    open_session,
    runtime_name,
    verify_artifact,
)
from i2i.shapes import ShapeRule

log = logging.getLogger(__name__)

# Backend choices under which the conditional graph serves (ONNX Runtime's).
CONDITIONAL_CHOICES = ("auto", "onnxruntime", "onnxruntime-cpu")


class ConditionalBackend(Backend):
    """The conditional graph in an ONNX Runtime session: ``run_targets(images, domains)``.

    Its plain ``run`` takes no target (it raises): directions run it through
    :class:`TargetBackend`, the batcher through :meth:`run_targets`.
    """

    def __init__(
        self,
        path: Path,
        artifact: Mapping[str, Any],
        spec: Mapping[str, Any],
        num_domains: int,
        *,
        providers: tuple[str, ...] = (CPU,),
        device_id: int = 0,
        threads: int | None = None,
    ) -> None:
        verify_artifact(path, artifact)
        channels = [spec["input"]["shape"][-1], spec["output"]["shape"][-1]]
        if not all(isinstance(c, int) for c in channels):
            raise BackendError(f"{path.name}: the manifest gives no fixed channels; re-export")
        session = open_session(path, providers, device_id=device_id, threads=threads)
        super().__init__(
            name=runtime_name(session.get_providers()[0]),
            artifact=path.name,
            precision=artifact["precision"],
            in_channels=channels[0],
            out_channels=channels[1],
            style_size=0,
            shape_rule=ShapeRule.from_manifest(spec["shape_rule"]),
        )
        inputs = {i.name: i.type for i in session.get_inputs()}
        expected = {spec["input"]["name"]: "tensor(uint8)", spec["domain"]["name"]: "tensor(int64)"}
        if inputs != expected:
            raise BackendError(
                f"{path.name}: the graph's inputs {inputs} are not the manifest's {expected}; "
                f"re-export this version"
            )
        self._input, self._domain = spec["input"]["name"], spec["domain"]["name"]
        self._output = spec["output"]["name"]
        self.num_domains = num_domains
        self._session: Any = session
        self.runs = 0  # graph runs so far (one per batch), for tests and diagnostics

    def run(self, images: np.ndarray, style: np.ndarray | None = None) -> np.ndarray:
        raise ValueError(f"{self.artifact}: name each image's target: use run_targets")

    def run_targets(self, images: np.ndarray, domains: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C_in) and int64 target indices (N,) -> uint8 (N, H, W, C_out)."""
        images, _ = self.check_inputs(images, None)
        domains = np.ascontiguousarray(domains, dtype=np.int64)
        if domains.shape != (images.shape[0],):
            raise ValueError(
                f"{self.artifact}: expected one target index per image ({images.shape[0]}), "
                f"got shape {domains.shape}"
            )
        if domains.size and (domains.min() < 0 or domains.max() >= self.num_domains):
            raise ValueError(
                f"{self.artifact}: target indices must lie in [0, {self.num_domains}), got "
                f"{domains.tolist()}"
            )
        if self._session is None:
            raise RuntimeError(f"{self}: closed")
        feeds = {self._input: images, self._domain: domains}
        (output,) = self._session.run([self._output], feeds)
        self.runs += 1
        return np.asarray(output)

    def warmup(self, height: int, width: int, batch_sizes: Any) -> None:
        """A batch of zeros per batch size, the targets taken in turn."""
        for batch in batch_sizes:
            images = np.zeros((batch, height, width, self.in_channels), dtype=np.uint8)
            self.run_targets(images, np.arange(batch, dtype=np.int64) % self.num_domains)
        self.runs = 0

    def close(self) -> None:
        self._session = None


class TargetBackend(Backend):
    """One target direction of a :class:`ConditionalBackend`: plain ``run(images)``."""

    def __init__(self, conditional: ConditionalBackend, index: int) -> None:
        if not 0 <= index < conditional.num_domains:
            raise BackendError(
                f"{conditional.artifact}: target index {index} is outside "
                f"[0, {conditional.num_domains})"
            )
        super().__init__(
            name=conditional.name,
            artifact=conditional.artifact,
            precision=conditional.precision,
            in_channels=conditional.in_channels,
            out_channels=conditional.out_channels,
            style_size=0,
            shape_rule=conditional.shape_rule,
        )
        self.conditional = conditional
        self.index = index

    def run(self, images: np.ndarray, style: np.ndarray | None = None) -> np.ndarray:
        if style is not None:
            raise ValueError(f"{self.artifact}: this model is unimodal and takes no style")
        domains = np.full(len(images), self.index, dtype=np.int64)
        return self.conditional.run_targets(images, domains)

    def close(self) -> None:
        self.conditional.close()  # shared: the model's directions close together


def load_conditional_backend(
    folder: Path,
    manifest: Mapping[str, Any],
    *,
    choice: str = "auto",
    precision: str = "auto",
    hardware: Hardware,
    device_id: int = 0,
    threads: int | None = None,
) -> ConditionalBackend | None:
    """The version's conditional graph in ONNX Runtime, or None where it does not serve:
    no conditional graph in the manifest, a backend choice that is not ONNX Runtime's, a
    GPU with a TensorRT engine for every direction under auto (engines are faster), or no
    artifact of the asked precision (each direction then runs its own graph)."""
    spec = manifest.get("conditional")
    found = {a["precision"]: a for a in conditional_artifacts(manifest) if a["format"] == "onnx"}
    if spec is None or not found or choice not in CONDITIONAL_CHOICES:
        return None
    gpu = choice != "onnxruntime-cpu" and hardware.cuda and CUDA in hardware.ort_providers
    if choice == "auto" and hardware.cuda and hardware.tensorrt_version is not None:
        engines = [a for a in manifest["artifacts"] if a["format"] == "tensorrt"]
        if engines:
            return None  # the per-direction engines win on a GPU
    if precision == "auto":
        order = ("fp16", "fp32") if gpu else ("fp32", "fp16")
        artifact = next((found[p] for p in order if p in found), None)
    else:
        artifact = found.get(precision)
    if artifact is None:
        log.info(
            "%s:%s: no %s conditional graph; each direction batches alone",
            manifest["name"],
            manifest["version"],
            precision,
        )
        return None
    return ConditionalBackend(
        Path(folder) / artifact["file"],
        artifact,
        spec,
        len(manifest["domains"]),
        providers=(CUDA,) if gpu else (CPU,),
        device_id=device_id,
        threads=threads,
    )
