"""What a TensorRT engine is tied to: the GPU type and TensorRT version that built it."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


def gpu_slug(gpu_name: str) -> str:
    """A GPU's name as plan file names spell it: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    return re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")


def engine_differences(
    artifact: Mapping[str, Any], gpu: str, compute_capability: str, tensorrt_version: str
) -> list[str]:
    """Why a TensorRT artifact cannot run on this GPU and TensorRT ([] when it can).

    A plan runs only on the GPU type (name and compute capability) and the TensorRT version
    that built it; the manifest's `tensorrt` entry records all three (names compared as
    `gpu_slug` spells them).
    """
    info = artifact.get("tensorrt")
    if artifact.get("format") != "tensorrt" or not isinstance(info, Mapping):
        raise ValueError(f"{artifact.get('file')}: not a TensorRT artifact (no 'tensorrt' entry)")
    reasons = []
    if gpu_slug(str(info["gpu"])) != gpu_slug(gpu):
        reasons.append(f"built on GPU {info['gpu']!r}, this GPU is {gpu!r}")
    if str(info["compute_capability"]) != compute_capability:
        reasons.append(
            f"built for compute capability {info['compute_capability']}, this GPU has "
            f"{compute_capability}"
        )
    if str(info["version"]).strip() != tensorrt_version.strip():
        reasons.append(
            f"built with TensorRT {info['version']}, this is TensorRT {tensorrt_version}"
        )
    return reasons
