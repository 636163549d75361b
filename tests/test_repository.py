"""Contract 2: the model repository — manifest schema, versions, atomic writes, reads."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from i2i.cli.models import format_manifest, format_models_table
from i2i.repository import (
    RepositoryError,
    add_artifacts,
    list_models,
    load_schema,
    next_version,
    read_manifest,
    sha256_file,
    validate_manifest,
    versions,
    write_version,
)

SHA = "ab" * 32
FILES = {"A2B.onnx": b"onnx fp32 A2B", "A2B.fp16.onnx": b"fp16", "B2A.onnx": b"onnx fp32 B2A"}


def tensor(name: str, dtype: str = "uint8", shape: list | None = None) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape or ["N", "H", "W", 3]}


def direction(style: dict | None = None) -> dict[str, Any]:
    return {
        "input": tensor("image"),
        "output": tensor("translated"),
        "style": style,
        "shape_rule": {"multiple_of": 4, "fixed_size": None},
    }


def artifact(file: str, direction: str = "A2B", precision: str = "fp32", **extra: Any) -> dict:
    return {
        "direction": direction,
        "format": "onnx",
        "precision": precision,
        "file": file,
        "sha256": SHA,
        "bytes": 10,
        "opset": 18,
        "parity": {"reference": "pytorch", "max_abs_diff": 1, "fraction_over_1": 0.0, "psnr": 58.1},
        **extra,
    }


def full_manifest() -> dict[str, Any]:
    """Every part of the format: two directions (one with a style), ONNX, FP16 and TensorRT."""
    engine = artifact("A2B.nvidia-h100-80gb-hbm3.plan", precision="fp16")
    del engine["opset"]
    engine["format"] = "tensorrt"
    engine["parity"] = {
        "reference": "onnx-fp32",
        "max_abs_diff": 2,
        "fraction_over_1": 0.25,
        "psnr": 51.0,
        "cases": [{"batch": 1, "height": 256, "width": 256, "max_abs_diff": 2}],
    }
    engine["tensorrt"] = {
        "version": "10.13.0",
        "gpu": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0",
        "strongly_typed": True,  # builders may record more
        "profiles": [{"min": [1, 256, 256, 3], "opt": [8, 256, 256, 3], "max": [32, 512, 512, 3]}],
    }
    return {
        "format": "i2i.manifest",
        "format_version": 1,
        "name": "day2dusk",
        "version": 1,
        "created": "2026-11-23T12:00:00Z",
        "i2i_version": "0.1.0",
        "family": "cyclegan",
        "domains": ["A", "B"],
        "source": {"checkpoint": "runs/x/latest.pt", "sha256": SHA, "step": 1200},
        "directions": {
            "A2B": direction(),
            "B2A": direction(style=tensor("style", "float32", ["N", 8])),
        },
        "artifacts": [
            artifact("A2B.onnx"),
            artifact(
                "A2B.fp16.onnx",
                precision="fp16",
                parity={
                    "reference": "onnx-fp32",
                    "max_abs_diff": 0,
                    "fraction_over_1": 0.0,
                    "psnr": None,  # identical outputs
                },
            ),
            artifact("B2A.onnx", direction="B2A"),
            engine,
        ],
    }


def written_manifest(files: dict[str, bytes], folder: Path) -> dict[str, Any]:
    """A manifest (no name or version: write_version fills them) for files already in folder."""
    manifest = full_manifest()
    del manifest["name"], manifest["version"]
    manifest["artifacts"] = [
        {
            **artifact(file, direction=file[:3]),
            "sha256": sha256_file(folder / file),
            "bytes": len(data),
        }
        for file, data in files.items()
    ]
    return manifest


def builder(files: dict[str, bytes] = FILES, **changes: Any) -> Callable[[Path], dict[str, Any]]:
    def build(folder: Path) -> dict[str, Any]:
        for file, data in files.items():
            (folder / file).write_bytes(data)
        return {**written_manifest(files, folder), **changes}

    return build


def hidden(model: Path) -> list[str]:
    return sorted(p.name for p in model.iterdir() if p.name.startswith(".") and p.name != ".lock")


# --- the schema -----------------------------------------------------------------------------


def test_schema_is_draft_2020_12_and_accepts_the_full_manifest() -> None:
    jsonschema.Draft202012Validator.check_schema(load_schema())
    validate_manifest(full_manifest())


def test_open_where_exporters_need_room() -> None:
    manifest = full_manifest()
    manifest["artifacts"][0]["parity"]["ssim"] = 0.99
    manifest["source"]["imported_from"] = "junyanz/pytorch-CycleGAN-and-pix2pix"
    manifest["directions"]["A2B"]["shape_rule"]["fixed_size"] = 256
    validate_manifest(manifest)


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def change(manifest: dict) -> None:
        *parents, last = path.split("/")
        target: Any = manifest
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is KeyError:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return change


BAD = {
    "missing key": (_set("family", KeyError), "$.family: missing"),
    "missing nested key": (_set("artifacts/1/sha256", KeyError), "$.artifacts[1].sha256: missing"),
    "bad source sha": (_set("source/sha256", "ABC"), "$.source.sha256: 'ABC' is not valid"),
    "upper-case sha": (_set("artifacts/0/sha256", "AB" * 32), "$.artifacts[0].sha256"),
    "bad precision": (
        _set("artifacts/1/precision", "int8"),
        "$.artifacts[1].precision: 'int8' is not one of",
    ),
    "bad format": (_set("artifacts/0/format", "tflite"), "$.artifacts[0].format"),
    "bad dtype": (_set("directions/A2B/input/dtype", "u8"), "$.directions.A2B.input.dtype"),
    "bad reference": (
        _set("artifacts/0/parity/reference", "me"),
        "$.artifacts[0].parity.reference",
    ),
    "bad name": (_set("name", "../evil"), "$.name: '../evil' is not valid: expected letters"),
    "file in a folder": (_set("artifacts/0/file", "sub/A2B.onnx"), "$.artifacts[0].file"),
    "manifest as artifact": (
        _set("artifacts/0/file", "manifest.json"),
        "$.artifacts[0].file: not allowed",
    ),
    "unknown direction": (
        _set("artifacts/2/direction", "C2D"),
        "$.artifacts[2].direction: 'C2D' is not a direction",
    ),
    "duplicate file": (
        _set("artifacts/2/file", "A2B.onnx"),
        "$.artifacts[2].file: 'A2B.onnx' is already the file of $.artifacts[0]",
    ),
    "onnx without opset": (_set("artifacts/0/opset", KeyError), "$.artifacts[0].opset: missing"),
    "engine without its GPU": (
        _set("artifacts/3/tensorrt", KeyError),
        "$.artifacts[3].tensorrt: missing",
    ),
    "onnx with engine info": (
        _set("artifacts/0/tensorrt", {}),
        "$.artifacts[0].tensorrt: not allowed",
    ),
    "unexpected key": (_set("colour", "red"), "$.colour: unexpected key"),
    "version 0": (_set("version", 0), "$.version"),
    "version as text": (_set("version", "1"), "$.version"),
    "bad time": (_set("created", "yesterday"), "$.created"),
    "style not a tensor": (_set("directions/A2B/style", "yes"), "$.directions.A2B.style"),
    "no artifacts": (_set("artifacts", []), "$.artifacts"),
    "no directions": (_set("directions", {}), "$.directions"),
    "bad profile": (
        _set("artifacts/3/tensorrt/profiles/0/max", [0]),
        "$.artifacts[3].tensorrt.profiles[0].max[0]",
    ),
    "fixed size off rule": (
        _set("directions/A2B/shape_rule/fixed_size", 30),
        "$.directions.A2B.shape_rule: fixed_size must be a multiple of 4 and at least 8, got 30",
    ),
    "parity without psnr": (
        _set("artifacts/0/parity/psnr", KeyError),
        "$.artifacts[0].parity.psnr: missing",
    ),
    "not finite": (
        _set("artifacts/0/parity/psnr", float("inf")),
        "$.artifacts[0].parity.psnr: inf is not a finite number",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_manifests_are_rejected_with_the_offending_path(case: str) -> None:
    change, expected = BAD[case]
    manifest = full_manifest()
    change(manifest)
    with pytest.raises(RepositoryError) as err:
        validate_manifest(manifest, source="x/1/manifest.json")
    assert str(err.value).startswith("x/1/manifest.json is not valid:")
    assert expected in str(err.value)


def test_foreign_and_newer_manifests_say_so() -> None:
    with pytest.raises(RepositoryError, match="not an i2i manifest"):
        validate_manifest({"format": "triton"})
    with pytest.raises(RepositoryError, match="format_version 2 was written by a newer i2i"):
        validate_manifest({**full_manifest(), "format_version": 2})


# --- writing --------------------------------------------------------------------------------


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    repo = tmp_path / "repo"  # created by the first write
    folder = write_version(repo, "day2dusk", builder())
    assert folder == repo / "day2dusk" / "1"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*FILES, "manifest.json"])
    manifest = read_manifest(repo, "day2dusk", verify=True)
    assert list(manifest)[:4] == ["format", "format_version", "name", "version"]
    assert (manifest["name"], manifest["version"]) == ("day2dusk", 1)
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    assert list_models(repo) == {"day2dusk": [1]}
    assert hidden(repo / "day2dusk") == []


def test_versions_auto_increment(tmp_path: Path) -> None:
    assert versions(tmp_path, "m") == [] and next_version(tmp_path, "m") == 1
    assert [write_version(tmp_path, "m", builder()).name for _ in range(3)] == ["1", "2", "3"]
    assert write_version(tmp_path, "m", builder(), version=7).name == "7"
    assert versions(tmp_path, "m") == [1, 2, 3, 7]
    assert next_version(tmp_path, "m") == 8
    assert read_manifest(tmp_path, "m")["version"] == 7
    assert read_manifest(tmp_path, "m", 2)["version"] == 2


def test_versions_ignore_what_is_not_a_version(tmp_path: Path) -> None:
    write_version(tmp_path, "m", builder())
    model = tmp_path / "m"
    for name in ("01", "abc", ".tmp-2-dead", ".old-1-dead", "-3"):
        (model / name).mkdir()
    (model / "4").write_text("a file, not a folder")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "empty").mkdir()
    assert versions(tmp_path, "m") == [1]
    assert list_models(tmp_path) == {"m": [1]}


def test_existing_version_is_refused_without_force(tmp_path: Path) -> None:
    write_version(tmp_path, "m", builder())
    with pytest.raises(RepositoryError, match=r"m/1 already exists: pass force=True .* version 2"):
        write_version(tmp_path, "m", builder({"A2B.onnx": b"new"}), version=1)
    assert (tmp_path / "m" / "1" / "A2B.onnx").read_bytes() == FILES["A2B.onnx"]
    assert hidden(tmp_path / "m") == []


def test_force_replaces_a_version(tmp_path: Path) -> None:
    write_version(tmp_path, "m", builder())
    folder = write_version(tmp_path, "m", builder({"A2B.onnx": b"new"}), version=1, force=True)
    assert sorted(p.name for p in folder.iterdir()) == ["A2B.onnx", "manifest.json"]
    assert read_manifest(tmp_path, "m", 1, verify=True)["artifacts"][0]["bytes"] == 3
    assert versions(tmp_path, "m") == [1]
    assert hidden(tmp_path / "m") == []


def test_a_build_that_raises_leaves_nothing(tmp_path: Path) -> None:
    def build(folder: Path) -> dict[str, Any]:
        (folder / "A2B.onnx").write_bytes(b"half")
        raise RuntimeError("parity check failed")

    with pytest.raises(RuntimeError, match="parity check failed"):
        write_version(tmp_path, "m", build)
    assert versions(tmp_path, "m") == []
    assert hidden(tmp_path / "m") == []


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (builder(family="Cycle GAN"), r"manifest built for m/1 is not valid:\n  \$.family"),
        (builder(name="other"), "says name 'other', expected 'm'"),
        (builder(version=5), "says version 5, expected 1"),
        (
            builder(artifacts=[artifact("A2B.onnx")]),
            "do not match its manifest:\n  A2B.onnx: 13 bytes",
        ),
        (builder(artifacts=[artifact("B2A.onnx", direction="B2A", bytes=13)]), "B2A.onnx: sha256 "),
        (builder(artifacts=[artifact("C2D.onnx", direction="B2A")]), "C2D.onnx: missing"),
        (lambda folder: ["not", "a", "dict"], "returned list, expected the manifest dict"),
    ],
)
def test_a_bad_build_is_refused_and_leaves_nothing(
    tmp_path: Path, build: Callable, message: str
) -> None:
    with pytest.raises(RepositoryError, match=message):
        write_version(tmp_path, "m", build)
    assert versions(tmp_path, "m") == []
    assert hidden(tmp_path / "m") == []


def test_bad_names_and_versions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="model name '../up' is not valid"):
        write_version(tmp_path, "../up", builder())
    with pytest.raises(RepositoryError, match="version 0 is not valid"):
        write_version(tmp_path, "m", builder(), version=0)
    with pytest.raises(RepositoryError, match="model name '.hidden' is not valid"):
        versions(tmp_path, ".hidden")


# Runs write_version in another process; its build writes a file, records when it ran and
# sleeps, so the test can kill it midway or run two at once.
WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from i2i.repository import write_version

    repository, template, log, sleep = sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])

    def build(folder):
        start = time.time()
        (folder / "A2B.onnx").write_bytes(b"onnx fp32 A2B")
        log.with_suffix(".started").write_text("")
        time.sleep(sleep)
        build.times = (start, time.time())
        return json.loads(Path(template).read_text())

    folder = write_version(repository, "m", build)
    log.write_text(json.dumps([int(folder.name), *build.times]))
    """
)


def start_writer(tmp_path: Path, tag: str, sleep: float) -> tuple[subprocess.Popen, Path]:
    template = tmp_path / "template.json"
    if not template.exists():
        (tmp_path / "A2B.onnx").write_bytes(FILES["A2B.onnx"])
        template.write_text(json.dumps(written_manifest({"A2B.onnx": FILES["A2B.onnx"]}, tmp_path)))
    log = tmp_path / f"{tag}.json"
    args = [
        sys.executable,
        "-c",
        WRITER,
        str(tmp_path / "repo"),
        str(template),
        str(log),
        str(sleep),
    ]
    return subprocess.Popen(args), log


def wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_killed_write_leaves_no_version(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_version(repo, "m", builder())
    writer, log = start_writer(tmp_path, "killed", sleep=60)
    try:
        wait_for(log.with_suffix(".started"))  # midway: a file written, no manifest yet
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    stale = hidden(repo / "m")
    assert len(stale) == 1 and stale[0].startswith(".tmp-2-")
    assert (repo / "m" / stale[0] / "A2B.onnx").exists()
    assert versions(repo, "m") == [1] and list_models(repo) == {"m": [1]}
    assert read_manifest(repo, "m")["version"] == 1  # readers tolerate the leftover

    assert write_version(repo, "m", builder()).name == "2"
    assert hidden(repo / "m") == []  # cleaned up by the next writer


def test_an_interrupted_replacement_restores_the_old_version(tmp_path: Path) -> None:
    write_version(tmp_path, "m", builder())
    model = tmp_path / "m"
    # As if killed between moving version 1 aside and moving its replacement in.
    os.rename(model / "1", model / ".old-1-dead")
    (model / ".tmp-1-dead").mkdir()
    assert versions(tmp_path, "m") == []
    assert write_version(tmp_path, "m", builder()).name == "2"
    assert versions(tmp_path, "m") == [1, 2]
    assert read_manifest(tmp_path, "m", 1, verify=True)["version"] == 1
    assert hidden(model) == []


def test_the_lock_serialises_concurrent_writers(tmp_path: Path) -> None:
    writers = [start_writer(tmp_path, tag, sleep=0.5) for tag in ("first", "second")]
    for writer, _ in writers:
        assert writer.wait(timeout=60) == 0
    (v1, start1, end1), (v2, start2, end2) = (json.loads(log.read_text()) for _, log in writers)
    assert sorted([v1, v2]) == [1, 2]
    assert end1 <= start2 or end2 <= start1, "the two builds ran at the same time"
    assert versions(tmp_path / "repo", "m") == [1, 2]
    for version in (1, 2):
        read_manifest(tmp_path / "repo", "m", version, verify=True)


# --- reading --------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for _ in range(2):
        write_version(tmp_path, "day2dusk", builder())
    write_version(tmp_path, "horse2zebra", builder())
    return tmp_path


def test_unknown_model_or_version_lists_what_exists(repo: Path) -> None:
    with pytest.raises(
        RepositoryError,
        match=r"no model 'dusk' .* day2dusk \(versions 1-2\), horse2zebra \(versions 1\)",
    ):
        read_manifest(repo, "dusk")
    with pytest.raises(RepositoryError, match="'day2dusk' .* has no version 3; versions: 1-2"):
        read_manifest(repo, "day2dusk", 3)
    with pytest.raises(RepositoryError, match="does not exist"):
        read_manifest(repo / "nowhere", "day2dusk")
    with pytest.raises(RepositoryError, match="models there: none"):
        read_manifest(repo / "day2dusk" / "1", "x")


def test_missing_or_changed_artifacts_are_reported(repo: Path) -> None:
    folder = repo / "day2dusk" / "2"
    (folder / "B2A.onnx").unlink()
    with pytest.raises(
        RepositoryError,
        match=r"day2dusk/2: artifacts do not match manifest.json:\n  B2A.onnx: missing",
    ):
        read_manifest(repo, "day2dusk")
    (folder / "A2B.onnx").write_bytes(b"short")
    with pytest.raises(RepositoryError, match="A2B.onnx: 5 bytes, the manifest says 13"):
        read_manifest(repo, "day2dusk", 2)
    folder = repo / "day2dusk" / "1"
    (folder / "A2B.onnx").write_bytes(b"ONNX FP32 A2B")  # same size, other bytes
    read_manifest(repo, "day2dusk", 1)  # sizes only
    with pytest.raises(
        RepositoryError, match=f"A2B.onnx: sha256 {sha256_file(folder / 'A2B.onnx')}"
    ):
        read_manifest(repo, "day2dusk", 1, verify=True)


def test_broken_manifests_are_reported(repo: Path) -> None:
    path = repo / "horse2zebra" / "1" / "manifest.json"
    path.write_text("{not json")
    with pytest.raises(
        RepositoryError, match=r"manifest.json is not valid JSON: .* \(line 1, column 2\)"
    ):
        read_manifest(repo, "horse2zebra")
    path.unlink()
    with pytest.raises(RepositoryError, match="manifest.json is missing"):
        read_manifest(repo, "horse2zebra")
    moved = repo / "copy" / "1"
    moved.parent.mkdir()
    os.rename(repo / "day2dusk" / "1", moved)
    with pytest.raises(RepositoryError, match="says name 'day2dusk' version 1 but sits in copy/1"):
        read_manifest(repo, "copy")


def test_models_table_and_manifest_are_readable(repo: Path) -> None:
    table = format_models_table(repo)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["model", "versions", "family", "direction"]
    assert lines[1].split()[:7] == [
        "day2dusk",
        "1-2",
        "cyclegan",
        "A2B",
        "A2B.onnx",
        "onnx",
        "fp32",
    ]
    assert "pytorch" in lines[1] and "58.1" in lines[1] and "0.000%" in lines[1]
    assert any(line.startswith("horse2zebra") for line in lines)

    (repo / "horse2zebra" / "1" / "A2B.onnx").unlink()
    table = format_models_table(repo)
    assert "horse2zebra version 1:" in table and "A2B.onnx: missing" in table

    shown = format_manifest(full_manifest())
    for text in (
        "day2dusk version 1",
        "cyclegan (domains A, B)",
        "runs/x/latest.pt (step 1200",
        "A2B  image uint8 [N, H, W, 3] -> translated uint8 [N, H, W, 3]",
        "style style float32 [N, 8]",
        "sizes: multiples of 4",
        "opset 18",
        "TensorRT 10.13.0",
        "NVIDIA H100 80GB HBM3 (compute capability 9.0)",
        "1x256x256x3 .. 8x256x256x3 .. 32x512x512x3",
        "25.000%",
        "0.000%      inf",
    ):
        assert text in shown, text
    assert (
        format_models_table(repo / "horse2zebra" / "1")
        == f"no models in {repo / 'horse2zebra' / '1'}"
    )


def test_validating_and_formatting_leave_the_manifest_unchanged() -> None:
    manifest = full_manifest()
    before = copy.deepcopy(manifest)
    validate_manifest(manifest)
    format_manifest(manifest)
    assert manifest == before


def test_a_file_in_place_of_the_repository_is_reported(tmp_path: Path) -> None:
    (tmp_path / "repo").write_text("")
    with pytest.raises(RepositoryError, match="is a file, expected folders"):
        write_version(tmp_path / "repo", "m", builder())
    with pytest.raises(RepositoryError, match="does not exist or is not a folder"):
        list_models(tmp_path / "repo")


# --- adding artifacts to a published version (engines built later) ---------------------------


def engine(path: Path, file: str | None = None, gpu: str = "NVIDIA H100 80GB HBM3") -> dict:
    """A TensorRT artifact entry for the plan at `path` (named `file` in the version)."""
    entry = copy.deepcopy(full_manifest()["artifacts"][3])
    entry["tensorrt"]["gpu"] = gpu
    return {
        **entry,
        "file": file or path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
    }


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every entry of a version folder (hidden ones too) with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def published(tmp_path: Path) -> Path:
    """Version m/1 (A2B.onnx, A2B.fp16.onnx, B2A.onnx) and a plan to add, in tmp_path/plans."""
    write_version(tmp_path / "repo", "m", builder())
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "A2B.gpu.plan").write_bytes(b"plan for A2B")
    (plans / "B2A.gpu.plan").write_bytes(b"plan for B2A, longer")
    return tmp_path / "repo"


def test_add_artifacts_adds_files_and_entries(published: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plans" / "A2B.gpu.plan"
    before = read_manifest(published, "m", 1)
    after = add_artifacts(published, "m", 1, {plan.name: plan}, [engine(plan)])
    assert after == read_manifest(published, "m", 1, verify=True)
    assert after["artifacts"] == [*before["artifacts"], engine(plan)]
    assert {k: v for k, v in after.items() if k != "artifacts"} == {
        k: v for k, v in before.items() if k != "artifacts"
    }
    folder = published / "m" / "1"
    assert (folder / plan.name).read_bytes() == b"plan for A2B"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*FILES, "manifest.json", plan.name])


def test_add_artifacts_replaces_a_listed_file_only_when_told(
    published: Path, tmp_path: Path
) -> None:
    plan = tmp_path / "plans" / "A2B.gpu.plan"
    add_artifacts(published, "m", 1, {plan.name: plan}, [engine(plan)])
    rebuilt = tmp_path / "rebuilt.plan"
    rebuilt.write_bytes(b"rebuilt plan for A2B")
    entry = engine(rebuilt, file=plan.name)
    with pytest.raises(RepositoryError, match=r"already lists A2B.gpu.plan: name it in `replace`"):
        add_artifacts(published, "m", 1, {plan.name: rebuilt}, [entry])
    with pytest.raises(RepositoryError, match=r"cannot replace A2B.gpu.pln: .* does not list it"):
        add_artifacts(published, "m", 1, {plan.name: rebuilt}, [entry], replace=["A2B.gpu.pln"])
    after = add_artifacts(published, "m", 1, {plan.name: rebuilt}, [entry], replace=[plan.name])
    assert [a["file"] for a in after["artifacts"]] == [*FILES, plan.name]
    assert read_manifest(published, "m", 1, verify=True)["artifacts"][-1] == entry
    folder = published / "m" / "1"
    assert (folder / plan.name).read_bytes() == b"rebuilt plan for A2B"
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def _bad_entry(plan: Path, **changes: Any) -> dict:
    return {**engine(plan), **changes}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("schema", r"with the new artifacts is not valid:\n  \$.artifacts\[3\].precision"),
        ("no tensorrt info", r"\$.artifacts\[3\].tensorrt: missing"),
        ("unknown direction", r"'C2D' is not a direction"),
        ("wrong hash", r"do not match their artifacts:\n  .*: sha256 "),
        ("wrong size", r"do not match their artifacts:\n  .*: 12 bytes, the manifest says 3"),
        ("file not given", r"name files \['A2B.gpu.plan'\] but the files given are \[\]"),
        ("listed", r"already lists A2B.onnx"),
    ],
)
def test_a_bad_addition_changes_nothing(
    published: Path, tmp_path: Path, case: str, message: str
) -> None:
    plan = tmp_path / "plans" / "A2B.gpu.plan"
    files: dict[str, Path] = {plan.name: plan}
    entry = {
        "schema": _bad_entry(plan, precision="int8"),
        "no tensorrt info": {k: v for k, v in engine(plan).items() if k != "tensorrt"},
        "unknown direction": _bad_entry(plan, direction="C2D"),
        "wrong hash": _bad_entry(plan, sha256=SHA),
        "wrong size": _bad_entry(plan, bytes=3),
        "file not given": engine(plan),
        "listed": _bad_entry(plan, file="A2B.onnx"),
    }[case]
    if case == "file not given":
        files = {}
    if case == "listed":
        files = {"A2B.onnx": plan}
    folder = published / "m" / "1"
    before = snapshot(folder)
    with pytest.raises(RepositoryError, match=message):
        add_artifacts(published, "m", 1, files, [entry])
    assert snapshot(folder) == before
    read_manifest(published, "m", 1, verify=True)


def test_add_artifacts_to_what_does_not_exist_lists_what_does(published: Path) -> None:
    with pytest.raises(RepositoryError, match=r"no model 'x' .* m \(versions 1\)"):
        add_artifacts(published, "x", 1, {}, [])
    with pytest.raises(RepositoryError, match="'m' .* has no version 2; versions: 1"):
        add_artifacts(published, "m", 2, {}, [])


@pytest.mark.parametrize("swap", [False, True], ids=["add", "replace"])
@pytest.mark.parametrize("failing", ["first rename", "plan rename", "manifest rename"])
def test_a_failing_rename_leaves_the_old_manifest_and_files(
    published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: bool, failing: str
) -> None:
    plan = tmp_path / "plans" / "A2B.gpu.plan"
    if swap:  # the plan is listed already; a rebuilt one is to replace it
        add_artifacts(published, "m", 1, {plan.name: plan}, [engine(plan)])
        (tmp_path / "rebuilt").write_bytes(b"rebuilt plan, other size")
        source = tmp_path / "rebuilt"
    else:
        source = plan
    folder = published / "m" / "1"
    before = snapshot(folder)
    real_replace = os.replace
    calls = []

    def replace(src: Any, dst: Any) -> None:
        calls.append(Path(dst).name)
        last = failing == "manifest rename" and calls[-1] == "manifest.json"
        last = last and calls.count("manifest.json") == 1 + swap  # the final manifest
        plan_moved = failing == "plan rename" and Path(dst).name == plan.name
        if failing == "first rename" or plan_moved or last:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        add_artifacts(
            published,
            "m",
            1,
            {plan.name: source},
            [engine(source, file=plan.name)],
            replace=[plan.name] if swap else [],
        )
    monkeypatch.setattr(os, "replace", real_replace)
    restored = failing == "manifest rename" or (swap and failing == "plan rename")
    assert calls[-1] == ("manifest.json" if restored else calls[0])
    assert snapshot(folder) == before  # the same files, bytes, and manifest bytes
    read_manifest(published, "m", 1, verify=True)


def test_leftovers_of_a_killed_addition_are_removed_by_the_next(
    published: Path, tmp_path: Path
) -> None:
    folder = published / "m" / "1"
    (folder / ".tmp-A2B.gpu.plan-dead").write_bytes(b"half a plan")
    (folder / ".old-B2A.gpu.plan-dead").write_bytes(b"an old plan")
    assert read_manifest(published, "m", 1, verify=True)["version"] == 1  # readers ignore them
    plan = tmp_path / "plans" / "B2A.gpu.plan"
    add_artifacts(published, "m", 1, {plan.name: plan}, [engine(plan)])
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("swap", [False, True], ids=["add", "replace"])
def test_readers_see_a_whole_manifest_while_artifacts_are_added(
    published: Path, tmp_path: Path, swap: bool
) -> None:
    """Readers take no lock: every read is a whole manifest, the old or the new one.

    Adding: each read (files included) matches. Replacing: a manifest read before a swap
    can name a file that is swapped before the reader looks at it, so the readers here
    read manifest.json itself: whole, valid, and old, new or the interim without the entry.
    """
    import threading

    sources = []
    for i in range(15):
        source = tmp_path / f"plan{i}"
        source.write_bytes(b"plan " * (i + 1))
        sources.append(source)
    first = read_manifest(published, "m", 1)
    written = [first]
    done = threading.Event()

    def write() -> None:
        try:
            for i, source in enumerate(sources):
                file = "A2B.gpu.plan" if swap else f"A2B.{i}.plan"
                replace = [file] if swap and i else []
                entry = engine(source, file=file)
                written.append(
                    add_artifacts(published, "m", 1, {file: source}, [entry], replace=replace)
                )
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()

    def read() -> dict[str, Any]:
        if not swap:
            return read_manifest(published, "m", 1, verify=True)  # raises on a mismatch
        manifest = json.loads((published / "m" / "1" / "manifest.json").read_text())
        validate_manifest(manifest)
        return manifest

    seen = []
    while not done.is_set():
        seen.append(read())
    writer.join()
    seen.append(read())
    assert len(written) == 1 + len(sources) and seen[-1] == written[-1]
    if swap:  # the old one, the new one, or briefly neither while the file is swapped
        between = {json.dumps(m["artifacts"][:3]) for m in written}
        assert all(m in written or json.dumps(m["artifacts"]) in between for m in seen)
    else:
        assert all(m in written for m in seen)
        counts = [len(m["artifacts"]) for m in seen]
        assert counts == sorted(counts)


def test_a_reader_between_any_two_steps_of_a_replacement_sees_matching_files(
    published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that starts after any rename of a replacement finds manifest and files agree."""
    plan = tmp_path / "plans" / "A2B.gpu.plan"
    add_artifacts(published, "m", 1, {plan.name: plan}, [engine(plan)])
    rebuilt = tmp_path / "rebuilt"
    rebuilt.write_bytes(b"rebuilt plan, other size")
    seen: list[list[str]] = []

    def reading_after(real: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        def rename(src: Any, dst: Any) -> None:
            real(src, dst)
            manifest = read_manifest(published, "m", 1, verify=True)  # raises on a mismatch
            seen.append([a["file"] for a in manifest["artifacts"]])

        return rename

    monkeypatch.setattr(os, "replace", reading_after(os.replace))
    monkeypatch.setattr(os, "rename", reading_after(os.rename))
    entry = engine(rebuilt, file=plan.name)
    add_artifacts(published, "m", 1, {plan.name: rebuilt}, [entry], replace=[plan.name])
    assert seen[0] == list(FILES) and seen[-1] == [*FILES, plan.name]  # out, then back in
    assert read_manifest(published, "m", 1, verify=True)["artifacts"][-1] == entry


def test_engine_differences_name_every_mismatch() -> None:
    from i2i.repository import engine_differences, gpu_slug

    plan = {
        "file": "A2B.nvidia-h100-80gb-hbm3.plan",
        "format": "tensorrt",
        "tensorrt": {
            "gpu": "NVIDIA H100 80GB HBM3",
            "compute_capability": "9.0",
            "version": "10.3.0",
        },
    }
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert engine_differences(plan, "nvidia h100 80gb hbm3", "9.0", "10.3.0 ") == []
    found = engine_differences(plan, "NVIDIA A100-SXM4-80GB", "8.0", "10.5.0")
    assert len(found) == 3 and "'NVIDIA A100-SXM4-80GB'" in found[0]
    with pytest.raises(ValueError, match="not a TensorRT artifact"):
        engine_differences({"file": "A2B.onnx", "format": "onnx"}, "g", "9.0", "10.3.0")
