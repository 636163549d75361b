"""`i2i models build-engines`: TensorRT engines built into existing repository versions.

TensorRT and a GPU are absent here, so the real refusal is tested as it is, and the flow
around the build (selection, shape checks, skip/force, the build's checked calls, parity
through the engine runner, the timing cache, the atomic manifest update) runs against a
fake of TensorRT 10's and cuda-python's documented Python APIs (tests/runtime/fakes.py),
put where `import tensorrt` and `import cuda.bindings.runtime` find them: only they are
fake. The fake plan names the ONNX graph TensorRT would have compiled, and its engine runs
that graph in ONNX Runtime on the bytes the runner copied, so the parity check compares real
outputs. The real build is the `tensorrt`-marked test, skipped without TensorRT and a GPU.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from i2i.cli import main
from i2i.export import ExportError, engines, export_checkpoint, tensorrt
from i2i.export.engines import Target, build_engines, format_results, select_versions
from i2i.repository import (
    RepositoryError,
    add_artifacts,
    read_manifest,
    sha256_file,
    write_version,
)
from tests.runtime.fakes import PLAN_MAGIC, FakeTensorRT, install

SHAPES = "1x32x32:2x32x32:4x64x64"
GPU = "NVIDIA Fake GPU 80GB"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (hidden ones too) with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def edit_manifest(folder: Path, **changes: Any) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, **changes}, indent=2))


@pytest.fixture
def repo(tiny_repository: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny repository: model "tiny", version 1."""
    return Path(shutil.copytree(tiny_repository, tmp_path / "repo"))


@pytest.fixture
def three_versions(repo: Path) -> Path:
    """tiny versions 1 and 2, other version 1 (copies of tiny/1)."""
    shutil.copytree(repo / "tiny" / "1", repo / "tiny" / "2")
    edit_manifest(repo / "tiny" / "2", version=2)
    shutil.copytree(repo / "tiny" / "1", repo / "other" / "1")
    edit_manifest(repo / "other" / "1", name="other")
    return repo


TARGET = Target(GPU, "9.0", "10.13.0")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTensorRT:
    """TensorRT 10.13 and one GPU named GPU (compute capability 9.0), faked."""
    return install(monkeypatch, devices=[(GPU, 9, 0)], version=TARGET.tensorrt_version)


def engine_entries(repo: Path, name: str = "tiny", version: int = 1) -> dict[str, dict]:
    manifest = read_manifest(repo, name, version, verify=True)
    return {a["file"]: a for a in manifest["artifacts"] if a["format"] == "tensorrt"}


# --- refusals: nothing written --------------------------------------------------------------


def test_without_tensorrt_or_a_gpu_nothing_is_written(repo: Path) -> None:
    if tensorrt.availability() is None:
        pytest.skip("TensorRT and a GPU are present: the refusal cannot happen here")
    before = snapshot(repo)
    with pytest.raises(ExportError) as error:
        build_engines(repo, shapes=SHAPES)
    message = str(error.value)
    assert message.startswith("cannot build TensorRT engines on this machine")
    assert "NVIDIA GPU" in message or "`tensorrt` Python package" in message
    assert "Nothing was written" in message
    assert snapshot(repo) == before


def test_cli_exits_2_with_the_reason(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if tensorrt.availability() is None:
        pytest.skip("TensorRT and a GPU are present: the refusal cannot happen here")
    before = snapshot(repo)
    assert main(["models", "build-engines", str(repo), "--all"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: cannot build TensorRT engines on this machine")
    assert captured.out == ""
    assert snapshot(repo) == before


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ("1x30x30:1x32x32:1x32x32", r"--shapes 1x30x30: tiny version 1 A2B: .* multiples of 4"),
        ("1x32x32:2x32x32:4x64x66", r"--shapes 4x64x66: .* \(nearest accepted size: 64x68\)"),
        ("32x32", "expected MIN:OPT:MAX"),
        ("1x32x32:2x32x32:64x32x32", "max batch 64 exceeds --max-batch 32"),
    ],
)
def test_bad_shapes_are_refused_before_anything(repo: Path, shapes: str, message: str) -> None:
    """Checked before TensorRT is even looked for: the error here is the shape, not the GPU."""
    before = snapshot(repo)
    with pytest.raises(ExportError, match=message):
        build_engines(repo, shapes=shapes)
    assert snapshot(repo) == before


def test_bad_shapes_build_nothing_even_with_tensorrt(repo: Path, fake: FakeTensorRT) -> None:
    before = snapshot(repo)
    with pytest.raises(ExportError, match="--shapes 1x30x30"):
        build_engines(repo, shapes="1x30x30:1x32x32:1x32x32")
    assert fake.builds == [] and snapshot(repo) == before


def test_bad_numbers_are_refused(repo: Path) -> None:
    with pytest.raises(ExportError, match="--max-batch must be at least 1, got 0"):
        build_engines(repo, max_batch=0)
    with pytest.raises(ExportError, match="--workspace-gb must be positive"):
        build_engines(repo, workspace_gb=0)


# --- which models and versions --------------------------------------------------------------


def test_selection_of_models_and_versions(three_versions: Path) -> None:
    repo = three_versions
    assert select_versions(repo) == [("other", 1), ("tiny", 2)]  # all, each its latest
    assert select_versions(repo, ["tiny"]) == [("tiny", 2)]
    assert select_versions(repo, ["tiny", "other", "tiny"], 1) == [("tiny", 1), ("other", 1)]
    known = r"models there: other \(versions 1\); tiny \(versions 1, 2\)"
    with pytest.raises(RepositoryError, match=rf"no model 'nope', 'gone' in .*; {known}"):
        select_versions(repo, ["tiny", "nope", "gone"])
    with pytest.raises(RepositoryError, match=rf"'other' in .* has no version 2; {known}"):
        select_versions(repo, None, 2)


def test_selection_in_an_empty_or_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="no models in .*: export one first"):
        select_versions(tmp_path)
    with pytest.raises(RepositoryError, match="does not exist or is not a folder"):
        build_engines(tmp_path / "nowhere")


def test_only_the_selected_versions_get_engines(three_versions: Path, fake: FakeTensorRT) -> None:
    repo = three_versions
    results = build_engines(repo, ["tiny"], shapes=SHAPES)
    assert [(r.model, r.version, r.direction, r.status) for r in results] == [
        ("tiny", 2, "A2B", "built"),
        ("tiny", 2, "B2A", "built"),
    ]
    assert len(engine_entries(repo, "tiny", 2)) == 2
    assert engine_entries(repo, "tiny", 1) == engine_entries(repo, "other", 1) == {}
    with pytest.raises(RepositoryError, match="no model 'nope'"):
        build_engines(repo, ["nope"], shapes=SHAPES)
    assert len(fake.builds) == 2


# --- the flow around the build (fake TensorRT) ----------------------------------------------


@pytest.mark.parametrize(
    ("version", "source"), [("10.13.0", "fp16.onnx"), ("10.3.0", "onnx")], ids=["typed", "flag"]
)
def test_engines_are_built_checked_and_added(
    repo: Path, fake: FakeTensorRT, tmp_path: Path, version: str, source: str
) -> None:
    fake.__version__ = version
    cache = tmp_path / "timing.cache"
    results = build_engines(repo, shapes=SHAPES, workspace_gb=0.5, timing_cache=cache)
    files = [tensorrt.plan_name(d, GPU) for d in ("A2B", "B2A")]
    assert files == ["A2B.nvidia-fake-gpu-80gb.plan", "B2A.nvidia-fake-gpu-80gb.plan"]
    assert [(r.direction, r.file, r.status) for r in results] == [
        ("A2B", files[0], "built"),
        ("B2A", files[1], "built"),
    ]
    # TensorRT >= 10.12 compiles the FP16 graph, strongly typed; older ones the FP32 graph
    # with the FP16 flag.
    typed = version == "10.13.0"
    assert [b["source"] for b in fake.builds] == [f"A2B.{source}", f"B2A.{source}"]
    assert [(b["strongly_typed"], b["fp16_flag"]) for b in fake.builds] == [(typed, not typed)] * 2
    assert all(b["workspace"] == 1 << 29 for b in fake.builds)
    # One timing cache, read and extended by each build in turn.
    assert cache.read_bytes() == b"tactics for A2B.%s\ntactics for B2A.%s\n" % (
        source.encode(),
        source.encode(),
    )
    entries = engine_entries(repo)  # read back with every hash verified
    assert sorted(entries) == files
    a2b = entries[files[0]]
    assert (a2b["direction"], a2b["precision"]) == ("A2B", "fp16")
    assert a2b["tensorrt"] == {
        "version": version,
        "gpu": GPU,
        "compute_capability": "9.0",
        "strongly_typed": typed,
        "profiles": [{"min": [1, 32, 32, 3], "opt": [2, 32, 32, 3], "max": [4, 64, 64, 3]}],
        "built_from": f"A2B.{source}",
    }
    parity = a2b["parity"]
    assert (parity["reference"], parity["reference_file"]) == ("onnx-fp32", "A2B.onnx")
    # Parity at the profile's min, opt and max shapes, each run by the engine runner.
    assert [(c["batch"], c["height"], c["width"]) for c in parity["cases"]] == [
        (1, 32, 32),
        (2, 32, 32),
        (4, 64, 64),
    ]
    assert [c.runs for c in fake.contexts] == [3, 3]
    assert parity["max_abs_diff"] == max(c["max_abs_diff"] for c in parity["cases"])
    if source == "onnx":  # the "engine" is the FP32 graph itself: identical outputs
        assert parity["psnr"] is None and parity["max_abs_diff"] == 0
    else:
        assert parity["psnr"] >= engines.MIN_PSNR
    table = format_results(results)
    assert (
        table.splitlines()[0] == f"engines for {GPU} (compute capability 9.0), TensorRT {version}"
    )
    assert "A2B        " + files[0] in table and "built" in table


def test_the_default_profile_follows_the_shape_rule(repo: Path, fake: FakeTensorRT) -> None:
    build_engines(repo, ["tiny"], max_batch=4)
    profiles = [e["tensorrt"]["profiles"] for e in engine_entries(repo).values()]
    assert (
        profiles
        == [[{"min": [1, 64, 64, 3], "opt": [1, 256, 256, 3], "max": [4, 512, 512, 3]}]] * 2
    )  # multiples of 4: 64² to 512², tuned for 256² (a fixed-size model: exactly its size)


def test_present_engines_are_skipped_and_force_rebuilds_them(
    repo: Path, fake: FakeTensorRT
) -> None:
    build_engines(repo, shapes=SHAPES)
    built = engine_entries(repo)
    manifest = (repo / "tiny" / "1" / "manifest.json").read_bytes()
    again = build_engines(repo, shapes=SHAPES)
    assert [(r.status, r.detail) for r in again] == [
        ("skipped", "already built for this GPU and TensorRT")
    ] * 2
    assert len(fake.builds) == 2
    assert (repo / "tiny" / "1" / "manifest.json").read_bytes() == manifest

    forced = build_engines(repo, shapes=SHAPES, force=True)
    assert [r.status for r in forced] == ["replaced", "replaced"] and len(fake.builds) == 4
    rebuilt = engine_entries(repo)
    assert sorted(rebuilt) == sorted(built)  # same files, new plans
    assert all(rebuilt[f]["sha256"] != built[f]["sha256"] for f in built)
    assert len(read_manifest(repo, "tiny")["artifacts"]) == 4 + 2
    assert not [p for p in (repo / "tiny" / "1").iterdir() if p.name.startswith(".")]


def _synthetic_engine(
    repo: Path, tmp_path: Path, direction: str, file: str, target: Target
) -> None:
    """List an engine built elsewhere: a fake plan file and a valid manifest entry."""
    plan = tmp_path / file
    plan.write_bytes(b"a plan built on another machine " + file.encode())
    entry = {
        "direction": direction,
        "format": "tensorrt",
        "precision": "fp16",
        "file": file,
        "sha256": sha256_file(plan),
        "bytes": plan.stat().st_size,
        "tensorrt": {
            "version": target.tensorrt_version,
            "gpu": target.gpu,
            "compute_capability": target.compute_capability,
            "profiles": [{"min": [1, 64, 64, 3], "opt": [1, 64, 64, 3], "max": [1, 64, 64, 3]}],
        },
        "parity": {"reference": "onnx-fp32", "max_abs_diff": 2, "fraction_over_1": 0.0, "psnr": 50},
    }
    add_artifacts(repo, "tiny", 1, {file: plan}, [entry])


def test_engines_of_other_gpus_and_versions_are_kept(
    repo: Path, fake: FakeTensorRT, tmp_path: Path
) -> None:
    other_gpu = Target("NVIDIA A10G", "8.6", "10.13.0")
    older_trt = Target(GPU, "9.0", "10.8.0")
    _synthetic_engine(repo, tmp_path, "A2B", "A2B.nvidia-a10g.plan", other_gpu)
    _synthetic_engine(repo, tmp_path, "A2B", tensorrt.plan_name("A2B", GPU), older_trt)
    _synthetic_engine(repo, tmp_path, "B2A", "B2A.elsewhere.plan", TARGET)  # ours already
    before = engine_entries(repo)

    results = build_engines(repo, shapes=SHAPES)
    # A2B: the usual name is taken by the older TensorRT's engine; B2A: present, skipped.
    assert [(r.direction, r.file, r.status) for r in results] == [
        ("A2B", "A2B.nvidia-fake-gpu-80gb.trt10.13.0.plan", "built"),
        ("B2A", "B2A.elsewhere.plan", "skipped"),
    ]
    assert [b["source"] for b in fake.builds] == ["A2B.fp16.onnx"]
    after = engine_entries(repo)
    assert {f: after[f] for f in before} == before  # the others' engines stay as they were
    assert after["A2B.nvidia-fake-gpu-80gb.trt10.13.0.plan"]["tensorrt"]["version"] == "10.13.0"

    forced = build_engines(repo, ["tiny"], 1, shapes=SHAPES, force=True)
    assert [(r.file, r.status) for r in forced] == [
        ("A2B.nvidia-fake-gpu-80gb.trt10.13.0.plan", "replaced"),
        ("B2A.elsewhere.plan", "replaced"),
    ]
    final = engine_entries(repo)
    assert sorted(final) == sorted(after)
    assert final["A2B.nvidia-a10g.plan"] == before["A2B.nvidia-a10g.plan"]


def _version_without(repo: Path, drop: Callable[[dict], bool], **direction: Any) -> int:
    """Publish tiny version 2: version 1 less the artifacts `drop` picks, directions changed."""
    manifest = read_manifest(repo, "tiny", 1)

    def build(folder: Path) -> dict[str, Any]:
        kept = [a for a in manifest["artifacts"] if not drop(a)]
        for a in kept:
            shutil.copy(repo / "tiny" / "1" / a["file"], folder / a["file"])
        directions = {d: {**spec, **direction} for d, spec in manifest["directions"].items()}
        rest = {k: v for k, v in manifest.items() if k not in ("name", "version")}
        return {**rest, "artifacts": kept, "directions": directions}

    return int(write_version(repo, "tiny", build).name)


@pytest.mark.parametrize(("version", "typed"), [("10.13.0", True), ("10.3.0", False)])
def test_without_an_fp16_graph_one_is_converted_when_needed(
    repo: Path, fake: FakeTensorRT, version: str, typed: bool
) -> None:
    """TensorRT >= 10.12 compiles the FP16 graph: converted from FP32 as i2i-export does."""
    fake.__version__ = version
    number = _version_without(repo, lambda a: a["precision"] == "fp16")
    results = build_engines(repo, ["tiny"], number, shapes=SHAPES)
    assert [r.status for r in results] == ["built", "built"]
    sources = ["A2B.fp16.onnx", "B2A.fp16.onnx"] if typed else ["A2B.onnx", "B2A.onnx"]
    assert [b["source"] for b in fake.builds] == sources
    entries = engine_entries(repo, "tiny", number)
    built_from = [e["tensorrt"]["built_from"] for e in entries.values()]
    if typed:
        assert built_from == ["A2B.onnx, converted to FP16", "B2A.onnx, converted to FP16"]
        assert all(e["parity"]["psnr"] >= engines.MIN_PSNR for e in entries.values())
    else:
        assert built_from == ["A2B.onnx", "B2A.onnx"]
    folder = repo / "tiny" / str(number)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["manifest.json", "A2B.onnx", "B2A.onnx", *entries]
    )


def test_multimodal_translators_get_a_style_profile_and_styled_parity(
    multimodal_model, tmp_path: Path, fake: FakeTensorRT
) -> None:
    """The style input's profile takes the image's batch range; parity runs with fixed codes
    (a different code per image); style encoders get no engine (ONNX Runtime serves them)."""
    repo = Path(shutil.copytree(multimodal_model.repository, tmp_path / "repo"))
    results = build_engines(repo, ["styled"], 1, shapes=SHAPES)
    assert [(r.direction, r.status) for r in results] == [("A2B", "built"), ("B2A", "built")]
    assert [b["source"] for b in fake.builds] == ["A2B.fp16.onnx", "B2A.fp16.onnx"]
    entries = engine_entries(repo, "styled")
    assert len(entries) == 2
    for entry in entries.values():
        assert "graph" not in entry  # a translator's engine
        assert entry["parity"]["psnr"] is None or entry["parity"]["psnr"] >= engines.MIN_PSNR
        assert entry["tensorrt"]["profiles"] == [
            {"min": [1, 32, 32, 3], "opt": [2, 32, 32, 3], "max": [4, 64, 64, 3]}
        ]
        plan = json.loads((repo / "styled" / "1" / entry["file"]).read_bytes()[len(PLAN_MAGIC) :])
        size = multimodal_model.style_dim
        assert plan["profiles"][0]["style"] == [[1, size], [2, size], [4, size]]


def test_an_engine_failing_parity_is_not_kept(repo: Path, fake: FakeTensorRT) -> None:
    fake.corrupt = lambda images: 255 - images
    before = snapshot(repo)
    with pytest.raises(ExportError, match=r"A2B: the TensorRT engine is below 40 dB .* not kept"):
        build_engines(repo, shapes=SHAPES)
    assert len(fake.builds) == 1 and snapshot(repo) == before


def test_a_fresh_export_builds_its_engines_the_same_way(
    tiny_checkpoint_path: Path,
    fake: FakeTensorRT,
    tmp_path: Path,
) -> None:
    """`i2i-export --formats tensorrt` shares `build_checked_engine` with build-engines."""
    _, manifest = export_checkpoint(
        tiny_checkpoint_path, tmp_path, "m", formats=["onnx", "tensorrt"], shapes=SHAPES
    )
    assert [a["file"] for a in manifest["artifacts"]] == [
        "A2B.onnx",
        "A2B.nvidia-fake-gpu-80gb.plan",
        "B2A.onnx",
        "B2A.nvidia-fake-gpu-80gb.plan",
    ]
    assert [b["source"] for b in fake.builds] == ["A2B.fp16.onnx", "B2A.fp16.onnx"]
    # The FP16 graphs were not kept (no onnx-fp16 format): the manifest must not name them.
    assert [manifest["artifacts"][i]["tensorrt"]["built_from"] for i in (1, 3)] == [
        "A2B.onnx, converted to FP16",
        "B2A.onnx, converted to FP16",
    ]
    assert manifest["artifacts"][1]["parity"]["psnr"] >= engines.MIN_PSNR
    assert build_engines(tmp_path, shapes=SHAPES)[0].status == "skipped"
    assert sorted(p.name for p in (tmp_path / "m" / "1").iterdir() if p.name.startswith(".")) == []


# --- every TensorRT call that reports failure stops the build, naming the call ---------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("parse_from_file", r"TensorRT could not parse A2B\.fp16\.onnx: .*unsupported operator"),
        ("set_shape", r"IOptimizationProfile\.set_shape\('image'\) refused the profile"),
        ("add_optimization_profile", r"add_optimization_profile returned -1: the profile"),
        ("create_timing_cache", r"create_timing_cache returned None for .*timing\.cache"),
        (
            "set_timing_cache",
            r"set_timing_cache returned False for .*timing\.cache: it was made on another GPU",
        ),
        (
            "build_serialized_network",
            r"build_serialized_network returned None for A2B\.fp16\.onnx \(TensorRT: Builder: no implementation found\)",
        ),
        ("deserialize_cuda_engine", r"deserialize_cuda_engine failed: returned None"),
        ("create_execution_context", r"create_execution_context failed: returned None"),
        ("set_input_shape", r"set_input_shape\('image', \(4, 64, 64, 3\)\) failed: returned False"),
        ("set_tensor_address", r"set_tensor_address\('image'\) failed: returned False"),
        ("execute_async_v3", r"at 1x32x32: .*execute_async_v3 failed: returned False"),
    ],
)
def test_a_tensorrt_call_reporting_failure_stops_the_build(
    repo: Path, fake: FakeTensorRT, tmp_path: Path, call: str, message: str
) -> None:
    """False, -1 and None are TensorRT's failures: each raises, naming the call; the
    repository and the timing cache are left as they were."""
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old tactics\n")
    before = snapshot(repo)
    fake.fail.add(call)
    with pytest.raises(ExportError, match=message):
        build_engines(repo, ["tiny"], shapes=SHAPES, timing_cache=cache)
    assert snapshot(repo) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo", "timing.cache"]
    assert fake.cudart.memory == {} and fake.cudart.streams == {}  # the runner freed its own


def test_a_crash_while_writing_the_timing_cache_leaves_the_old_one(
    repo: Path,
    fake: FakeTensorRT,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The cache is written to a temporary file and renamed: a writer failing half way (a
    full disk) leaves the old cache whole and no partial file; the engine is still kept."""
    cache = tmp_path / "caches" / "timing.cache"
    cache.parent.mkdir()
    cache.write_bytes(b"old tactics\n")
    fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, file: Any) -> None:
            self.file = file

        def write(self, data: bytes) -> int:
            self.file.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.file, name)

        def __enter__(self) -> HalfWriter:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

    def failing_fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        file = fdopen(fd, *args, **kwargs)
        name = os.readlink(f"/proc/self/fd/{fd}")
        return HalfWriter(file) if os.path.basename(name).startswith(".timing.cache.") else file

    monkeypatch.setattr(os, "fdopen", failing_fdopen)
    with caplog.at_level(logging.WARNING, logger="i2i.export.tensorrt"):
        results = build_engines(repo, ["tiny"], shapes=SHAPES, timing_cache=cache)
    assert [r.status for r in results] == ["built", "built"]
    assert cache.read_bytes() == b"old tactics\n"
    assert sorted(p.name for p in cache.parent.iterdir()) == ["timing.cache"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and "No space left on device" in warnings[0]
    assert "it is unchanged" in warnings[0]


def test_write_atomically_replaces_whole_files_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "timing.cache"
    tensorrt.write_atomically(target, b"first")
    tensorrt.write_atomically(target, b"second")
    assert target.read_bytes() == b"second"

    def crash(*args: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="Input/output error"):
        tensorrt.write_atomically(target, b"third")
    assert target.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["timing.cache"]


def test_building_needs_no_torch(
    repo: Path, fake: FakeTensorRT, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU comes from CUDA's own bindings and engines run in the runtime package: with
    `import torch` failing, build-engines still finds the GPU, builds and checks."""
    monkeypatch.setitem(sys.modules, "torch", None)
    assert engines.detect_target() == TARGET
    assert [r.status for r in build_engines(repo, ["tiny"], shapes=SHAPES)] == ["built"] * 2


def test_without_a_gpu_the_refusal_says_what_cuda_said(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, devices=[])
    before = snapshot(repo)
    with pytest.raises(ExportError) as error:
        build_engines(repo, shapes=SHAPES)
    assert "an NVIDIA GPU visible to this process (CUDA finds no usable GPU" in str(error.value)
    assert "cudaErrorNoDevice" in str(error.value) and "`tensorrt`" not in str(error.value)
    assert snapshot(repo) == before


# --- the command line -------------------------------------------------------------------------


def test_cli_builds_and_prints_the_table(
    repo: Path, fake: FakeTensorRT, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "build-engines", str(repo), "tiny", "--shapes", SHAPES]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"engines for {GPU}")
    assert out[1].split() == ["model", "version", "direction", "plan", "status", "detail"]
    assert out[2].split()[:5] == ["tiny", "1", "A2B", "A2B.nvidia-fake-gpu-80gb.plan", "built"]
    assert main(["models", "build-engines", str(repo), "--all", "--shapes", SHAPES]) == 0
    assert capsys.readouterr().out.splitlines()[3].split()[4] == "skipped"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tiny", "--all"], "give model names or --all, not both"),
        ([], "name the models to build engines for, or pass --all"),
        (["nope"], "no model 'nope'"),
        (["--all", "--shapes", "1x30x30:1x32x32:1x32x32"], "--shapes 1x30x30"),
    ],
)
def test_cli_usage_errors_exit_2(
    repo: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "build-engines", str(repo), *args]) == 2
    assert message in capsys.readouterr().err


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["models", "build-engines", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "i2i models build-engines [-h] [--all] [--version V] [--max-batch N]" in text
    for flag in ("--shapes SPEC", "--workspace-gb G", "--timing-cache F", "--force"):
        assert flag in text
    assert "init container or Job" in text and "exits 2 and writes nothing" in text


# --- the real thing -------------------------------------------------------------------------


@pytest.mark.tensorrt
def test_real_engines_on_this_gpu(repo: Path) -> None:
    if tensorrt.availability() is not None:
        pytest.skip("needs the tensorrt package and an NVIDIA GPU")
    results = build_engines(repo, ["tiny"], shapes="1x32x32:2x64x64:4x64x64")
    assert [r.status for r in results] == ["built", "built"]
    entries = engine_entries(repo)
    assert len(entries) == 2
    for entry in entries.values():
        assert entry["parity"]["psnr"] is None or entry["parity"]["psnr"] >= engines.MIN_PSNR
        shapes = [(c["batch"], c["height"], c["width"]) for c in entry["parity"]["cases"]]
        assert shapes == [(1, 32, 32), (2, 64, 64), (4, 64, 64)]  # min, opt, max
    assert [r.status for r in build_engines(repo, ["tiny"])] == ["skipped", "skipped"]


def test_an_engine_built_meanwhile_by_another_process_is_kept(
    repo: Path, fake: FakeTensorRT, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two pods build for the same version at once: the loser keeps the winner's engine."""
    build = tensorrt.build_engine
    winners = tmp_path / "winner"
    winners.mkdir()

    def racing_build(
        onnx_fp32: Path, onnx_fp16: Path | None, plan: Path, *args: Any, **kwargs: Any
    ) -> Any:
        direction = onnx_fp32.name.split(".")[0]
        file = tensorrt.plan_name(direction, GPU)
        _synthetic_engine(repo, winners, direction, file, TARGET)  # the other pod wins
        return build(onnx_fp32, onnx_fp16, plan, *args, **kwargs)

    monkeypatch.setattr(tensorrt, "build_engine", racing_build)
    before = engine_entries(repo)
    results = build_engines(repo, ["tiny"], shapes=SHAPES)
    assert [(r.status, r.detail) for r in results] == [
        ("skipped", "built meanwhile by another process")
    ] * 2
    after = engine_entries(repo)
    assert not before and sorted(after) == [tensorrt.plan_name(d, GPU) for d in ("A2B", "B2A")]
    for file, entry in after.items():  # the winner's plans, untouched
        assert (repo / "tiny" / "1" / file).read_bytes().startswith(b"a plan built on another")
        assert entry["sha256"] == sha256_file(repo / "tiny" / "1" / file)
