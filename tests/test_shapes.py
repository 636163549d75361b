"""The shape rule (contract 2): sizes, the minimum side, and its manifest form."""

from __future__ import annotations

import pytest

from i2i.models import create_networks, get_family, options_from_dict
from i2i.shapes import ShapeRule


def test_min_size_refuses_small_sides_naming_the_smallest() -> None:
    rule = ShapeRule(multiple_of=4, min_size=8)
    rule.check(8, 64)
    for height, width in ((4, 64), (64, 4), (1, 1)):
        with pytest.raises(ValueError, match="too small.*smallest accepted size: 8x8"):
            rule.check(height, width)


def test_nearest_never_goes_below_the_minimum() -> None:
    rule = ShapeRule(multiple_of=4, min_size=8)
    assert rule.nearest(5, 64) == (8, 64)
    assert rule.nearest(1, 2) == (8, 8)
    assert ShapeRule(multiple_of=4, min_size=6).smallest == 8


def test_manifest_round_trip_and_old_manifests() -> None:
    rule = ShapeRule(multiple_of=4, min_size=8)
    assert ShapeRule.from_manifest(rule.to_manifest()) == rule
    # Written before min_size existed: ResNet generators (multiple_of 4) needed 8.
    assert ShapeRule.from_manifest({"multiple_of": 4, "fixed_size": None}).smallest == 8
    assert ShapeRule.from_manifest({"multiple_of": 1, "fixed_size": 256}).fixed_size == 256


def test_describe() -> None:
    assert ShapeRule(multiple_of=4, min_size=8).describe() == "multiples of 4, at least 8x8"
    assert ShapeRule(fixed_size=256).describe() == "exactly 256x256"
    assert ShapeRule().describe() == "any size"


@pytest.mark.parametrize("net_g", ["resnet_9blocks", "resnet_6blocks"])
def test_cyclegan_rule_is_the_networks_real_minimum(net_g: str) -> None:
    """The family's minimum is what the network really takes: one step below fails."""
    torch = pytest.importorskip("torch")
    options = options_from_dict("cyclegan", {"netG": net_g, "ngf": 4})
    rule = get_family("cyclegan").shape_rule(options)
    generator = create_networks("cyclegan", options)["g_ab"].eval()
    smallest = rule.smallest
    with torch.no_grad():
        generator(torch.zeros(1, 3, smallest, 4 * smallest))
        with pytest.raises(RuntimeError):
            generator(torch.zeros(1, 3, smallest - rule.multiple_of, 4 * smallest))
