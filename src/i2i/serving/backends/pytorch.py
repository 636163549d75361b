"""PyTorch backends: the family's translator from a training checkpoint, on CPU or CUDA."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from i2i.checkpoint import CheckpointError, load_trained_networks
from i2i.models import ShapeRule, get_family, options_from_dict
from i2i.repository import sha256_file
from i2i.serving.backends.base import Backend, BackendError
from i2i.serving.backends.style import StyleEncoder

log = logging.getLogger(__name__)


class PyTorchBackend(Backend):
    """A translator module run under ``torch.inference_mode`` (FP16: autocast on CUDA)."""

    family = ""  # the model family of the checkpoint it came from, when built from one

    def __init__(
        self,
        translator: nn.Module,
        device: torch.device,
        *,
        artifact: str,
        precision: str,
        in_channels: int,
        out_channels: int,
        style_size: int,
        shape_rule: ShapeRule,
    ) -> None:
        super().__init__(
            name=f"pytorch-{device.type}",
            artifact=artifact,
            precision=precision,
            in_channels=in_channels,
            out_channels=out_channels,
            style_size=style_size,
            shape_rule=shape_rule,
        )
        self.device = device
        self._translator: nn.Module | None = translator.to(device).eval()

    def run(self, images: np.ndarray, style: np.ndarray | None = None) -> np.ndarray:
        images, style = self.check_inputs(images, style)
        if self._translator is None:
            raise RuntimeError(f"{self}: closed")
        autocast = (
            torch.autocast(device_type="cuda", dtype=torch.float16)
            if self.precision == "fp16"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            inputs = [torch.from_numpy(images).to(self.device)]  # (N, H, W, C_in) uint8
            if style is not None:
                inputs.append(torch.from_numpy(style).to(self.device))  # (N, S) float32
            output = self._translator(*inputs)  # (N, H, W, C_out) uint8
        return output.cpu().numpy()

    def close(self) -> None:
        self._translator = None


class PyTorchStyleEncoder(StyleEncoder):
    """A family's style encoder module run under ``torch.inference_mode``."""

    def __init__(
        self,
        encoder: nn.Module,
        device: torch.device,
        *,
        artifact: str,
        in_channels: int,
        style_size: int,
        shape_rule: ShapeRule,
    ) -> None:
        super().__init__(
            name=f"pytorch-{device.type}",
            artifact=artifact,
            precision="fp32",
            in_channels=in_channels,
            style_size=style_size,
            shape_rule=shape_rule,
        )
        self.device = device
        self._encoder: nn.Module | None = encoder.to(device).eval()

    def _encode(self, images: np.ndarray) -> np.ndarray:
        if self._encoder is None:
            raise RuntimeError(f"{self}: closed")
        with torch.inference_mode():
            pixels = images if images.flags.writeable else images.copy()  # torch needs that
            codes = self._encoder(torch.from_numpy(pixels).to(self.device))  # (N, S)
        return codes.float().cpu().numpy()

    def close(self) -> None:
        self._encoder = None


def pytorch_style_encoder(
    checkpoint: Path, direction: str, *, device: str, family: str | None = None
) -> PyTorchStyleEncoder | None:
    """`direction`'s style encoder (``family.style_encoders``) from `checkpoint` on `device`;
    None when the family has none or the checkpoint lacks its network."""
    torch_device = _device(device)
    try:
        payload, networks = load_trained_networks(checkpoint)
    except CheckpointError as exc:
        raise BackendError(f"pytorch: {exc}") from exc
    if family is not None and payload["family"] != family:
        raise BackendError(
            f"pytorch: {checkpoint} holds a {payload['family']!r} model but this model is a "
            f"{family!r}; pass the --checkpoint it was exported from"
        )
    model_family = get_family(payload["family"])
    if model_family.style_encoders is None:
        return None
    options = options_from_dict(payload["family"], payload["config"].get("model", {}))
    encoder = model_family.style_encoders(networks, options).get(direction)
    if encoder is None:
        return None
    rule = getattr(encoder, "shape_rule", None) or model_family.shape_rule(options)
    return PyTorchStyleEncoder(
        encoder,
        torch_device,
        artifact=f"pytorch:{checkpoint.name}",
        in_channels=int(getattr(encoder, "in_channels", 3)),
        style_size=int(getattr(encoder, "style_dim", model_family.style_dim_for(options))),
        shape_rule=rule,
    )


def load_checkpoint_backend(checkpoint: Path, direction: str, *, device: str = "cpu") -> Backend:
    """A PyTorch backend from a training checkpoint, no repository (`i2i translate --checkpoint`).

    Args:
        checkpoint: an i2i checkpoint file.
        direction: the direction to run, e.g. "A2B".
        device: "cpu", "cuda" or "cuda:<index>".
    """
    return pytorch_backend(Path(checkpoint), direction, device=device)


def pytorch_backend(
    checkpoint: Path,
    direction: str,
    *,
    device: str,
    precision: str = "fp32",
    family: str | None = None,
) -> PyTorchBackend:
    """Build `direction`'s translator from `checkpoint` on `device`.

    Args:
        checkpoint: an i2i checkpoint file.
        direction: the direction to run.
        device: "cpu", "cuda" or "cuda:<index>".
        precision: "fp32", or "fp16" (autocast; CUDA only).
        family: the family the checkpoint must hold (a repository's), if any.
    """
    torch_device = _device(device)
    if precision == "fp16" and torch_device.type != "cuda":
        raise BackendError(
            "pytorch: fp16 runs on CUDA only; use --precision fp32 on a CPU, or the fp16 ONNX "
            "artifact (--backend onnxruntime-cpu --precision fp16)"
        )
    try:
        payload, networks = load_trained_networks(checkpoint)
    except CheckpointError as exc:
        raise BackendError(f"pytorch: {exc}") from exc
    if family is not None and payload["family"] != family:
        raise BackendError(
            f"pytorch: {checkpoint} holds a {payload['family']!r} model but this model is a "
            f"{family!r}; pass the --checkpoint it was exported from"
        )
    model_family = get_family(payload["family"])
    options = options_from_dict(payload["family"], payload["config"].get("model", {}))
    translators = model_family.translators(networks, options)
    if direction not in translators:
        raise BackendError(
            f"pytorch: {checkpoint} has no direction {direction!r}; it has "
            f"{', '.join(translators) or 'none'}"
        )
    translator = translators[direction]
    backend = PyTorchBackend(
        translator,
        torch_device,
        artifact=f"pytorch:{checkpoint.name}",
        precision=precision,
        in_channels=int(getattr(translator, "in_channels", 3)),
        out_channels=int(getattr(translator, "out_channels", 3)),
        style_size=model_family.style_dim_for(options),
        shape_rule=model_family.shape_rule(options),
    )
    backend.family = payload["family"]
    log.info("%s: %s from %s on %s", direction, backend.name, checkpoint, torch_device)
    return backend


def source_checkpoint(manifest: Mapping[str, Any], given: Path | None) -> Path:
    """The checkpoint whose weights the PyTorch backend runs for a repository version.

    `given` (--checkpoint) wins; with it, a different sha256 than the source's is only
    logged. Otherwise the manifest's `source.checkpoint` must exist and match its sha256.
    """
    source = manifest["source"]
    if given is not None:
        if not Path(given).is_file():
            raise BackendError(f"pytorch: --checkpoint {given}: no such file")
        if sha256_file(given) != source["sha256"]:
            log.warning(
                "%s is not the checkpoint %s/%s was exported from (sha256 differs from "
                "source.sha256): PyTorch will not compute what its artifacts compute",
                given,
                manifest.get("name"),
                manifest.get("version"),
            )
        return Path(given)
    path = Path(source["checkpoint"])
    if not path.is_file():
        raise BackendError(
            f"pytorch: the source checkpoint {path} recorded in the manifest is not on this "
            f"machine; pass --checkpoint PATH to the checkpoint this version was exported from"
        )
    digest = sha256_file(path)
    if digest != source["sha256"]:
        raise BackendError(
            f"pytorch: {path} has sha256 {digest} but this version was exported from sha256 "
            f"{source['sha256']} (the file changed since); pass --checkpoint PATH to the "
            f"checkpoint this version was exported from"
        )
    return path


def _device(device: str) -> torch.device:
    try:
        torch_device = torch.device(device)
    except RuntimeError as exc:
        raise BackendError(f"pytorch: device {device!r} is not valid ({exc})") from exc
    if torch_device.type == "cuda":
        index = torch_device.index or 0
        if not torch.cuda.is_available() or torch.cuda.device_count() <= index:
            raise BackendError(
                f"pytorch: device {device!r}: no such CUDA GPU visible to this process "
                f"(torch {torch.__version__}); use device 'cpu'"
            )
        torch_device = torch.device("cuda", index)
    elif torch_device.type != "cpu":
        raise BackendError(f"pytorch: device {device!r}: use 'cpu', 'cuda' or 'cuda:<index>'")
    return torch_device
