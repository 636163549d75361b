"""Export of a multi-domain model: per-target fused graphs and the whole conditional graph,
their parity, and the manifest's target domains (checked against its domains)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from i2i.export import export_checkpoint
from i2i.export.parity import parity_images
from i2i.repository import RepositoryError, read_manifest, validate_manifest
from tests.multidomain_family import DOMAINS, multidomain_checkpoint, pytorch_translate, registered

MODEL = "domains"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """(checkpoint, version folder, manifest) of the toy model, ONNX FP32 and FP16."""
    root = tmp_path_factory.mktemp("md-export")
    checkpoint = multidomain_checkpoint(root / "domains.pt")
    with registered():
        folder, manifest = export_checkpoint(
            checkpoint, root / "repository", MODEL, formats=["onnx", "onnx-fp16"]
        )
    return checkpoint, folder, manifest


def run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def test_manifest_records_targets_and_the_conditional_graph(exported):
    _, folder, manifest = exported
    assert manifest["domains"] == list(DOMAINS)
    for index, domain in enumerate(DOMAINS):
        spec = manifest["directions"][f"to_{domain}"]
        assert (spec["target_domain"], spec["domain_index"]) == (domain, index)
    assert manifest["conditional"]["domain"] == {
        "name": "domain",
        "dtype": "int64",
        "shape": ["batch"],
    }
    graphs = {a["file"]: a for a in manifest["artifacts"] if a.get("graph") == "conditional"}
    assert sorted(graphs) == ["conditional.fp16.onnx", "conditional.onnx"]
    assert all("direction" not in a for a in graphs.values())
    assert graphs["conditional.onnx"]["parity"]["fraction_over_1"] <= 0.001
    assert graphs["conditional.fp16.onnx"]["parity"]["reference"] == "onnx-fp32"
    assert (folder / "conditional.onnx").is_file()
    validate_manifest(manifest)


def test_conditional_graph_translates_each_image_into_its_own_target(exported):
    checkpoint, folder, _ = exported
    images = parity_images(np.random.default_rng(1), 3, 32, 40, 3)
    domains = np.array([2, 0, 1], dtype=np.int64)
    mixed = run(folder / "conditional.onnx", {"image": images, "domain": domains})
    expected = pytorch_translate(checkpoint, images, domains.tolist())
    assert np.abs(mixed.astype(int) - expected.astype(int)).max() <= 1
    for n, index in enumerate(domains):  # the same as each target's own fused graph
        alone = run(folder / f"to_{DOMAINS[index]}.onnx", {"image": images[n : n + 1]})
        assert np.abs(alone[0].astype(int) - mixed[n].astype(int)).max() <= 1
    assert not np.array_equal(expected[0], pytorch_translate(checkpoint, images[:1], [0])[0])


def broken(manifest: dict[str, Any], change) -> dict[str, Any]:
    changed = copy.deepcopy(manifest)
    change(changed)
    return changed


def set_index(m: dict[str, Any]) -> None:
    m["directions"]["to_dusk"]["domain_index"] = 2


def set_target(m: dict[str, Any]) -> None:
    m["directions"]["to_dusk"]["target_domain"] = "noon"


def give_direction(m: dict[str, Any]) -> None:
    next(a for a in m["artifacts"] if a.get("graph") == "conditional")["direction"] = "to_day"


def drop_declaration(m: dict[str, Any]) -> None:
    del m["conditional"]


def drop_artifacts(m: dict[str, Any]) -> None:
    m["artifacts"] = [a for a in m["artifacts"] if a.get("graph") != "conditional"]


def drop_direction(m: dict[str, Any]) -> None:
    del m["artifacts"][0]["direction"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (set_index, "to_dusk.domain_index: 2 does not name 'dusk'"),
        (set_target, "'noon' is not one of the manifest's domains (day, dusk, night)"),
        (give_direction, "the conditional graph serves every direction"),
        (drop_declaration, "a conditional graph, but the manifest declares no conditional"),
        (drop_artifacts, "$.conditional: declared, but no artifact holds it"),
        (drop_direction, "direction: missing"),
    ],
)
def test_invalid_multidomain_manifests_say_what_is_wrong(exported, change, words):
    with pytest.raises(RepositoryError) as caught:
        validate_manifest(broken(exported[2], change))
    assert words in str(caught.value)


def test_manifests_without_the_new_keys_stay_valid(exported, tiny_repository):
    def strip(m: dict[str, Any]) -> None:
        drop_declaration(m)
        drop_artifacts(m)
        for spec in m["directions"].values():
            del spec["target_domain"], spec["domain_index"]

    validate_manifest(broken(exported[2], strip))  # a multi-domain export before this change
    validate_manifest(read_manifest(tiny_repository, "tiny"))  # a two-direction model
