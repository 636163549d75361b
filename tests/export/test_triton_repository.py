"""The Triton model repository written from an i2i one (i2i.repository.triton).

Every config.pbtxt is parsed strictly into Triton's own ModelConfig message and checked
against the ONNX graph it serves, opened with ONNX Runtime (names, dtypes, ranks, sizes, as
Triton's backends compare them); the copied graphs run on uint8 batches. Triton itself does
not run here; TensorRT engines are fake files (no TensorRT here), added to real manifests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format

from i2i.cli.export import export_main
from i2i.cli.main import main as i2i_main
from i2i.export import export_checkpoint
from i2i.oip import model_config_pb2 as mc
from i2i.repository import RepositoryError, add_artifacts, read_manifest
from i2i.repository.triton import (
    DEFAULT_MAX_BATCH,
    TritonExportError,
    TritonOptions,
    export_triton,
)
from tests.conftest import MultimodalModel, untrained_checkpoint
from tests.multidomain_family import multidomain_checkpoint, registered
from tests.serving.conftest import MODEL

_ORT_TYPES = {
    mc.TYPE_UINT8: "tensor(uint8)",
    mc.TYPE_FP32: "tensor(float)",
    mc.TYPE_INT64: "tensor(int64)",
}


# ---- helpers -------------------------------------------------------------------------------


def parse_config(folder: Path) -> mc.ModelConfig:
    """`folder/config.pbtxt` parsed strictly (unknown fields or bad values raise)."""
    return text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())


def full_shape(tensor: Any) -> list[int]:
    """The tensor's shape as the model sees it: the batch, then dims (or reshape's shape)."""
    dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
    return [-1, *dims]


def check_against_onnx(config: mc.ModelConfig, graph: Path) -> ort.InferenceSession:
    """Fail unless the config's inputs and outputs are the graph's: names, dtypes, shapes.

    Symbolic sizes of the graph are -1; a fixed size must appear as itself (Triton rejects
    -1 in the config against a fixed model dim). Returns the session.
    """
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    for declared, actual in (
        (config.input, session.get_inputs()),
        (config.output, session.get_outputs()),
    ):
        assert sorted(t.name for t in declared) == sorted(a.name for a in actual)
        by_name = {a.name: a for a in actual}
        for tensor in declared:
            real = by_name[tensor.name]
            assert _ORT_TYPES[tensor.data_type] == real.type, tensor.name
            model_shape = [d if isinstance(d, int) else -1 for d in real.shape]
            assert full_shape(tensor) == model_shape, tensor.name
    assert config.max_batch_size > 0
    return session


def triton_models(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def images(n: int = 3, size: int = 32, seed: int = 0, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def artifact(manifest: Mapping[str, Any], **match: str) -> Mapping[str, Any]:
    """The manifest's one artifact whose fields equal `match` (graph absent = translator)."""
    found = [
        a
        for a in manifest["artifacts"]
        if all(a.get(k, "translator" if k == "graph" else None) == v for k, v in match.items())
    ]
    assert len(found) == 1, (match, found)
    return found[0]


def run(session: ort.InferenceSession, **feeds: np.ndarray) -> np.ndarray:
    (out,) = session.run(["translated"], feeds)
    return np.asarray(out)


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def md_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy multi-domain model (day, dusk, night) exported as model "domains", ONNX FP32."""
    root = tmp_path_factory.mktemp("triton-multidomain")
    checkpoint = multidomain_checkpoint(root / "checkpoints" / "domains.pt")
    with registered():
        export_checkpoint(checkpoint, root / "repository", "domains", formats=["onnx"])
    return root / "repository"


@pytest.fixture(scope="module")
def unet_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CycleGAN with U-Net generators (one fixed size, 128) as model "unet"."""
    root = tmp_path_factory.mktemp("triton-unet")
    checkpoint = untrained_checkpoint(root / "unet.pt", netG="unet_128")
    export_checkpoint(checkpoint, root / "repository", "unet", formats=["onnx"])
    return root / "repository"


@pytest.fixture
def copied_repository(tiny_repository: Path, tmp_path: Path) -> Path:
    """A writable copy of the session's tiny repository."""
    return Path(shutil.copytree(tiny_repository, tmp_path / "i2i"))


# ---- ONNX Runtime platform -----------------------------------------------------------------


def test_every_direction_becomes_a_triton_model_that_matches_its_graph(
    tiny_repository: Path, tmp_path: Path
) -> None:
    out = tmp_path / "triton"
    written = export_triton(tiny_repository, out)
    manifest = read_manifest(tiny_repository, MODEL)
    assert triton_models(out) == {f"{MODEL}_A2B", f"{MODEL}_B2A"} == {m.name for m in written}
    for direction in ("A2B", "B2A"):
        folder = out / f"{MODEL}_{direction}"
        assert sorted(p.name for p in folder.iterdir()) == ["1", "config.pbtxt"]
        assert [p.name for p in (folder / "1").iterdir()] == ["model.onnx"]
        config = parse_config(folder)
        assert config.name == folder.name
        assert config.platform == "onnxruntime_onnx"
        assert config.max_batch_size == DEFAULT_MAX_BATCH
        assert [t.name for t in config.input] == ["image"]
        assert [t.name for t in config.output] == ["translated"]
        assert list(config.input[0].dims) == [-1, -1, 3]
        assert config.HasField("dynamic_batching")
        assert [(g.kind, g.count) for g in config.instance_group] == [
            (mc.ModelInstanceGroup.KIND_GPU, 1)
        ]
        assert config.version_policy.WhichOneof("policy_choice") == "latest"
        assert config.version_policy.latest.num_versions == 1
        copied = folder / "1" / "model.onnx"
        original = (
            tiny_repository
            / MODEL
            / "1"
            / artifact(manifest, direction=direction, precision="fp32")["file"]
        )
        assert sha256(copied) == sha256(original)
        assert copied.stat().st_ino != original.stat().st_ino  # a copy, not a link
        session = check_against_onnx(config, copied)
        batch = images(3)
        reference = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
        np.testing.assert_array_equal(run(session, image=batch), run(reference, image=batch))


def test_options_reach_the_config(tiny_repository: Path, tmp_path: Path) -> None:
    options = TritonOptions(
        precision="fp16",
        max_batch=4,
        instances=2,
        kind="cpu",
        max_queue_delay_us=500,
        preferred_batch_sizes=(4, 2),
        version_policy="all",
    )
    out = tmp_path / "triton"
    export_triton(tiny_repository, out, [MODEL], 1, options)
    manifest = read_manifest(tiny_repository, MODEL, 1)
    for direction in ("A2B", "B2A"):
        folder = out / f"{MODEL}_{direction}"
        config = parse_config(folder)
        assert config.max_batch_size == 4
        assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
        assert config.dynamic_batching.max_queue_delay_microseconds == 500
        assert [(g.kind, g.count) for g in config.instance_group] == [
            (mc.ModelInstanceGroup.KIND_CPU, 2)
        ]
        assert config.version_policy.WhichOneof("policy_choice") == "all"
        fp16 = artifact(manifest, direction=direction, precision="fp16")
        graph = folder / "1" / "model.onnx"
        assert sha256(graph) == fp16["sha256"]
        session = check_against_onnx(config, graph)
        assert run(session, image=images(2)).shape == (2, 32, 32, 3)


def test_multimodal_models_take_a_style_input(
    multimodal_model: MultimodalModel, tmp_path: Path
) -> None:
    out = tmp_path / "triton"
    export_triton(multimodal_model.repository, out)
    name = multimodal_model.name
    assert triton_models(out) == {f"{name}_A2B", f"{name}_B2A"}  # style encoders stay out
    for direction in ("A2B", "B2A"):
        config = parse_config(out / f"{name}_{direction}")
        style = {t.name: t for t in config.input}["style"]
        assert style.data_type == mc.TYPE_FP32
        assert list(style.dims) == [multimodal_model.style_dim]
        session = check_against_onnx(config, out / f"{name}_{direction}" / "1" / "model.onnx")
        codes = (
            np.random.default_rng(1)
            .standard_normal((2, multimodal_model.style_dim))
            .astype(np.float32)
        )
        result = run(session, image=images(2), style=codes)
        assert result.shape == (2, 32, 32, 3) and result.dtype == np.uint8


def test_multi_domain_models_get_the_conditional_graph_with_a_domain_input(
    md_repository: Path, tmp_path: Path
) -> None:
    out = tmp_path / "triton"
    export_triton(md_repository, out)
    manifest = read_manifest(md_repository, "domains")
    assert triton_models(out) == {
        "domains",
        "domains_to_day",
        "domains_to_dusk",
        "domains_to_night",
    }
    config = parse_config(out / "domains")
    domain = {t.name: t for t in config.input}["domain"]
    assert domain.data_type == mc.TYPE_INT64
    assert list(domain.dims) == [1]
    assert domain.HasField("reshape") and list(domain.reshape.shape) == []
    conditional = check_against_onnx(config, out / "domains" / "1" / "model.onnx")
    assert (
        sha256(out / "domains" / "1" / "model.onnx")
        == artifact(manifest, graph="conditional")["sha256"]
    )
    batch = images(3, seed=5)
    for direction, spec in manifest["directions"].items():
        folder = out / f"domains_{direction}"
        single = check_against_onnx(parse_config(folder), folder / "1" / "model.onnx")
        index = np.full(3, spec["domain_index"], dtype=np.int64)
        # the shared graph with a direction's index translates as that direction's own model
        np.testing.assert_array_equal(
            run(conditional, image=batch, domain=index), run(single, image=batch)
        )


def test_a_fixed_size_graph_keeps_its_size(unet_repository: Path, tmp_path: Path) -> None:
    out = tmp_path / "triton"
    export_triton(unet_repository, out)
    for direction in ("A2B", "B2A"):
        config = parse_config(out / f"unet_{direction}")
        assert list(config.input[0].dims) == [128, 128, 3]
        assert list(config.output[0].dims) == [128, 128, 3]
        check_against_onnx(config, out / f"unet_{direction}" / "1" / "model.onnx")


def add_version(repository: Path, name: str, number: int) -> None:
    """A copy of version 1 published as `number` (same artifacts, its own manifest)."""
    source, target = repository / name / "1", repository / name / str(number)
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = number
    (target / "manifest.json").write_text(json.dumps(manifest))


def test_versions_are_the_repositorys(copied_repository: Path, tmp_path: Path) -> None:
    add_version(copied_repository, MODEL, 3)
    export_triton(copied_repository, tmp_path / "all")
    assert sorted(p.name for p in (tmp_path / "all" / f"{MODEL}_A2B").iterdir()) == [
        "1",
        "3",
        "config.pbtxt",
    ]
    export_triton(copied_repository, tmp_path / "one", [MODEL], 3)
    assert sorted(p.name for p in (tmp_path / "one" / f"{MODEL}_A2B").iterdir()) == [
        "3",
        "config.pbtxt",
    ]


def test_hardlink_links_the_artifacts(tiny_repository: Path, tmp_path: Path) -> None:
    out = tmp_path / "triton"
    export_triton(tiny_repository, out, options=TritonOptions(hardlink=True))
    manifest = read_manifest(tiny_repository, MODEL)
    original = (
        tiny_repository
        / MODEL
        / "1"
        / artifact(manifest, direction="A2B", precision="fp32")["file"]
    )
    assert (out / f"{MODEL}_A2B" / "1" / "model.onnx").stat().st_ino == original.stat().st_ino


# ---- TensorRT platform (fake engines: no TensorRT here) --------------------------------------


def add_fake_engine(
    repository: Path,
    direction: str,
    gpu: str,
    cc: str,
    max_batch: int = 16,
    trt: str = "10.3.0",
    model: str = MODEL,
) -> bytes:
    """Add a made-up plan file for `direction` to version 1's manifest; return its bytes."""
    data = f"not a real engine: {direction} {gpu} {cc}".encode()
    source = repository.parent / f"{direction}-{cc}.plan"
    source.write_bytes(data)
    file = f"{direction}.{gpu.lower().replace(' ', '-')}.plan"
    entry = {
        "direction": direction,
        "format": "tensorrt",
        "precision": "fp16",
        "file": file,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "tensorrt": {
            "version": trt,
            "gpu": gpu,
            "compute_capability": cc,
            "profiles": [
                {"min": [1, 64, 64, 3], "opt": [8, 256, 256, 3], "max": [max_batch, 512, 512, 3]}
            ],
        },
        "parity": {
            "reference": "onnx-fp32",
            "max_abs_diff": 1,
            "fraction_over_1": 0.0,
            "psnr": 50.0,
        },
    }
    add_artifacts(repository, model, 1, {file: source}, [entry])
    return data


def test_tensorrt_platform_serves_the_engines(copied_repository: Path, tmp_path: Path) -> None:
    plans = {
        d: add_fake_engine(copied_repository, d, "NVIDIA H100 80GB HBM3", "9.0")
        for d in ("A2B", "B2A")
    }
    out = tmp_path / "triton"
    export_triton(copied_repository, out, options=TritonOptions(platform="tensorrt"))
    for direction, data in plans.items():
        folder = out / f"{MODEL}_{direction}"
        config = parse_config(folder)
        assert config.platform == "tensorrt_plan"
        assert config.max_batch_size == min(DEFAULT_MAX_BATCH, 16)
        assert [t.name for t in config.input] == ["image"] and list(config.input[0].dims) == [
            -1,
            -1,
            3,
        ]
        assert config.input[0].data_type == mc.TYPE_UINT8
        assert [p.name for p in (folder / "1").iterdir()] == ["model.plan"]
        assert (folder / "1" / "model.plan").read_bytes() == data
        assert not config.cc_model_filenames
    export_triton(
        copied_repository,
        tmp_path / "big",
        options=TritonOptions(platform="tensorrt", max_batch=16),
    )
    assert parse_config(tmp_path / "big" / f"{MODEL}_A2B").max_batch_size == 16
    with pytest.raises(TritonExportError, match="above the 16 images its TensorRT engines take"):
        export_triton(
            copied_repository,
            tmp_path / "bigger",
            options=TritonOptions(platform="tensorrt", max_batch=32),
        )


def test_engines_for_several_compute_capabilities_use_cc_model_filenames(
    copied_repository: Path, tmp_path: Path
) -> None:
    for direction in ("A2B", "B2A"):
        add_fake_engine(copied_repository, direction, "NVIDIA H100 80GB HBM3", "9.0")
        add_fake_engine(copied_repository, direction, "NVIDIA A100-SXM4-80GB", "8.0", max_batch=4)
    out = tmp_path / "triton"
    export_triton(copied_repository, out, options=TritonOptions(platform="tensorrt"))
    folder = out / f"{MODEL}_A2B"
    config = parse_config(folder)
    assert dict(config.cc_model_filenames) == {"8.0": "model_sm80.plan", "9.0": "model_sm90.plan"}
    assert config.max_batch_size == 4  # the smaller engine's limit
    assert sorted(p.name for p in (folder / "1").iterdir()) == [
        "model_sm80.plan",
        "model_sm90.plan",
    ]
    assert b"A100" in (folder / "1" / "model_sm80.plan").read_bytes()
    export_triton(
        copied_repository,
        tmp_path / "h100",
        options=TritonOptions(platform="tensorrt", gpu="nvidia-h100-80gb-hbm3"),
    )
    assert [p.name for p in (tmp_path / "h100" / f"{MODEL}_A2B" / "1").iterdir()] == ["model.plan"]
    assert b"H100" in (tmp_path / "h100" / f"{MODEL}_A2B" / "1" / "model.plan").read_bytes()


def test_engines_that_share_a_compute_capability_need_a_gpu_choice(
    copied_repository: Path, tmp_path: Path
) -> None:
    for direction in ("A2B", "B2A"):
        add_fake_engine(copied_repository, direction, "NVIDIA H100 80GB HBM3", "9.0")
        add_fake_engine(copied_repository, direction, "NVIDIA H100 PCIe", "9.0")
    with pytest.raises(TritonExportError, match="choose one GPU with --gpu"):
        export_triton(copied_repository, tmp_path / "a", options=TritonOptions(platform="tensorrt"))
    export_triton(
        copied_repository,
        tmp_path / "b",
        options=TritonOptions(platform="tensorrt", gpu="NVIDIA H100 PCIe"),
    )
    assert b"PCIe" in (tmp_path / "b" / f"{MODEL}_B2A" / "1" / "model.plan").read_bytes()
    with pytest.raises(TritonExportError, match="no TensorRT engine built on GPU 'Tesla T4'"):
        export_triton(
            copied_repository,
            tmp_path / "c",
            options=TritonOptions(platform="tensorrt", gpu="Tesla T4"),
        )


def test_a_multi_domain_models_conditional_graph_stays_on_onnx_runtime_with_tensorrt(
    md_repository: Path, tmp_path: Path
) -> None:
    repository = Path(shutil.copytree(md_repository, tmp_path / "i2i"))
    directions = list(read_manifest(repository, "domains")["directions"])
    for direction in directions:
        add_fake_engine(repository, direction, "NVIDIA L4", "8.9", model="domains")
    out = tmp_path / "triton"
    export_triton(repository, out, options=TritonOptions(platform="tensorrt"))
    for direction in directions:
        assert parse_config(out / f"domains_{direction}").platform == "tensorrt_plan"
    config = parse_config(out / "domains")
    assert config.platform == "onnxruntime_onnx"
    check_against_onnx(config, out / "domains" / "1" / "model.onnx")


def test_tensorrt_without_engines_is_refused(tiny_repository: Path, tmp_path: Path) -> None:
    with pytest.raises(TritonExportError, match="no TensorRT engine; build one"):
        export_triton(
            tiny_repository, tmp_path / "triton", options=TritonOptions(platform="tensorrt")
        )
    assert not (tmp_path / "triton").exists()


# ---- errors --------------------------------------------------------------------------------


def test_an_unknown_model_is_refused_naming_the_models_there(
    tiny_repository: Path, tmp_path: Path
) -> None:
    with pytest.raises(RepositoryError, match=f"no model 'nope'.*{MODEL}"):
        export_triton(tiny_repository, tmp_path / "triton", ["nope"])
    with pytest.raises(RepositoryError, match="has no version 7"):
        export_triton(tiny_repository, tmp_path / "triton", [MODEL], 7)
    assert not (tmp_path / "triton").exists()


def test_a_missing_onnx_artifact_is_refused(md_repository: Path, tmp_path: Path) -> None:
    with pytest.raises(TritonExportError, match="no ONNX fp16 artifact.*onnx-fp16"):
        export_triton(md_repository, tmp_path / "triton", options=TritonOptions(precision="fp16"))


def test_a_non_empty_out_needs_force_which_keeps_other_models(
    tiny_repository: Path, tmp_path: Path
) -> None:
    out = tmp_path / "triton"
    (out / "other_model" / "1").mkdir(parents=True)
    (out / f"{MODEL}_A2B" / "9").mkdir(parents=True)  # a stale version, replaced with the model
    with pytest.raises(TritonExportError, match="is not empty.*--force"):
        export_triton(tiny_repository, out)
    assert triton_models(out) == {"other_model", f"{MODEL}_A2B"}
    export_triton(tiny_repository, out, replace=True)
    assert triton_models(out) == {"other_model", f"{MODEL}_A2B", f"{MODEL}_B2A"}
    assert sorted(p.name for p in (out / f"{MODEL}_A2B").iterdir()) == ["1", "config.pbtxt"]
    hidden = [p.name for p in (*tmp_path.iterdir(), *out.iterdir()) if p.name.startswith(".")]
    assert hidden == [".triton.lock"]  # the writers' lock, beside OUT: OUT holds only models


def test_an_interrupted_exports_leftovers_are_removed(
    tiny_repository: Path, tmp_path: Path
) -> None:
    out = tmp_path / "triton"
    # what an export killed mid-write leaves: its folder beside a new OUT, or inside OUT
    beside = tmp_path / ".triton.i2i-triton-tmp-0badf00d" / f"{MODEL}_A2B"
    inside = out / ".i2i-triton-tmp-0badf00d" / f"{MODEL}_A2B"
    for folder in (beside, inside):
        folder.mkdir(parents=True)
    export_triton(tiny_repository, out, replace=True)
    assert not beside.parent.exists() and not inside.parent.exists()
    assert triton_models(out) == {f"{MODEL}_A2B", f"{MODEL}_B2A"}


def test_a_changed_artifact_is_refused_and_nothing_is_written(
    copied_repository: Path, tmp_path: Path
) -> None:
    manifest = read_manifest(copied_repository, MODEL)
    path = (
        copied_repository
        / MODEL
        / "1"
        / artifact(manifest, direction="B2A", precision="fp32")["file"]
    )
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size: only the hash tells
    path.write_bytes(bytes(data))
    with pytest.raises(TritonExportError, match="sha256 .* its manifest says"):
        export_triton(copied_repository, tmp_path / "triton")
    assert not (tmp_path / "triton").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".triton.lock"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (TritonOptions(platform="tensorrt", kind="cpu"), "GPUs only"),
        (TritonOptions(max_batch=4, preferred_batch_sizes=(8,)), "exceed max_batch_size 4"),
        (TritonOptions(max_batch=0), "max batch must be >= 1"),
        (TritonOptions(instances=0), "instance count must be >= 1"),
        (TritonOptions(max_queue_delay_us=-1), "max queue delay"),
        (TritonOptions(gpu="Tesla T4"), "--gpu picks TensorRT engines"),
    ],
)
def test_options_that_cannot_work_are_refused(
    tiny_repository: Path, tmp_path: Path, options: TritonOptions, message: str
) -> None:
    with pytest.raises(TritonExportError, match=message):
        export_triton(tiny_repository, tmp_path / "triton", options=options)
    assert not (tmp_path / "triton").exists()


# ---- the command line ----------------------------------------------------------------------


def test_models_export_triton_command(tiny_repository: Path, tmp_path: Path) -> None:
    out = tmp_path / "triton"
    command = [
        sys.executable,
        "-m",
        "i2i.cli",
        "models",
        "export-triton",
        str(tiny_repository),
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [*command, "--max-batch", "4", "--preferred-batch-sizes", "2,4", "--kind", "cpu",
         "--instances", "2", "--max-queue-delay-us", "100"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{MODEL}_A2B" in done.stdout and "onnxruntime_onnx" in done.stdout
    config = parse_config(out / f"{MODEL}_A2B")
    assert config.max_batch_size == 4
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.kind, g.count) for g in config.instance_group] == [
        (mc.ModelInstanceGroup.KIND_CPU, 2)
    ]
    check_against_onnx(config, out / f"{MODEL}_A2B" / "1" / "model.onnx")
    again = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert (
        again.returncode == 2 and "is not empty" in again.stderr and "Traceback" not in again.stderr
    )
    missing = subprocess.run(
        [*command[:-1], str(tmp_path / "x"), "--model", "nope"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert missing.returncode == 2 and "no model 'nope'" in missing.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--version", "1"], "--version needs exactly one --model"),
        (["--preferred-batch-sizes", "4,x"], "whole numbers"),
    ],
)
def test_models_export_triton_usage_errors(
    tiny_repository: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    code = i2i_main(["models", "export-triton", str(tiny_repository), str(tmp_path / "t"), *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_i2i_export_formats_triton_writes_the_triton_repository_beside(
    tiny_checkpoint_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "models"
    (tmp_path / "models-triton" / "other_model").mkdir(parents=True)  # kept: not this model's
    code = export_main(
        [
            str(tiny_checkpoint_path),
            "--repository",
            str(repository),
            "--name",
            "day2dusk",
            "--formats",
            "onnx,triton",
        ]
    )
    assert code == 0
    assert "wrote 2 Triton models" in capsys.readouterr().out
    out = tmp_path / "models-triton"
    assert triton_models(out) == {"other_model", "day2dusk_A2B", "day2dusk_B2A"}
    manifest = read_manifest(repository, "day2dusk")
    assert [a["precision"] for a in manifest["artifacts"]] == [
        "fp32",
        "fp32",
    ]  # triton made no artifact
    for direction in ("A2B", "B2A"):
        check_against_onnx(
            parse_config(out / f"day2dusk_{direction}"),
            out / f"day2dusk_{direction}" / "1" / "model.onnx",
        )
    # The next export writes its own version only (older ones may lack its engines/tensors).
    args = [str(tiny_checkpoint_path), "--repository", str(repository), "--name", "day2dusk"]
    assert export_main([*args, "--formats", "onnx,triton"]) == 0
    assert sorted(p.name for p in (out / "day2dusk_A2B").iterdir()) == ["2", "config.pbtxt"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--formats", "onnx,trition"], "choose from onnx, onnx-fp16, tensorrt, triton"),
        (["--formats", "onnx", "--triton-repository", "x"], "need --formats ...,triton"),
        (["--formats", "onnx,triton", "--triton-platform", "tensorrt"], "needs engines"),
    ],
)
def test_i2i_export_triton_usage_errors(
    tiny_checkpoint_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    code = export_main(
        [str(tiny_checkpoint_path), "--repository", str(tmp_path / "r"), "--name", "m", *flags]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_i2i_export_says_the_version_was_written_when_only_triton_fails(
    tiny_checkpoint_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "triton-file"
    blocker.write_text("a file where the Triton repository should go")
    code = export_main(
        [str(tiny_checkpoint_path), "--repository", str(tmp_path / "models"), "--name", "m",
         "--formats", "triton", "--triton-repository", str(blocker)]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "m/1 was written, but not the Triton repository" in err and "is a file" in err
    assert read_manifest(tmp_path / "models", "m", 1)["version"] == 1


def test_help_texts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        i2i_main(["models", "export-triton", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--platform", "--max-batch", "--instances", "--kind", "--max-queue-delay-us",
                 "--preferred-batch-sizes", "--version-policy", "--hardlink", "--force",
                 "config.pbtxt"):  # fmt: skip
        assert flag in text
    with pytest.raises(SystemExit):
        export_main(["--help"])
    assert "--triton-repository" in capsys.readouterr().out
