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

from i2i.repository import (
    RepositoryError,
    format_manifest,
    format_models_table,
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
        "$.directions.A2B.shape_rule.fixed_size: 30 is not a multiple of multiple_of (4)",
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
