"""The family registry: every registered family builds, and bad names and options fail clearly."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from torch import nn

from i2i.models import (
    ModelFamily,
    ShapeRule,
    create_networks,
    get_family,
    list_families,
    options_from_dict,
    register_family,
    registry,
)
from tests.conftest import TINY_MODEL_OPTIONS as TINY_OPTIONS


def test_every_family_has_tiny_options() -> None:
    missing = set(list_families()) - set(TINY_OPTIONS)
    assert not missing, (
        f"add tiny options for {sorted(missing)} to TINY_MODEL_OPTIONS in tests/conftest.py"
    )


@pytest.mark.parametrize("name", list_families())
def test_family_builds_its_networks(name: str) -> None:
    family = get_family(name)
    assert family.name == name
    assert family.description
    networks = create_networks(name, TINY_OPTIONS.get(name))
    assert networks
    assert all(isinstance(net, nn.Module) for net in networks.values())
    assert set(family.generators) <= set(networks)
    options = options_from_dict(name, TINY_OPTIONS.get(name, {}))
    if family.multi_domain:  # one direction per target domain, named by the options
        assert not family.directions and family.conditional is not None
        assert family.direction_names(options) == [f"to_{d}" for d in options.domains]
    else:
        assert family.directions
        assert set(family.directions.values()) <= set(family.generators)
        assert family.direction_names(options) == list(family.directions)
    assert isinstance(family.shape_rule(options), ShapeRule)


@pytest.mark.parametrize("name", list_families())
def test_family_options_have_defaults(name: str) -> None:
    options_type = get_family(name).options_type
    assert dataclasses.is_dataclass(options_type)
    options_type()  # every field has a default


def test_list_families_includes_cyclegan() -> None:
    assert "cyclegan" in list_families()
    assert list_families() == sorted(list_families())


def test_unknown_family_lists_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown model family 'pix2pixhd'.*cyclegan"):
        get_family("pix2pixhd")
    with pytest.raises(KeyError, match="cyclegan"):
        create_networks("pix2pixhd")


def test_options_from_dict() -> None:
    options = options_from_dict("cyclegan", {"ngf": 32, "init_gain": 1})
    assert options.ngf == 32
    assert options.init_gain == 1.0 and isinstance(options.init_gain, float)
    assert options.netG == "resnet_9blocks"  # untouched keys keep their defaults


def test_options_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"which_model_netG.*valid options: .*netG") as info:
        options_from_dict("cyclegan", {"which_model_netG": "unet_256", "ngf": 8})
    assert "'ngf'" not in str(info.value).split(";")[0]


@pytest.mark.parametrize(
    ("key", "value"), [("ngf", "64"), ("ngf", True), ("dropout", 1), ("netG", 3)]
)
def test_options_from_dict_rejects_wrong_types(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"option '{key}' must be"):
        options_from_dict("cyclegan", {key: value})


def test_create_networks_accepts_dataclass_dict_and_overrides() -> None:
    family = get_family("cyclegan")
    options = family.options_type(ngf=4, ndf=4, netG="resnet_6blocks")
    from_dataclass = create_networks("cyclegan", options, ngf=2)
    from_dict = create_networks("cyclegan", {"ngf": 2, "ndf": 4, "netG": "resnet_6blocks"})
    assert list(from_dataclass) == list(from_dict)
    for name in from_dict:
        assert from_dataclass[name].state_dict().keys() == from_dict[name].state_dict().keys()
    assert options.ngf == 4  # overrides do not change the caller's options
    with pytest.raises(ValueError, match="unknown option"):
        create_networks("cyclegan", options, ngf_typo=2)
    with pytest.raises(TypeError, match="must be a dict or CycleGANOptions"):
        create_networks("cyclegan", ["ngf", 4])


def _fake_family(name: str = "fake", **changes: Any) -> ModelFamily:
    @dataclasses.dataclass
    class FakeOptions:
        width: int = 2

    fields: dict[str, Any] = {
        "name": name,
        "options_type": FakeOptions,
        "build": lambda o: {"g": nn.Conv2d(3, 3, 1), "d": nn.Conv2d(3, 1, 1)},
        "generators": ("g",),
        "directions": {"forward": "g"},
        "shape_rule": lambda o: ShapeRule(),
        "description": "a stand-in",
    }
    return ModelFamily(**{**fields, **changes})


def test_register_family(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    register_family(_fake_family())
    assert "fake" in list_families()
    assert set(create_networks("fake", width=3)) == {"g", "d"}
    with pytest.raises(ValueError, match="already registered"):
        register_family(_fake_family())
    with pytest.raises(ValueError, match="already registered"):
        register_family(_fake_family("cyclegan"))


def test_family_definition_is_checked() -> None:
    with pytest.raises(ValueError, match="not among its generators"):
        _fake_family(directions={"forward": "d"})
    with pytest.raises(ValueError, match="at least one"):
        _fake_family(generators=())
    with pytest.raises(TypeError, match="dataclass"):
        _fake_family(options_type=dict)


def test_shape_rule_multiple_of() -> None:
    rule = ShapeRule(multiple_of=4)
    rule.check(256, 36)
    with pytest.raises(
        ValueError, match=r"250x256 .*multiples of 4 .*nearest accepted size: 252x256"
    ):
        rule.check(250, 256)
    assert rule.nearest(250, 257) == (252, 256)
    assert rule.nearest(6, 1) == (8, 4)  # ties round up; never below one multiple
    with pytest.raises(ValueError, match="empty"):
        rule.check(0, 4)
    ShapeRule().check(7, 13)
    assert ShapeRule().nearest(7, 13) == (7, 13)


def test_shape_rule_fixed_size() -> None:
    rule = ShapeRule(fixed_size=256)
    rule.check(256, 256)
    with pytest.raises(ValueError, match="exactly 256x256"):
        rule.check(256, 512)
    assert rule.nearest(100, 900) == (256, 256)


def test_shape_rule_is_validated() -> None:
    with pytest.raises(ValueError):
        ShapeRule(multiple_of=0)
    with pytest.raises(ValueError):
        ShapeRule(multiple_of=8, fixed_size=100)
