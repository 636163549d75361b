"""Backends: the artifact and runtime chosen, what they compute, and their refusals."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from i2i.checkpoint import load_trained_networks
from i2i.models import ShapeRule, get_family, options_from_dict
from i2i.repository import read_manifest
from i2i.runtime import EngineError
from i2i.serving.backends import (
    Backend,
    BackendError,
    Hardware,
    OnnxRuntimeBackend,
    PyTorchBackend,
    engine_mismatch,
    load_backend,
    load_checkpoint_backend,
)
from i2i.serving.backends.engine import TensorRTBackend
from tests.runtime.fakes import install, invert_graph, write_plan

CPU_ONLY = Hardware(
    cuda=False,
    gpu_name=None,
    compute_capability=None,
    tensorrt_version=None,
    ort_providers=("CPUExecutionProvider",),
)
# A GPU machine as this process might see it, but whose ONNX Runtime is the CPU build.
H100 = Hardware(
    cuda=True,
    gpu_name="NVIDIA H100 80GB HBM3",
    compute_capability="9.0",
    tensorrt_version="10.3.0",
    ort_providers=("CPUExecutionProvider",),
)
# A GPU machine whose ONNX Runtime has the TensorRT provider (the session is faked).
TRT_EP = Hardware(
    cuda=True,
    gpu_name="NVIDIA H100 80GB HBM3",
    compute_capability="9.0",
    tensorrt_version="10.3.0",
    ort_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
)
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU visible to torch")


def engine_artifact(gpu: str, capability: str, version: str, file: str = "A2B.x.plan") -> dict:
    """A TensorRT artifact entry shaped like the one i2i-export writes."""
    return {
        "direction": "A2B",
        "format": "tensorrt",
        "precision": "fp16",
        "file": file,
        "tensorrt": {
            "version": version,
            "gpu": gpu,
            "compute_capability": capability,
            "strongly_typed": False,
            "profiles": [{"min": [1, 32, 32, 3], "opt": [4, 32, 32, 3], "max": [16, 64, 64, 3]}],
        },
    }


def images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth uint8 images with noise, (N, H, W, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([a * xx + b * yy for a, b in rng.uniform(-1, 1, (3, 2))], axis=-1)
    noisy = (base + 1) * 127.5 + rng.normal(0, 8, (batch, height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def translator_output(checkpoint: Path, direction: str, x: np.ndarray) -> np.ndarray:
    payload, networks = load_trained_networks(checkpoint)
    options = options_from_dict(payload["family"], payload["config"]["model"])
    translator = get_family(payload["family"]).translators(networks, options)[direction]
    with torch.inference_mode():
        return translator(torch.from_numpy(x)).numpy()


def within_one_level(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of pixels whose channels all differ by at most one level."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1)
    return float(np.mean(diff <= 1))


@pytest.fixture(scope="module")
def folder(tiny_repository: Path) -> Path:
    return tiny_repository / "tiny" / "1"


@pytest.fixture(scope="module")
def manifest(tiny_repository: Path) -> dict[str, Any]:
    return read_manifest(tiny_repository, "tiny")


@pytest.fixture(scope="module")
def cpu_backend(folder: Path, manifest: dict[str, Any]) -> Backend:
    return load_backend(folder, manifest, "A2B", choice="onnxruntime-cpu", hardware=CPU_ONLY)


def copy_version(tiny_repository: Path, tmp_path: Path) -> Path:
    """A private copy of the fixture repository; returns its version folder."""
    shutil.copytree(tiny_repository, tmp_path / "repository")
    return tmp_path / "repository" / "tiny" / "1"


def write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write `manifest` into `folder` and read it back through the validating reader."""
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return read_manifest(folder.parent.parent, "tiny", 1, verify=True)


# --- ONNX Runtime on the CPU ---------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("size", [(32, 32), (48, 64)])
def test_onnxruntime_cpu_equals_onnxruntime_on_the_artifact(
    cpu_backend: Backend, folder: Path, batch: int, size: tuple[int, int]
) -> None:
    x = images(batch, *size, seed=batch)
    session = ort.InferenceSession(str(folder / "A2B.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"image": x})[0]
    got = cpu_backend.run(x)
    assert got.dtype == np.uint8 and got.shape == (batch, *size, 3)
    np.testing.assert_array_equal(got, expected)


def test_attributes_describe_what_runs(cpu_backend: Backend) -> None:
    assert (cpu_backend.name, cpu_backend.artifact, cpu_backend.precision) == (
        "onnxruntime-cpu",
        "A2B.onnx",
        "fp32",
    )
    assert (cpu_backend.in_channels, cpu_backend.out_channels, cpu_backend.style_size) == (3, 3, 0)


def test_auto_picks_onnxruntime_cpu_fp32_on_this_machine(
    folder: Path, manifest: dict[str, Any]
) -> None:
    hardware = Hardware.detect()
    if hardware.cuda:
        pytest.skip("this machine has a GPU: auto picks a GPU backend here")
    backend = load_backend(folder, manifest, "B2A", hardware=hardware)
    assert (backend.name, backend.artifact, backend.precision) == (
        "onnxruntime-cpu",
        "B2A.onnx",
        "fp32",
    )


def test_precision_fp16_runs_the_fp16_artifact(
    folder: Path, manifest: dict[str, Any], cpu_backend: Backend
) -> None:
    backend = load_backend(folder, manifest, "A2B", precision="fp16", hardware=CPU_ONLY)
    assert (backend.name, backend.artifact, backend.precision) == (
        "onnxruntime-cpu",
        "A2B.fp16.onnx",
        "fp16",
    )
    x = images(2, 32, 32)
    assert within_one_level(backend.run(x), cpu_backend.run(x)) > 0.9  # FP16, not rounding


def test_precision_fp16_without_an_fp16_artifact_lists_the_artifacts(
    folder: Path, manifest: dict[str, Any]
) -> None:
    fp32_only = copy.deepcopy(manifest)
    fp32_only["artifacts"] = [a for a in manifest["artifacts"] if a["precision"] == "fp32"]
    with pytest.raises(BackendError, match=r"no fp16 ONNX artifact.*A2B\.onnx \(onnx fp32\)"):
        load_backend(folder, fp32_only, "A2B", precision="fp16", hardware=CPU_ONLY)


def test_tampered_onnx_file_is_refused(tiny_repository: Path, tmp_path: Path) -> None:
    folder = copy_version(tiny_repository, tmp_path)
    manifest = read_manifest(folder.parent.parent, "tiny")
    data = bytearray((folder / "A2B.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size, so only the hash tells
    (folder / "A2B.onnx").write_bytes(bytes(data))
    with pytest.raises(BackendError, match=r"A2B\.onnx: sha256 .* differs from the manifest"):
        load_backend(folder, manifest, "A2B", hardware=CPU_ONLY)


def test_graph_that_disagrees_with_the_manifest_is_refused(
    folder: Path, manifest: dict[str, Any]
) -> None:
    renamed = copy.deepcopy(manifest)
    renamed["directions"]["A2B"]["input"]["name"] = "pixels"
    with pytest.raises(BackendError, match=r"inputs image tensor\(uint8\).*pixels"):
        load_backend(folder, renamed, "A2B", hardware=CPU_ONLY)


def test_unknown_direction_choice_and_precision(folder: Path, manifest: dict[str, Any]) -> None:
    with pytest.raises(BackendError, match="no direction 'C2D'; directions: A2B, B2A"):
        load_backend(folder, manifest, "C2D", hardware=CPU_ONLY)
    with pytest.raises(ValueError, match="choose one of auto, tensorrt"):
        load_backend(folder, manifest, "A2B", choice="triton", hardware=CPU_ONLY)
    with pytest.raises(ValueError, match="choose one of auto, fp32, fp16"):
        load_backend(folder, manifest, "A2B", precision="int8", hardware=CPU_ONLY)


# --- input validation and warmup -----------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((1, 32, 32, 3), np.float32),  # dtype
        np.zeros((32, 32, 3), np.uint8),  # rank
        np.zeros((1, 32, 32, 1), np.uint8),  # channels
        np.zeros((0, 32, 32, 3), np.uint8),  # empty batch
        np.zeros((1, 30, 32, 3), np.uint8),  # not a multiple of 4
    ],
    ids=["dtype", "rank", "channels", "empty", "size"],
)
def test_run_rejects_bad_images(cpu_backend: Backend, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="A2B.onnx|not accepted"):
        cpu_backend.run(bad)


def test_style_given_to_a_unimodal_backend_is_rejected(cpu_backend: Backend) -> None:
    with pytest.raises(ValueError, match="unimodal"):
        cpu_backend.run(images(1, 32, 32), np.zeros((1, 8), np.float32))


def test_warmup_runs_each_batch_size(cpu_backend: Backend) -> None:
    cpu_backend.warmup(32, 32, [1, 3])
    with pytest.raises(ValueError, match="multiples of 4"):
        cpu_backend.warmup(30, 30, [1])  # warmup goes through run and its checks


def style_graph(path: Path, style_size: int) -> None:
    """A multimodal stand-in: translated = image + sum(style), in uint8."""
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["style", "axis1"], ["s"], keepdims=1),  # (N, 1)
        helper.make_node("Unsqueeze", ["s", "axes23"], ["s4"]),  # (N, 1, 1, 1)
        helper.make_node("Add", ["x", "s4"], ["y"]),
        helper.make_node("Cast", ["y"], ["translated"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes,
        "style",
        [
            helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3]),
            helper.make_tensor_value_info("style", TensorProto.FLOAT, ["N", style_size]),
        ],
        [helper.make_tensor_value_info("translated", TensorProto.UINT8, ["N", "H", "W", 3])],
        [
            helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
            helper.make_tensor("axes23", TensorProto.INT64, [2], [2, 3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)


def style_spec(style_size: int) -> dict[str, Any]:
    """A manifest direction of a multimodal model: uint8 image in and out, a float32 style."""
    tensor = {"dtype": "uint8", "shape": ["batch", "height", "width", 3]}
    return {
        "input": {"name": "image", **tensor},
        "output": {"name": "translated", **tensor},
        "style": {"name": "style", "dtype": "float32", "shape": ["batch", style_size]},
        "shape_rule": {"multiple_of": 4, "fixed_size": None},
    }


def test_multimodal_onnx_backend_feeds_and_checks_the_style(tmp_path: Path) -> None:
    path = tmp_path / "A2B.onnx"
    style_graph(path, style_size=2)
    spec = style_spec(style_size=2)
    artifact = {
        "precision": "fp32",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    backend = OnnxRuntimeBackend(path, artifact, spec)
    assert backend.style_size == 2
    x = np.full((2, 8, 8, 3), 10, np.uint8)
    out = backend.run(x, np.array([[1, 2], [3, 4]], np.float64))  # any float dtype is cast
    assert out[0].tolist() == np.full((8, 8, 3), 13).tolist()
    assert out[1].tolist() == np.full((8, 8, 3), 17).tolist()
    with pytest.raises(ValueError, match="multimodal"):
        backend.run(x)
    with pytest.raises(ValueError, match=r"style must be float32 of shape \(2, 2\)"):
        backend.run(x, np.zeros((2, 3), np.float32))
    backend.warmup(8, 8, [1, 2])  # zeros for the style too


# --- PyTorch -------------------------------------------------------------------------------


def test_pytorch_from_the_repository_matches_translator_and_onnx(
    folder: Path, manifest: dict[str, Any], tiny_checkpoint_path: Path, cpu_backend: Backend
) -> None:
    backend = load_backend(folder, manifest, "A2B", choice="pytorch", hardware=CPU_ONLY)
    assert (backend.name, backend.artifact, backend.precision) == (
        "pytorch-cpu",
        "pytorch:tiny.pt",
        "fp32",
    )
    x = images(4, 48, 32, seed=3)
    got = backend.run(x)
    np.testing.assert_array_equal(got, translator_output(tiny_checkpoint_path, "A2B", x))
    assert within_one_level(got, cpu_backend.run(x)) >= 0.999


def test_load_checkpoint_backend_matches_translator(tiny_checkpoint_path: Path) -> None:
    backend = load_checkpoint_backend(tiny_checkpoint_path, "B2A")
    assert (backend.name, backend.artifact) == ("pytorch-cpu", "pytorch:tiny.pt")
    x = images(2, 32, 32, seed=4)
    np.testing.assert_array_equal(backend.run(x), translator_output(tiny_checkpoint_path, "B2A", x))
    with pytest.raises(BackendError, match="no direction 'C2D'"):
        load_checkpoint_backend(tiny_checkpoint_path, "C2D")


def test_pytorch_refuses_a_missing_or_changed_source_checkpoint(
    folder: Path, manifest: dict[str, Any], tiny_checkpoint_path: Path, tmp_path: Path
) -> None:
    missing = copy.deepcopy(manifest)
    missing["source"]["checkpoint"] = str(tmp_path / "gone.pt")
    with pytest.raises(BackendError, match="gone.pt .* not on this machine.*--checkpoint"):
        load_backend(folder, missing, "A2B", choice="pytorch", hardware=CPU_ONLY)
    changed = copy.deepcopy(manifest)
    changed["source"]["sha256"] = "0" * 64
    with pytest.raises(BackendError, match="file changed since.*--checkpoint"):
        load_backend(folder, changed, "A2B", choice="pytorch", hardware=CPU_ONLY)
    # --checkpoint wins over the manifest's path.
    backend = load_backend(
        folder, missing, "A2B", choice="pytorch", hardware=CPU_ONLY, checkpoint=tiny_checkpoint_path
    )
    assert backend.artifact == "pytorch:tiny.pt"


class StyleShift(torch.nn.Module):
    """A multimodal stand-in translator: image + sum(style), in uint8."""

    def forward(self, image: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        shift = style.sum(dim=1).reshape(-1, 1, 1, 1)  # (N, 1, 1, 1)
        return (image.to(torch.float32) + shift).to(torch.uint8)


def test_multimodal_pytorch_backend_passes_the_style() -> None:
    backend = PyTorchBackend(
        StyleShift(),
        torch.device("cpu"),
        artifact="pytorch:style.pt",
        precision="fp32",
        in_channels=3,
        out_channels=3,
        style_size=2,
        shape_rule=ShapeRule(multiple_of=4),
    )
    out = backend.run(np.zeros((2, 4, 4, 3), np.uint8), np.array([[1, 1], [2, 3]], np.float32))
    assert out[:, 0, 0, 0].tolist() == [2, 5]
    with pytest.raises(ValueError, match="multimodal"):
        backend.run(np.zeros((1, 4, 4, 3), np.uint8))


def test_pytorch_fp16_needs_cuda(folder: Path, manifest: dict[str, Any]) -> None:
    with pytest.raises(BackendError, match="fp16 runs on CUDA only"):
        load_backend(folder, manifest, "A2B", choice="pytorch", precision="fp16", hardware=CPU_ONLY)


# --- TensorRT: what fits where -------------------------------------------------------------


@pytest.mark.parametrize(
    ("artifact", "hardware", "reason"),
    [
        (engine_artifact("NVIDIA H100 80GB HBM3", "9.0", "10.3.0"), H100, None),
        (engine_artifact("nvidia h100 80gb hbm3", "9.0", "10.3.0"), H100, None),
        (engine_artifact("NVIDIA H100 PCIe", "9.0", "10.3.0"), H100, "'NVIDIA H100 PCIe'"),
        (
            engine_artifact("NVIDIA H100 80GB HBM3", "8.0", "10.3.0"),
            H100,
            "compute capability 8.0, this GPU has 9.0",
        ),
        (
            engine_artifact("NVIDIA H100 80GB HBM3", "9.0", "10.5.0"),
            H100,
            "TensorRT 10.5.0, this is TensorRT 10.3.0",
        ),
        (
            engine_artifact("NVIDIA H100 80GB HBM3", "9.0", "10.3.0"),
            Hardware(False, None, None, "10.3.0", ("CPUExecutionProvider",)),
            "no CUDA GPU",
        ),
        (
            engine_artifact("NVIDIA H100 80GB HBM3", "9.0", "10.3.0"),
            Hardware(True, "NVIDIA H100 80GB HBM3", "9.0", None, ("CPUExecutionProvider",)),
            "tensorrt package is not installed",
        ),
    ],
    ids=["match", "match-case", "gpu", "capability", "version", "no-gpu", "no-tensorrt"],
)
def test_engine_mismatch(artifact: dict, hardware: Hardware, reason: str | None) -> None:
    found = engine_mismatch(artifact, hardware)
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


def test_explicit_tensorrt_says_why_it_cannot_run(folder: Path, manifest: dict[str, Any]) -> None:
    hardware = Hardware.detect()
    if hardware.cuda and hardware.tensorrt_version:
        pytest.skip("TensorRT and a GPU are here: the reason would be the missing engine")
    with pytest.raises(BackendError, match="^tensorrt: .*(not installed|no CUDA GPU)"):
        load_backend(folder, manifest, "A2B", choice="tensorrt", hardware=hardware)
    with pytest.raises(
        BackendError,
        match="no TensorRT engine for A2B .*i2i models build-engines .*repository tiny`",
    ):
        load_backend(folder, manifest, "A2B", choice="tensorrt", hardware=H100)


@pytest.fixture
def engine_folder(tiny_repository: Path, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A copy of the repository with an A2B engine built for an A100, and no checkpoint."""
    folder = copy_version(tiny_repository, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    plan = folder / "A2B.nvidia-a100-sxm4-80gb.plan"
    plan.write_bytes(b"not a real engine")
    artifact = engine_artifact("NVIDIA A100-SXM4-80GB", "8.0", "10.3.0", file=plan.name)
    artifact["sha256"] = hashlib.sha256(plan.read_bytes()).hexdigest()
    artifact["bytes"] = plan.stat().st_size
    artifact["parity"] = copy.deepcopy(manifest["artifacts"][0]["parity"])
    manifest["artifacts"].append(artifact)
    # Without the source checkpoint, PyTorch on the GPU is out and ONNX on the CPU is left.
    manifest["source"]["checkpoint"] = str(tmp_path / "elsewhere.pt")
    return folder, write_manifest(folder, manifest)


def test_auto_warns_about_an_engine_for_another_gpu_and_falls_back(
    engine_folder: tuple[Path, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    folder, manifest = engine_folder
    with caplog.at_level(logging.INFO, logger="i2i.serving.backends"):
        backend = load_backend(folder, manifest, "A2B", hardware=H100)
    assert (backend.name, backend.artifact) == ("onnxruntime-cpu", "A2B.onnx")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "A2B.nvidia-a100-sxm4-80gb.plan" in warnings[0]
    assert "NVIDIA A100-SXM4-80GB (compute capability 8.0)" in warnings[0]
    assert "NVIDIA H100 80GB HBM3 (compute capability 9.0)" in warnings[0]
    with pytest.raises(BackendError, match=r"no engine for this GPU.*A2B\.nvidia-a100"):
        load_backend(folder, manifest, "A2B", choice="tensorrt", hardware=H100)


def test_auto_falls_back_when_a_fitting_engine_does_not_load(
    engine_folder: tuple[Path, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    folder, manifest = engine_folder
    a100 = Hardware(True, "NVIDIA A100-SXM4-80GB", "8.0", "10.3.0", ("CPUExecutionProvider",))
    with caplog.at_level(logging.WARNING, logger="i2i.serving.backends"):
        backend = load_backend(folder, manifest, "A2B", hardware=a100)
    assert backend.name == "onnxruntime-cpu"
    assert any("A2B.nvidia-a100" in r.getMessage() for r in caplog.records)
    with pytest.raises(BackendError, match="tensorrt"):
        load_backend(folder, manifest, "A2B", choice="tensorrt", hardware=a100)


# --- TensorRT and CUDA, faked at their documented APIs (tests/runtime/fakes.py) ------------

FAKE_GPU = ("NVIDIA H100 80GB HBM3", 9, 0)
FAKE_PROFILE = {"min": [1, 16, 16, 3], "opt": [2, 32, 32, 3], "max": [4, 64, 64, 3]}


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any `import torch` from here on fails, as in a serving image."""
    monkeypatch.setitem(sys.modules, "torch", None)


def test_hardware_is_detected_without_torch(
    monkeypatch: pytest.MonkeyPatch, no_torch: None
) -> None:
    install(monkeypatch, devices=[("NVIDIA A10G", 8, 6), FAKE_GPU], version="10.3.0")
    assert Hardware.detect(1) == Hardware(
        cuda=True,
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability="9.0",
        tensorrt_version="10.3.0",
        ort_providers=tuple(ort.get_available_providers()),
    )
    assert Hardware.detect(0).gpu_name == "NVIDIA A10G"
    assert not Hardware.detect(2).cuda  # no such device


def test_hardware_without_gpu_bindings_has_no_gpu(
    monkeypatch: pytest.MonkeyPatch, no_torch: None, caplog: pytest.LogCaptureFixture
) -> None:
    for module in ("cuda.bindings.runtime", "pynvml", "tensorrt"):
        monkeypatch.setitem(sys.modules, module, None)
    with caplog.at_level(logging.INFO, logger="i2i.serving.backends"):
        hardware = Hardware.detect()
    assert hardware == Hardware(False, None, None, None, tuple(ort.get_available_providers()))
    assert any("cuda-python" in r.getMessage() for r in caplog.records)


def fake_engine_version(
    tiny_repository: Path,
    tmp_path: Path,
    graph: str = "A2B.fp16.onnx",
    recorded: dict[str, list[int]] = FAKE_PROFILE,
) -> tuple[Path, dict[str, Any]]:
    """A copy of the repository whose A2B has a fake engine for FAKE_GPU and TensorRT
    10.13.0, running `graph`, whose manifest records the profile `recorded`."""
    folder = copy_version(tiny_repository, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    source = folder / graph if (folder / graph).exists() else Path(graph)
    profile = {"image": [FAKE_PROFILE[k] for k in ("min", "opt", "max")]}
    plan = write_plan(folder / "A2B.nvidia-h100-80gb-hbm3.plan", source, profile)
    artifact = engine_artifact(FAKE_GPU[0], "9.0", "10.13.0", file=plan.name)
    artifact["tensorrt"]["profiles"] = [recorded]
    artifact["sha256"] = hashlib.sha256(plan.read_bytes()).hexdigest()
    artifact["bytes"] = plan.stat().st_size
    artifact["parity"] = copy.deepcopy(manifest["artifacts"][0]["parity"])
    manifest["artifacts"].append(artifact)
    return folder, write_manifest(folder, manifest)


def test_tensorrt_backend_runs_the_engine_through_the_runner(
    tiny_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_torch: None
) -> None:
    trt = install(monkeypatch, devices=[FAKE_GPU])
    folder, manifest = fake_engine_version(tiny_repository, tmp_path)
    backend = load_backend(folder, manifest, "A2B")  # auto: the engine fits this GPU
    assert (backend.name, backend.artifact, backend.precision) == (
        "tensorrt",
        "A2B.nvidia-h100-80gb-hbm3.plan",
        "fp16",
    )
    assert backend.max_batch == 4 and backend.size_range == ((16, 16), (64, 64))
    session = ort.InferenceSession(
        str(folder / "A2B.fp16.onnx"), providers=["CPUExecutionProvider"]
    )
    for batch, size in [(1, 16), (3, 48), (4, 64)]:
        x = images(batch, size, size, seed=batch)
        np.testing.assert_array_equal(backend.run(x), session.run(None, {"image": x})[0])
    with pytest.raises(ValueError, match=r"outside the engine's profile .*build-engines --force"):
        backend.run(images(5, 32, 32))
    assert backend.accepts_size(80, 80) is not None
    backend.close()
    assert trt.cudart.memory == {} and trt.cudart.streams == {}


def test_the_accepted_range_is_the_engines_not_the_manifests(
    tiny_repository: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    install(monkeypatch, devices=[FAKE_GPU])
    wider = {"min": [1, 8, 8, 3], "opt": [4, 32, 32, 3], "max": [16, 128, 128, 3]}
    folder, manifest = fake_engine_version(tiny_repository, tmp_path, recorded=wider)
    with caplog.at_level(logging.WARNING, logger="i2i.serving.backends"):
        backend = load_backend(folder, manifest, "A2B", choice="tensorrt")
    assert backend.max_batch == 4 and backend.size_range == ((16, 16), (64, 64))
    assert any("using the engine's" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("deserialize_cuda_engine", "deserialize_cuda_engine failed: returned None"),
        ("create_execution_context", "create_execution_context failed: returned None"),
        ("set_input_shape", r"set_input_shape\('image', \(4, 64, 64, 3\)\) failed"),
        ("set_tensor_address", r"set_tensor_address\('image'\) failed"),
    ],
)
def test_an_engine_tensorrt_refuses_is_a_clear_backend_error(
    tiny_repository: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    call: str,
    message: str,
) -> None:
    trt = install(monkeypatch, devices=[FAKE_GPU])
    folder, manifest = fake_engine_version(tiny_repository, tmp_path)
    trt.fail.add(call)
    with pytest.raises(BackendError, match=f"^tensorrt: .*TensorRT {message}.*build-engines"):
        load_backend(folder, manifest, "A2B", choice="tensorrt")
    with caplog.at_level(logging.WARNING, logger="i2i.serving.backends"):
        fallback = load_backend(folder, manifest, "A2B")  # auto: warns and falls back
    assert fallback.name == "onnxruntime-cpu"
    assert any(call in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert trt.cudart.memory == {} and trt.cudart.streams == {}


def test_a_failed_execution_fails_the_batch_naming_the_call(
    tiny_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trt = install(monkeypatch, devices=[FAKE_GPU])
    folder, manifest = fake_engine_version(tiny_repository, tmp_path)
    backend = load_backend(folder, manifest, "A2B", choice="tensorrt")
    trt.fail.add("execute_async_v3")
    with pytest.raises(EngineError, match="execute_async_v3 failed: returned False"):
        backend.run(images(2, 32, 32))
    trt.fail.clear()
    assert backend.run(images(2, 32, 32)).shape == (2, 32, 32, 3)


def test_an_engine_whose_dtypes_are_not_the_manifests_is_refused(
    tiny_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, devices=[FAKE_GPU])
    half = invert_graph(tmp_path / "half.onnx", TensorProto.FLOAT16)  # outputs float16
    folder, manifest = fake_engine_version(tiny_repository, tmp_path, graph=str(half))
    with pytest.raises(
        BackendError, match=r"engine's tensors \(input image uint8, output translated float16\)"
    ):
        load_backend(folder, manifest, "A2B", choice="tensorrt")


def test_a_multimodal_engine_gets_its_style_in_the_engines_dtype(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trt = install(monkeypatch, devices=[FAKE_GPU])
    graph = tmp_path / "style.onnx"
    style_graph(graph, style_size=2)
    plan = write_plan(
        tmp_path / "A2B.plan", graph, {"image": [[1, 8, 8, 3], [2, 8, 8, 3], [2, 16, 16, 3]]}
    )
    spec = style_spec(style_size=2)
    artifact = {
        "precision": "fp16",
        "sha256": hashlib.sha256(plan.read_bytes()).hexdigest(),
        "tensorrt": {
            "profiles": [{"min": [1, 8, 8, 3], "opt": [2, 8, 8, 3], "max": [2, 16, 16, 3]}]
        },
    }
    backend = TensorRTBackend(plan, artifact, spec)
    out = backend.run(np.full((2, 8, 8, 3), 10, np.uint8), np.array([[1, 2], [3, 4]], np.float64))
    assert out[:, 0, 0, 0].tolist() == [13, 17]
    assert trt.contexts[0].runs == 1


def test_onnxruntime_tensorrt_lets_the_graph_types_decide_precision(
    folder: Path, manifest: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No trt_fp16_enable for an FP16 graph: that flag would let TensorRT run the
    normalisations the graph keeps in FP32 in FP16 too."""
    asked: list[Any] = []
    session = ort.InferenceSession

    def recording(path: str, options: Any, providers: list[Any]) -> Any:
        asked.extend(providers)
        return session(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", recording)
    load_backend(folder, manifest, "A2B", choice="onnxruntime", precision="fp16", hardware=TRT_EP)
    options = dict(asked)["TensorrtExecutionProvider"]
    assert options["device_id"] == 0 and options["trt_engine_cache_enable"] is True
    assert not options.get("trt_fp16_enable")


# --- GPU paths (skipped without one) -------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
def test_pytorch_cuda_agrees_with_cpu(tiny_checkpoint_path: Path) -> None:
    gpu = load_checkpoint_backend(tiny_checkpoint_path, "A2B", device="cuda")
    assert gpu.name == "pytorch-cuda"
    x = images(4, 32, 32)
    assert within_one_level(gpu.run(x), translator_output(tiny_checkpoint_path, "A2B", x)) > 0.999


@pytest.mark.gpu
@needs_cuda
def test_onnxruntime_cuda(folder: Path, manifest: dict[str, Any], cpu_backend: Backend) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA execution provider (pip install onnxruntime-gpu)")
    backend = load_backend(folder, manifest, "A2B", choice="onnxruntime", precision="fp32")
    assert backend.name in ("onnxruntime-cuda", "onnxruntime-tensorrt")
    x = images(2, 32, 32)
    assert within_one_level(backend.run(x), cpu_backend.run(x)) > 0.999


@pytest.mark.tensorrt
@pytest.mark.skipif(
    not CUDA or Hardware.detect().tensorrt_version is None,
    reason="needs the tensorrt package and a CUDA GPU",
)
def test_native_tensorrt_engine(tiny_checkpoint_path: Path, tmp_path: Path) -> None:
    from i2i.export import export_checkpoint  # tests may import export; serving may not

    folder, manifest = export_checkpoint(
        tiny_checkpoint_path,
        tmp_path / "repository",
        "tiny",
        formats=["onnx", "onnx-fp16", "tensorrt"],
        shapes="1x32x32:2x32x32:4x64x64",
        max_batch=4,
    )
    backend = load_backend(folder, manifest, "A2B", choice="tensorrt")
    assert backend.name == "tensorrt" and backend.artifact.endswith(".plan")
    assert load_backend(folder, manifest, "A2B").name == "tensorrt"  # auto prefers it
    x = images(2, 32, 32)
    cpu = load_backend(folder, manifest, "A2B", choice="onnxruntime-cpu", precision="fp32")
    assert within_one_level(backend.run(x), cpu.run(x)) > 0.9
    with pytest.raises(ValueError, match="outside the engine's profile"):
        backend.run(images(8, 32, 32))
