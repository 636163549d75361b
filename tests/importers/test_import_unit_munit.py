"""`i2i import unit|munit`: the references' own files translate as the references do.

The fixtures in tests/fixtures/{unit,munit}/ were written by the reference code itself
(tests/fixtures/make_unit_munit_fixtures.py): tiny generators, their YAML config, an input,
and the reference's outputs for it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from i2i.checkpoint import load_checkpoint, load_trained_networks
from i2i.importers import ImportError_, import_munit, import_unit
from i2i.models import get_family
from tests.test_cli import i2i

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GEN = "gen_00001000.pt"


def _to_uint8(y: np.ndarray) -> np.ndarray:
    """The reference's float output as translator bytes [N, H, W, C]."""
    return np.clip(np.round((y + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def _float(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch).float().permute(0, 3, 1, 2) / 127.5 - 1.0


def _config(tmp_path: Path, family: str, **changes: dict) -> Path:
    """The fixture's config with some keys changed (``gen={...}``, ``dis={...}``, top level)."""
    config = yaml.safe_load((FIXTURES / family / "config.yaml").read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    path = tmp_path / f"{family}_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_unit_translates_as_the_reference(tmp_path: Path) -> None:
    folder = FIXTURES / "unit"
    summary = import_unit(folder / GEN, folder / "config.yaml", tmp_path / "unit.pt")
    assert summary["step"] == 1000 and summary["directions"] == ["A2B", "B2A"]
    assert summary["notes"] == []
    ckpt = load_checkpoint(tmp_path / "unit.pt")
    assert ckpt["family"] == "unit" and ckpt["step"] == 1000
    model = ckpt["config"]["model"]
    assert (model["gen_dim"], model["gen_activ"], model["n_res"], model["share"]) == (
        4,
        "lrelu",
        1,
        False,
    )
    assert set(ckpt["networks"]) == {"gen_a", "gen_b"}
    assert len(ckpt["imported_from"]["gen"]["sha256"]) == 64
    _, nets = load_trained_networks(tmp_path / "unit.pt")
    image, want = np.load(folder / "input.npy"), np.load(folder / "a2b.npy")
    with torch.no_grad():
        got = nets["gen_b"].decode(nets["gen_a"].encode(_float(image))[0]).numpy()
        options = get_family("unit").options_type(**model)
        translated = get_family("unit").translators(nets, options)["A2B"](torch.from_numpy(image))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(translated.numpy().astype(int) - _to_uint8(want).astype(int)).max() <= 1


def test_munit_translates_and_encodes_style_as_the_reference(tmp_path: Path) -> None:
    folder = FIXTURES / "munit"
    summary = import_munit(folder / GEN, folder / "config.yaml", tmp_path / "munit.pt")
    assert summary["options"]["n_downsample"] == 1 and summary["options"]["mlp_dim"] == 16
    ckpt, nets = load_trained_networks(tmp_path / "munit.pt")
    family = get_family("munit")
    options = family.options_type(**ckpt["config"]["model"])
    image = np.load(folder / "input.npy")
    style = torch.from_numpy(np.load(folder / "style.npy"))
    want = np.load(folder / "a2b.npy")
    with torch.no_grad():
        got = nets["gen_b"].decode(nets["gen_a"].encode(_float(image))[0], style).numpy()
        translated = family.translators(nets, options)["A2B"](torch.from_numpy(image), style)
        style_of_ref = family.style_encoders(nets, options)["A2B"](
            torch.from_numpy(np.load(folder / "style_ref.npy"))
        )
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(translated.numpy().astype(int) - _to_uint8(want).astype(int)).max() <= 1
    np.testing.assert_allclose(
        style_of_ref.numpy(), np.load(folder / "style_of_ref.npy"), atol=1e-5
    )


def test_command_line(tmp_path: Path) -> None:
    gen = tmp_path / "run" / "gen_00250000.pt"
    gen.parent.mkdir()
    shutil.copy(FIXTURES / "munit" / GEN, gen)
    out = tmp_path / "m.pt"
    result = i2i(
        "import", "munit", "--gen", str(gen), "--config", str(FIXTURES / "munit" / "config.yaml"),
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "step 250000" in result.stdout and "A2B, B2A" in result.stdout
    assert load_checkpoint(out)["step"] == 250000
    result = i2i(
        "import", "unit", "--gen", str(gen), "--config", str(FIXTURES / "munit" / "config.yaml"),
        "--out", str(tmp_path / "u.pt"),
    )  # fmt: skip
    assert result.returncode == 2 and "use `i2i import munit`" in result.stderr
    assert not (tmp_path / "u.pt").exists()


@pytest.mark.parametrize(
    ("family", "changes", "hint"),
    [
        ("unit", {"gen": {"n_res": 3}}, "the file fits with gen.n_res: 1"),
        ("unit", {"gen": {"dim": 8, "n_downsample": 1}}, "gen.dim: 4, gen.n_downsample: 2"),
        ("unit", {"input_dim_b": 1}, "the file fits with input_dim_b: 3"),
        ("munit", {"gen": {"mlp_dim": 32}}, "the file fits with gen.mlp_dim: 16"),
        ("munit", {"gen": {"style_dim": 4}}, "the file fits with gen.style_dim: 8"),
    ],
)
def test_mismatch_names_the_config_key(
    tmp_path: Path, family: str, changes: dict, hint: str
) -> None:
    config = _config(tmp_path, family, **changes)
    importer = import_unit if family == "unit" else import_munit
    with pytest.raises(ImportError_, match="does not fit") as info:
        importer(FIXTURES / family / GEN, config, tmp_path / "out.pt")
    assert hint in str(info.value)
    assert not (tmp_path / "out.pt").exists()


def test_wrong_family_is_named(tmp_path: Path) -> None:
    with pytest.raises(ImportError_, match="it is a MUNIT generator.*use `i2i import munit`"):
        import_unit(FIXTURES / "munit" / GEN, FIXTURES / "unit" / "config.yaml", tmp_path / "o.pt")
    with pytest.raises(ImportError_, match="it is a UNIT generator.*use `i2i import unit`"):
        import_munit(FIXTURES / "unit" / GEN, FIXTURES / "munit" / "config.yaml", tmp_path / "o.pt")


def test_bad_config_values_use_the_yaml_names(tmp_path: Path) -> None:
    with pytest.raises(ImportError_, match="unknown gen.activ 'swish'"):
        import_unit(
            FIXTURES / "unit" / GEN,
            _config(tmp_path, "unit", gen={"activ": "swish"}),
            tmp_path / "o",
        )
    with pytest.raises(ImportError_, match="option 'gen.dim' must be int"):
        import_unit(
            FIXTURES / "unit" / GEN, _config(tmp_path, "unit", gen={"dim": "4"}), tmp_path / "o"
        )
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ImportError_, match="expected a YAML mapping"):
        import_unit(FIXTURES / "unit" / GEN, bad, tmp_path / "o")


def test_unsupported_discriminator_settings_are_noted(tmp_path: Path) -> None:
    config = _config(tmp_path, "munit", dis={"norm": "sn"})
    summary = import_munit(FIXTURES / "munit" / GEN, config, tmp_path / "o.pt")
    assert len(summary["notes"]) == 1 and "dis.norm 'sn' is not supported" in summary["notes"][0]
    assert load_checkpoint(tmp_path / "o.pt")["config"]["model"]["dis_norm"] == "none"


def test_files_that_are_not_generator_pairs(tmp_path: Path) -> None:
    config = FIXTURES / "unit" / "config.yaml"
    with pytest.raises(ImportError_, match="no such file"):
        import_unit(tmp_path / "missing.pt", config, tmp_path / "o.pt")
    state = torch.load(FIXTURES / "unit" / GEN, weights_only=True)
    torch.save(state["a"], tmp_path / "bare.pt")
    with pytest.raises(ImportError_, match=r"expected the reference's generator file"):
        import_unit(tmp_path / "bare.pt", config, tmp_path / "o.pt")
    torch.save({"a": {"cnns.0.0.conv.weight": torch.zeros(1)}, "b": {}}, tmp_path / "dis.pt")
    with pytest.raises(ImportError_, match="holds discriminators"):
        import_unit(tmp_path / "dis.pt", config, tmp_path / "o.pt")
    import_unit(FIXTURES / "unit" / GEN, config, tmp_path / "i2i.pt")
    with pytest.raises(ImportError_, match="already an i2i checkpoint"):
        import_unit(tmp_path / "i2i.pt", config, tmp_path / "o.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ImportError_, match="not a readable PyTorch file"):
        import_unit(tmp_path / "junk.pt", config, tmp_path / "o.pt")


def test_stale_instance_norm_statistics_are_dropped(tmp_path: Path) -> None:
    """PyTorch < 0.4 saved running statistics of the encoders' instance norms; the AdaIN
    layers' own buffers (MUNIT) are kept."""
    state = torch.load(FIXTURES / "munit" / GEN, weights_only=True)
    for side in ("a", "b"):
        state[side]["enc_content.model.0.norm.running_mean"] = torch.zeros(4)
        state[side]["enc_content.model.0.norm.running_var"] = torch.ones(4)
    torch.save(state, tmp_path / "gen_00000005.pt")
    summary = import_munit(
        tmp_path / "gen_00000005.pt", FIXTURES / "munit" / "config.yaml", tmp_path / "o.pt"
    )
    assert summary["dropped_keys"]["gen_a"] == [
        "enc_content.model.0.norm.running_mean",
        "enc_content.model.0.norm.running_var",
    ]
    networks = load_checkpoint(tmp_path / "o.pt")["networks"]
    assert "dec.model.0.model.0.model.0.norm.running_mean" in networks["gen_a"]
    assert "enc_content.model.0.norm.running_mean" not in networks["gen_a"]
