"""`i2i-export` end to end: checkpoint → repository → ONNX Runtime equals PyTorch; errors write nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from i2i.export import ExportError, export_checkpoint, parse_formats
from i2i.export import tensorrt as trt_path
from i2i.models import create_networks, get_family, list_families, options_from_dict
from i2i.repository import read_manifest, versions
from tests.conftest import TINY_MODEL_OPTIONS, untrained_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _checkpoint(tmp_path: Path, family: str = "cyclegan", **model) -> Path:
    return untrained_checkpoint(tmp_path / f"{family}.pt", family, step=7, **model)


@pytest.mark.parametrize("family", list_families())
def test_round_trip_every_direction(tmp_path, family):
    ckpt = _checkpoint(tmp_path, family)
    folder, manifest = export_checkpoint(ckpt, tmp_path / "repo", "m")
    assert folder == tmp_path / "repo" / "m" / "1"
    assert manifest == read_manifest(tmp_path / "repo", "m", verify=True)
    assert manifest["source"]["step"] == 7 and manifest["family"] == family
    fam = get_family(family)
    payload = torch.load(ckpt, weights_only=True)
    options = options_from_dict(family, payload["config"]["model"])
    nets = create_networks(family, options)
    for name, net in nets.items():
        net.load_state_dict(payload["networks"][name])
    translators = fam.translators({n: m.eval() for n, m in nets.items()}, options)
    assert set(manifest["directions"]) == set(translators)
    files = {
        (a["direction"], a["precision"]): a
        for a in manifest["artifacts"]
        if a.get("graph", "translator") == "translator"
    }
    rng = np.random.default_rng(1)
    for direction, translator in translators.items():
        style_spec = manifest["directions"][direction]["style"]
        assert (style_spec is None) == (fam.style_dim == 0)
        assert files[(direction, "fp32")]["parity"]["fraction_over_1"] <= 0.001
        psnr16 = files[(direction, "fp16")]["parity"]["psnr"]
        assert psnr16 is None or psnr16 >= 40  # None: FP16 gave the very same bytes
        session = ort.InferenceSession(
            str(folder / f"{direction}.onnx"), providers=["CPUExecutionProvider"]
        )
        rule = fam.shape_rule(options)
        sizes = (
            ((1, rule.fixed_size, rule.fixed_size), (3, rule.fixed_size, rule.fixed_size))
            if rule.fixed_size
            else ((1, 36, 44), (3, 52, 60))
        )
        for batch, height, width in sizes:
            images = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
            feeds, inputs = {"image": images}, [torch.from_numpy(images)]
            if fam.style_dim:  # multimodal: one code per image
                style = rng.standard_normal((batch, fam.style_dim)).astype(np.float32)
                feeds["style"] = style
                inputs.append(torch.from_numpy(style))
            got = session.run(None, feeds)[0]
            with torch.no_grad():
                want = translator(*inputs).numpy()
            assert got.dtype == np.uint8 and got.shape == want.shape
            assert np.mean(np.abs(got.astype(int) - want.astype(int)) > 1) <= 0.001


def test_versions_increment_and_existing_version_is_refused(tmp_path):
    ckpt = _checkpoint(tmp_path)
    repo = tmp_path / "repo"
    export_checkpoint(ckpt, repo, "m", formats=["onnx"])
    export_checkpoint(ckpt, repo, "m", formats=["onnx"])
    assert versions(repo, "m") == [1, 2]
    with pytest.raises(Exception, match="exists"):
        export_checkpoint(ckpt, repo, "m", formats=["onnx"], version=1)
    _, manifest = export_checkpoint(ckpt, repo, "m", formats=["onnx"], version=1, force=True)
    assert [a["precision"] for a in manifest["artifacts"]] == ["fp32", "fp32"]


def test_formats_and_tensorrt_without_gpu(tmp_path):
    assert parse_formats("onnx-fp16") == ["onnx", "onnx-fp16"]
    with pytest.raises(ExportError, match="choose from"):
        parse_formats("onnx,openvino")
    if trt_path.availability() is None:
        pytest.skip("TensorRT and a GPU are present; the refusal path does not apply")
    with pytest.raises(ExportError, match="needs .*tensorrt"):
        export_checkpoint(
            _checkpoint(tmp_path), tmp_path / "repo", "m", formats=["onnx", "tensorrt"]
        )
    assert not (tmp_path / "repo" / "m").exists() or versions(tmp_path / "repo", "m") == []


def test_tensorrt_shapes_must_fit_the_shape_rule(tmp_path):
    with pytest.raises(ExportError, match="--shapes 1x30x30"):
        export_checkpoint(
            _checkpoint(tmp_path),
            tmp_path / "repo",
            "m",
            formats=["onnx", "tensorrt"],
            shapes="1x30x30:2x64x64:4x64x64",
        )
    assert versions(tmp_path / "repo", "m") == []


def test_tensorrt_shapes_parsing():
    profile = trt_path.parse_shapes("1x256x256:8x256x256:32x512x512", 3, 32)
    assert profile.min == (1, 256, 256, 3) and profile.max == (32, 512, 512, 3)
    default = trt_path.parse_shapes(None, 3, 16)
    assert (default.min, default.opt, default.max) == (
        (1, 64, 64, 3),
        (4, 256, 256, 3),
        (16, 512, 512, 3),
    )
    fixed = trt_path.parse_shapes(None, 3, 16, default_side=128, fixed=True)
    assert (fixed.min, fixed.max) == ((1, 128, 128, 3), (16, 128, 128, 3))
    for bad in ("1x256x256:8x256x256", "1x256:2x256:3x256", "8x256x256:1x256x256:32x512x512"):
        with pytest.raises(ExportError):
            trt_path.parse_shapes(bad, 3, 32)
    with pytest.raises(ExportError, match="max-batch"):
        trt_path.parse_shapes("1x64x64:2x64x64:64x64x64", 3, 32)
    assert trt_path.strongly_typed("10.12.0") and not trt_path.strongly_typed("10.8.1")
    assert trt_path.strongly_typed("11.0.0")
    assert trt_path.plan_name("A2B", "NVIDIA H100 80GB HBM3") == "A2B.nvidia-h100-80gb-hbm3.plan"


@pytest.mark.tensorrt
@pytest.mark.skipif(
    trt_path.availability() is not None, reason="needs the tensorrt package and an NVIDIA GPU"
)
def test_tensorrt_engine_round_trip(tmp_path):  # pragma: no cover - no such machine here yet
    _, manifest = export_checkpoint(
        _checkpoint(tmp_path), tmp_path / "repo", "m", formats=["onnx", "onnx-fp16", "tensorrt"],
        shapes="1x64x64:2x64x64:4x128x128", max_batch=4,
    )  # fmt: skip
    plans = [a for a in manifest["artifacts"] if a["format"] == "tensorrt"]
    assert len(plans) == 2 and all(a["tensorrt"]["compute_capability"] for a in plans)


def test_bad_inputs_write_nothing(tmp_path):
    repo = tmp_path / "repo"
    (tmp_path / "junk.pt").write_bytes(b"junk")
    good = _checkpoint(tmp_path).read_bytes()
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 3])
    torch.save({"g": torch.zeros(1)}, tmp_path / "foreign.pt")
    future = torch.load(tmp_path / "cyclegan.pt", weights_only=True)
    future["format_version"] = 99
    torch.save(future, tmp_path / "future.pt")
    unknown = dict(future, format_version=1, family="stylegan9")
    torch.save(unknown, tmp_path / "unknown.pt")
    cases = {"missing.pt": "no such", "junk.pt": "not a readable", "trunc.pt": "not a readable",
             "foreign.pt": "not an i2i checkpoint", "future.pt": "version 99", "unknown.pt": "unknown model family"}  # fmt: skip
    for name, message in cases.items():
        with pytest.raises(ExportError, match=message):
            export_checkpoint(tmp_path / name, repo, "m")
    assert not (repo / "m").exists() or versions(repo, "m") == []


def test_parity_failure_writes_nothing(tmp_path, monkeypatch):
    """An artifact that computes something else (here: another generator's ONNX) is caught."""
    import i2i.export.pipeline as pipeline

    real_export = pipeline.export_onnx

    def export_another_model(translator, path, *args, **kwargs):
        torch.manual_seed(123)
        other = get_family("cyclegan").translators(
            create_networks("cyclegan", TINY_MODEL_OPTIONS["cyclegan"]), None
        )
        return real_export(next(iter(other.values())).eval(), path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "export_onnx", export_another_model)
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_checkpoint(_checkpoint(tmp_path), tmp_path / "repo", "m")
    assert versions(tmp_path / "repo", "m") == []
    assert not [p for p in (tmp_path / "repo" / "m").iterdir() if not p.name.startswith(".lock")]


_SLOW_EXPORT = """
import sys, time
import i2i.export.pipeline as pipeline
real = pipeline.check_parity
def slow(*a, **k):
    open(sys.argv[3], "w").close()
    time.sleep(60)
    return real(*a, **k)
pipeline.check_parity = slow
pipeline.export_checkpoint(sys.argv[1], sys.argv[2], "m")
"""


def test_export_killed_midway_leaves_no_version(tmp_path):
    ckpt, repo, marker = _checkpoint(tmp_path), tmp_path / "repo", tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_EXPORT, str(ckpt), str(repo), str(marker)], env=env
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert versions(repo, "m") == []
    _, manifest = export_checkpoint(ckpt, repo, "m", formats=["onnx"])
    assert manifest["version"] == 1


def test_cli_export_and_models(tmp_path):
    ckpt, repo = _checkpoint(tmp_path), tmp_path / "repo"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "i2i.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    result = run("export", str(ckpt), "--repository", str(repo), "--name", "day2dusk")
    assert result.returncode == 0, result.stderr
    assert "A2B.fp16.onnx" in result.stdout and "version 1" in result.stdout
    result = run("models", "list", str(repo))
    assert result.returncode == 0 and "day2dusk" in result.stdout
    result = run("models", "show", str(repo), "day2dusk")
    assert result.returncode == 0 and "B2A" in result.stdout
    result = run("export", str(tmp_path / "nope.pt"), "--repository", str(repo), "--name", "x")
    assert (
        result.returncode == 2 and "no such" in result.stderr and "Traceback" not in result.stderr
    )
    result = run(
        "export", str(ckpt), "--repository", str(repo), "--name", "day2dusk", "--version", "1"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert json.loads((repo / "day2dusk" / "1" / "manifest.json").read_text())["version"] == 1
