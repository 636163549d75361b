"""The native TensorRT backend: a serialized engine (plan) in :class:`i2i.runtime.EngineRunner`.

The runner is the one export's parity check uses: it reads the engine's tensors, dtypes and
profile from the engine itself, checks every TensorRT and CUDA call, and takes its device
memory and stream from NVIDIA's CUDA Python bindings (no PyTorch). This backend checks the
engine against the manifest and translates between the Backend interface and the runner.
No machine this was written on had TensorRT or a GPU: it is tested against a fake of
TensorRT's and CUDA's documented Python APIs, and the test that runs it for real is marked
``tensorrt`` and skips elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from i2i.runtime.cuda import CudaDevice, CudaError, GpuUnavailable
from i2i.runtime.tensorrt import EngineError, EngineRunner
from i2i.serving.backends.base import Backend, BackendError, built_for, io_sizes, shape_rule_of
from i2i.serving.backends.ort import verify_artifact

log = logging.getLogger(__name__)


class TensorRTBackend(Backend):
    """A TensorRT engine on GPU `device_id`, for the shapes of its optimisation profile.

    Args:
        path: the plan file (its sha256 is checked against ``artifact``).
        artifact: the manifest's artifact entry (format "tensorrt").
        spec: the manifest's entry for the artifact's direction.
        device_id: the GPU to run on; it must be the kind the engine was built for.
        tensorrt, cuda: passed to the runner (tests give fakes); default the real ones.
    """

    def __init__(
        self,
        path: Path,
        artifact: Mapping[str, Any],
        spec: Mapping[str, Any],
        device_id: int = 0,
        *,
        tensorrt: ModuleType | None = None,
        cuda: CudaDevice | None = None,
    ) -> None:
        verify_artifact(path, artifact)
        in_channels, out_channels, style_size = io_sizes(spec, path.name)
        super().__init__(
            name="tensorrt",
            artifact=path.name,
            precision=artifact["precision"],
            in_channels=in_channels,
            out_channels=out_channels,
            style_size=style_size,
            shape_rule=shape_rule_of(spec),
        )
        try:
            runner = EngineRunner(
                path.read_bytes(),
                device_id=device_id,
                source=path.name,
                tensorrt=tensorrt,
                cuda=cuda,
            )
        except (EngineError, CudaError, GpuUnavailable) as exc:
            raise BackendError(
                f"tensorrt: {exc}. The engine was built for {built_for(artifact)}; rebuild it "
                f"on this GPU type with `i2i models build-engines`, or use --backend onnxruntime"
            ) from exc
        try:
            self._input, self._output, self._style = _check_engine(runner, spec, path.name)
        except BackendError:
            runner.close()
            raise
        self._runner: EngineRunner | None = runner
        image = runner.tensors[self._input]
        self._style_dtype = runner.tensors[self._style].dtype if self._style else None
        recorded = artifact["tensorrt"]["profiles"][0]
        found = {"min": list(image.min), "opt": list(image.opt), "max": list(image.max)}
        if {k: list(recorded[k]) for k in found} != found:
            log.warning(
                "%s: the manifest records the profile %s but the engine's is %s; using the engine's",
                path.name,
                recorded,
                found,
            )
        inputs = [runner.tensors[name] for name in runner.inputs]
        self.max_batch = min(int(t.max[0]) for t in inputs)
        self.size_range = ((image.min[1], image.min[2]), (image.max[1], image.max[2]))
        # One execution context and stream: concurrent batches (--instances) take turns.
        self.thread_safe = False

    def run(self, images: np.ndarray, style: np.ndarray | None = None) -> np.ndarray:
        images, style = self.check_inputs(images, style)
        runner = self._runner
        if runner is None:
            raise RuntimeError(f"{self}: closed")
        feeds = {self._input: images}  # (N, H, W, C_in) uint8
        if style is not None and self._style is not None:
            feeds[self._style] = style.astype(self._style_dtype, copy=False)  # (N, S)
        try:
            outputs = runner.run(feeds)
        except ValueError as exc:
            raise ValueError(
                f"{exc}; rebuild it with `i2i models build-engines --force --shapes ...`"
            ) from exc
        return outputs[self._output]

    def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()


def _check_engine(
    runner: EngineRunner, spec: Mapping[str, Any], source: str
) -> tuple[str, str, str | None]:
    """The engine's (input, output, style) names, or BackendError if they, or their dtypes
    as the engine reports them, are not the manifest's."""
    tensors = [spec["input"], spec["output"]] + ([spec["style"]] if spec["style"] else [])
    expected = {t["name"]: np.dtype(t["dtype"]) for t in tensors}
    found = {name: t.dtype for name, t in runner.tensors.items()}
    inputs = {spec["input"]["name"]} | ({spec["style"]["name"]} if spec["style"] else set())
    if found != expected or set(runner.inputs) != inputs:
        raise BackendError(
            f"{source}: the engine's tensors ({_listed(found, runner.inputs)}) are not the "
            f"manifest's ({_listed(expected, tuple(inputs))}); rebuild it with "
            f"`i2i models build-engines --force` or re-export this version"
        )
    style = spec["style"]["name"] if spec["style"] else None
    return spec["input"]["name"], spec["output"]["name"], style


def _listed(tensors: Mapping[str, np.dtype], inputs: tuple[str, ...]) -> str:
    return ", ".join(
        f"{'input' if name in inputs else 'output'} {name} {dtype}"
        for name, dtype in sorted(tensors.items())
    )
