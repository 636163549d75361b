"""The two-step model's extra graphs: its encoder (uint8 image -> z) and generator (z and
domain -> uint8 image) exported beside the fused translators, their parity, the manifest's
``graphs``, and composition: generator(encoder(x), c) is the fused ``to_<c>`` translator."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from i2i.cli.models import format_manifest, format_models_table
from i2i.export import export_checkpoint
from i2i.export.parity import parity_images
from i2i.repository import RepositoryError, validate_manifest
from i2i.serving.config import ServerConfig
from i2i.serving.store import ModelStore
from tests.conftest import TINY_MODEL_OPTIONS, untrained_checkpoint

Z_DIM = TINY_MODEL_OPTIONS["twostep"]["z_dim"]
SIZE = TINY_MODEL_OPTIONS["twostep"]["image_size"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """(version folder, manifest) of a tiny two-step model, ONNX FP32 and FP16."""
    root = tmp_path_factory.mktemp("twostep-graphs")
    checkpoint = untrained_checkpoint(root / "twostep.pt", "twostep", seed=3)
    return export_checkpoint(
        checkpoint, root / "repository", "twostep", formats=["onnx", "onnx-fp16"]
    )


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_encoder_and_generator_graphs_are_written_and_recorded(exported):
    folder, manifest = exported
    for name in ("encoder", "generator"):
        files = {a["file"]: a for a in manifest["artifacts"] if a.get("graph") == name}
        assert sorted(files) == [f"{name}.fp16.onnx", f"{name}.onnx"]
        assert all("direction" not in a for a in files.values())
        assert files[f"{name}.onnx"]["parity"]["reference"] == "pytorch"
        assert files[f"{name}.onnx"]["parity"]["fraction_over_1"] == 0
        assert files[f"{name}.fp16.onnx"]["parity"]["reference"] == "onnx-fp32"
        assert all((folder / f).is_file() for f in files)
    graphs = manifest["graphs"]
    assert graphs["encoder"] == {
        "inputs": [{"name": "image", "dtype": "uint8", "shape": ["batch", SIZE, SIZE, 3]}],
        "outputs": [{"name": "z", "dtype": "float32", "shape": ["batch", Z_DIM]}],
    }
    assert graphs["generator"] == {
        "inputs": [
            {"name": "z", "dtype": "float32", "shape": ["batch", Z_DIM]},
            {"name": "domain", "dtype": "int64", "shape": ["batch"]},
        ],
        "outputs": [{"name": "image", "dtype": "uint8", "shape": ["batch", SIZE, SIZE, 3]}],
    }
    validate_manifest(manifest)


@pytest.mark.parametrize("suffix", ["", ".fp16"])
def test_generator_of_encoder_is_the_fused_translator(exported, suffix):
    folder, manifest = exported
    encoder = session(folder / f"encoder{suffix}.onnx")
    generator = session(folder / f"generator{suffix}.onnx")
    images = parity_images(np.random.default_rng(7), 3, SIZE, SIZE, 3)
    (z,) = encoder.run(None, {"image": images})
    assert z.dtype == np.float32 and z.shape == (3, Z_DIM)
    assert np.abs(z).max() < 1  # tanh
    outputs = []
    for index, domain in enumerate(manifest["domains"]):
        fused = session(folder / f"to_{domain}{suffix}.onnx").run(None, {"image": images})[0]
        domains = np.full(3, index, dtype=np.int64)
        (composed,) = generator.run(None, {"z": z, "domain": domains})
        assert composed.dtype == np.uint8 and composed.shape == images.shape
        assert np.abs(composed.astype(int) - fused.astype(int)).max() <= 1
        outputs.append(composed)
    assert not np.array_equal(outputs[0], outputs[1])  # the domain input matters


def test_generator_takes_a_target_per_row(exported):
    folder, _ = exported
    generator = session(folder / "generator.onnx")
    z = np.random.default_rng(0).uniform(-1, 1, (2, Z_DIM)).astype(np.float32)
    (mixed,) = generator.run(None, {"z": z, "domain": np.array([0, 1], dtype=np.int64)})
    for row, index in enumerate((0, 1)):
        (alone,) = generator.run(
            None, {"z": z[row : row + 1], "domain": np.array([index], dtype=np.int64)}
        )
        assert np.abs(alone[0].astype(int) - mixed[row].astype(int)).max() <= 1


def changed(manifest: dict[str, Any], change) -> dict[str, Any]:
    result = copy.deepcopy(manifest)
    change(result)
    return result


def test_manifest_checks_the_extra_graphs(exported):
    _, manifest = exported

    def undeclared(m):
        del m["graphs"]["generator"]

    def without_artifacts(m):
        m["artifacts"] = [a for a in m["artifacts"] if a.get("graph") != "encoder"]

    def with_direction(m):
        next(a for a in m["artifacts"] if a.get("graph") == "encoder")["direction"] = "to_A"

    def reserved(m):
        m["graphs"]["conditional"] = m["graphs"]["encoder"]

    for change, message in [
        (undeclared, "'generator' is not among the manifest's graphs"),
        (without_artifacts, "$.graphs.encoder: declared, but no artifact holds it"),
        (with_direction, "the 'encoder' graph belongs to no direction"),
        (reserved, "names a built-in graph kind"),
    ]:
        with pytest.raises(RepositoryError) as info:
            validate_manifest(changed(manifest, change))
        assert message in str(info.value)


def test_a_family_without_graphs_exports_none(tmp_path):
    checkpoint = untrained_checkpoint(tmp_path / "stargan.pt", "stargan")
    _, manifest = export_checkpoint(checkpoint, tmp_path / "repository", "sg", formats=["onnx"])
    assert "graphs" not in manifest
    assert {a.get("graph") for a in manifest["artifacts"]} == {None, "conditional"}
    validate_manifest(manifest)


def test_listings_name_the_extra_graphs(exported):
    folder, manifest = exported
    shown = format_manifest(manifest)
    assert "encoder.onnx" in shown and "(encoder graph)" in shown
    assert "(generator graph)" in format_models_table(folder.parent.parent)


def test_the_server_loads_the_version_and_ignores_the_extra_graphs(exported):
    folder, manifest = exported
    store = ModelStore(ServerConfig(repository=folder.parent.parent, backend="onnxruntime"))
    store.load()
    try:
        model = store.models[("twostep", manifest["version"])]
        assert sorted(model.directions) == ["to_A", "to_B"]
        used = {loaded.backend.artifact for loaded in model.directions.values()}
        assert used and not any(f.startswith(("encoder", "generator")) for f in used)
    finally:
        for loaded in store.directions():
            loaded.close()
