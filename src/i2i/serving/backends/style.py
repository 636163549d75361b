"""Style encoders: a reference image's style code, for multimodal models (MUNIT-like).

A direction whose manifest entry has a ``style_encoder`` carries a second graph, uint8
(N, H, W, C) images of its target domain -> float32 (N, S) style codes. It runs beside the
direction's translator, on the same runtime where it can: ONNX Runtime on the translator's
execution providers (the FP16 graph when the translator runs FP16 and there is one), and
PyTorch (``family.style_encoders``) when the translator is PyTorch. Beside a TensorRT engine
the style encoder runs in ONNX Runtime on CUDA (else the CPU): engines are built for
translators only, and one small image per request does not need one.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from i2i.repository import style_encoder_artifacts
from i2i.serving.backends.base import Backend, BackendError, Hardware
from i2i.serving.backends.ort import CPU, CUDA, open_session, runtime_name, verify_artifact
from i2i.shapes import ShapeRule

log = logging.getLogger(__name__)


class StyleEncoder(ABC):
    """One direction's style encoder, loaded into one runtime.

    Attributes:
        name: the runtime, e.g. "onnxruntime-cpu", "pytorch-cpu".
        artifact: the file it runs, or "pytorch:<checkpoint file name>".
        precision: "fp32" or "fp16".
        in_channels: channels of the reference images (the target domain's).
        style_size: S of the codes it computes.
        shape_rule: the image sizes it accepts.
    """

    def __init__(
        self,
        *,
        name: str,
        artifact: str,
        precision: str,
        in_channels: int,
        style_size: int,
        shape_rule: ShapeRule,
    ) -> None:
        self.name = name
        self.artifact = artifact
        self.precision = precision
        self.in_channels = in_channels
        self.style_size = style_size
        self.shape_rule = shape_rule

    @abstractmethod
    def _encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) -> (N, S), inputs already checked."""

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) reference images -> float32 (N, S) style codes (blocking).

        Raises ValueError for images of the wrong dtype, rank, channels or size.
        """
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != self.in_channels:
            raise ValueError(
                f"{self.artifact}: reference images must be uint8 (N, H, W, {self.in_channels}), "
                f"got {images.dtype} {images.shape}"
            )
        self.shape_rule.check(int(images.shape[1]), int(images.shape[2]))
        codes = np.asarray(self._encode(np.ascontiguousarray(images)), dtype=np.float32)
        if codes.shape != (images.shape[0], self.style_size):
            raise ValueError(
                f"{self.artifact}: computed codes of shape {codes.shape}, expected "
                f"{(images.shape[0], self.style_size)}"
            )
        return codes

    def warmup(self) -> None:
        """Encode one image of zeros at the smallest accepted size (first-run allocations)."""
        side = self.shape_rule.smallest
        self.encode(np.zeros((1, side, side, self.in_channels), np.uint8))

    def close(self) -> None:  # noqa: B027 - runtimes with nothing to release keep it
        """Release the runtime's resources."""
        log.debug("%s closed", self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.artifact} {self.precision}>"


class OnnxStyleEncoder(StyleEncoder):
    """A style encoder graph in an ONNX Runtime session (the translator backend's settings)."""

    def __init__(
        self,
        path: Path,
        artifact: Mapping[str, Any],
        spec: Mapping[str, Any],
        *,
        providers: tuple[str, ...],
        device_id: int = 0,
        threads: int | None = None,
    ) -> None:
        verify_artifact(path, artifact)
        session = open_session(path, providers, device_id=device_id, threads=threads)
        inputs = {i.name: i.type for i in session.get_inputs()}
        outputs = {o.name: o.type for o in session.get_outputs()}
        image, style = spec["input"], spec["output"]
        if inputs != {image["name"]: "tensor(uint8)"} or outputs != {
            style["name"]: "tensor(float)"
        }:
            raise BackendError(
                f"{path}: the style encoder's inputs {inputs} and outputs {outputs} are not "
                f"the manifest's ({image['name']} uint8 -> {style['name']} float32); "
                f"re-export this version"
            )
        channels, size = image["shape"][-1], style["shape"][-1]
        if not isinstance(channels, int) or not isinstance(size, int):
            raise BackendError(f"{path}: the manifest gives no fixed channels or style size")
        running = session.get_providers()[0]
        super().__init__(
            name=runtime_name(running),
            artifact=path.name,
            precision=artifact["precision"],
            in_channels=channels,
            style_size=size,
            shape_rule=ShapeRule.from_manifest(spec["shape_rule"]),
        )
        self._session: Any = session
        self._input, self._output = image["name"], style["name"]

    def _encode(self, images: np.ndarray) -> np.ndarray:
        if self._session is None:
            raise RuntimeError(f"{self}: closed")
        (codes,) = self._session.run([self._output], {self._input: images})
        return np.asarray(codes)

    def close(self) -> None:
        self._session = None


def load_style_encoder(
    folder: Path,
    manifest: Mapping[str, Any],
    direction: str,
    translator: Backend,
    *,
    hardware: Hardware | None = None,
    device_id: int = 0,
    threads: int | None = None,
    checkpoint: Path | None = None,
) -> StyleEncoder | None:
    """The style encoder of `direction` on the runtime of its `translator`; None without one.

    ONNX Runtime translators get the style encoder on the same execution providers and,
    where the version has it, the same precision (else FP32); PyTorch translators get the
    family's style encoder from the same checkpoint (`checkpoint`, default the manifest's
    source); a TensorRT engine gets ONNX Runtime on CUDA when ONNX Runtime has it here,
    else on the CPU.

    Raises:
        BackendError: the manifest declares a style encoder that cannot be loaded.
    """
    spec = manifest["directions"][direction].get("style_encoder")
    if spec is None:
        return None
    if translator.name.startswith("pytorch"):
        try:  # PyTorch only on this path: serving needs none
            from i2i.serving.backends.pytorch import pytorch_style_encoder, source_checkpoint
        except ModuleNotFoundError as exc:
            raise BackendError(
                f"pytorch: the PyTorch style encoder needs {exc.name!r}, which is not "
                f"installed: pip install 'i2i[train]', or choose --backend onnxruntime"
            ) from exc
        device = getattr(translator, "device", None)
        return pytorch_style_encoder(
            source_checkpoint(manifest, checkpoint),
            direction,
            device=str(device) if device is not None else "cpu",
            family=manifest["family"],
        )
    providers: tuple[str, ...] = tuple(getattr(translator, "providers", ()))
    if not providers:  # a TensorRT engine (or another runtime without ONNX Runtime)
        if hardware is None:
            hardware = Hardware.detect(device_id)
        providers = (CUDA, CPU) if hardware.cuda and CUDA in hardware.ort_providers else (CPU,)
    graphs = {a["precision"]: a for a in style_encoder_artifacts(manifest, direction)}
    if not graphs:
        raise BackendError(
            f"{folder}: {direction} declares a style encoder but no artifact holds it; "
            f"re-export this version"
        )
    artifact = graphs.get(translator.precision) or graphs.get("fp32") or next(iter(graphs.values()))
    encoder = OnnxStyleEncoder(
        folder / artifact["file"],
        artifact,
        spec,
        providers=providers,
        device_id=device_id,
        threads=threads,
    )
    log.info(
        "%s/%s %s: style encoder %s runs %s (%s)",
        manifest.get("name"),
        manifest.get("version"),
        direction,
        encoder.name,
        encoder.artifact,
        encoder.precision,
    )
    return encoder
