"""The StarGAN family: networks, the one-hot condition, the shape rule, ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from i2i.checkpoint import make_checkpoint, save_checkpoint
from i2i.export import export_checkpoint
from i2i.models import DomainTranslator, create_networks, get_family, options_from_dict
from i2i.models.stargan import StarGANOptions, one_hot
from tests.conftest import TINY_MODEL_OPTIONS

DOMAINS = ["day", "dusk", "night"]
TINY = {**TINY_MODEL_OPTIONS["stargan"], "domains": DOMAINS}


def tiny_networks(seed: int = 0, **changes) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    return create_networks("stargan", {**TINY, **changes})


def test_shapes_of_g_and_both_heads_of_d() -> None:
    nets = tiny_networks()
    g, d = nets["g"], nets["d"]
    c = one_hot(torch.tensor([0, 2]), 3, torch.float32)
    for h, w in ((32, 32), (24, 40), (8, 12)):  # g is fully convolutional
        assert g(torch.randn(2, 3, h, w), c).shape == (2, 3, h, w)
    src, cls = d(torch.randn(2, 3, 32, 32))
    assert src.shape == (2, 1, 4, 4)  # 32 / 2 ** d_repeat_num
    assert cls.shape == (2, 3)  # one logit per domain
    out = g(torch.randn(2, 3, 32, 32), c)
    assert out.min() >= -1 and out.max() <= 1


def test_the_reference_sizes_have_the_reference_parameter_counts() -> None:
    # yunjey/stargan's Generator(64, 5, 6) and Discriminator(128, 64, 5, 6), as its
    # print_network reports them for five domains (RaFD's c_dim 5 in its README).
    nets = create_networks("stargan", domains=["a", "b", "c", "d", "e"])
    assert sum(p.numel() for p in nets["g"].parameters()) == 8_430_528
    assert sum(p.numel() for p in nets["d"].parameters()) == 44_762_048
    assert nets["d"].conv_cls.kernel_size == (2, 2)  # 128 / 2 ** 6


def test_the_label_maps_condition_the_output() -> None:
    g = tiny_networks()["g"]
    x = torch.randn(1, 3, 32, 32).repeat(3, 1, 1, 1)
    out = g(x, torch.eye(3))
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])


def test_one_hot_from_indices() -> None:
    got = one_hot(torch.tensor([2, 0, 1, 3]), 3, torch.float32)
    expected = torch.tensor([[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.float32)
    assert torch.equal(got, expected)


def test_conditional_is_g_of_the_one_hot_target() -> None:
    nets = tiny_networks()
    conditional = get_family("stargan").conditional(nets, options_from_dict("stargan", TINY))
    x = torch.randn(3, 3, 16, 16)
    domain = torch.tensor([1, 0, 2])
    with torch.no_grad():
        expected = nets["g"](x, torch.eye(3)[domain])
        assert torch.equal(conditional(x, domain), expected)


def test_instance_statistics_in_every_mode_and_no_dependence_on_the_batch() -> None:
    g = tiny_networks()["g"]
    x, c = torch.randn(4, 3, 16, 16), torch.eye(3)[[0, 1, 2, 0]]
    with torch.no_grad():
        trained_mode = g.train()(x, c)
        eval_mode = g.eval()(x, c)
        alone = g(x[:1], c[:1])
    assert torch.equal(trained_mode, eval_mode)
    torch.testing.assert_close(alone, eval_mode[:1])
    assert not any(name.endswith("running_mean") for name in g.state_dict())


def test_shape_rule_and_directions() -> None:
    family = get_family("stargan")
    options = options_from_dict("stargan", TINY)
    rule = family.shape_rule(options)
    rule.check(36, 44)
    for bad in ((34, 36), (4, 4)):
        with pytest.raises(ValueError):
            rule.check(*bad)
    assert family.multi_domain and family.directions == {}
    assert family.direction_names(options) == ["to_day", "to_dusk", "to_night"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"output_nc": 1}, "must equal input_nc"),
        ({"image_size": 36}, "multiple of 2 \\*\\* d_repeat_num"),
        ({"domains": ["a", "a"]}, "unique"),
        ({"domains": "ab"}, "list of names"),
    ],
)
def test_bad_options_say_what_is_wrong(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StarGANOptions(**{**TINY, **changes})


def test_translators_need_g() -> None:
    family = get_family("stargan")
    options = options_from_dict("stargan", TINY)
    assert family.translators({"d": tiny_networks()["d"]}, options) == {}
    assert sorted(family.translators(tiny_networks(), options)) == [
        "to_day",
        "to_dusk",
        "to_night",
    ]


def test_networks_need_the_domains() -> None:
    with pytest.raises(ValueError, match="at least 2 domains"):
        create_networks("stargan", {**TINY, "domains": []})


def _checkpoint(path: Path) -> Path:
    nets = tiny_networks(seed=3)
    # Untrained tanh outputs sit near 0; larger last-layer weights spread them over the
    # range, so the comparison below sees many pixel values.
    with torch.no_grad():
        nets["g"].main[-2].weight.mul_(20)
    payload = make_checkpoint(
        family="stargan",
        config={"family": "stargan", "model": TINY},
        domains=DOMAINS,
        networks={name: net.state_dict() for name, net in nets.items()},
        step=1,
    )
    return save_checkpoint(payload, path)


def test_export_writes_one_fused_translator_per_target_that_onnxruntime_runs(
    tmp_path: Path,
) -> None:
    checkpoint = _checkpoint(tmp_path / "stargan.pt")
    folder, manifest = export_checkpoint(checkpoint, tmp_path / "repo", "sg", formats=["onnx"])
    assert manifest["domains"] == DOMAINS
    assert sorted(manifest["directions"]) == ["to_day", "to_dusk", "to_night"]
    nets = tiny_networks(seed=3)
    nets["g"].load_state_dict(torch.load(checkpoint, weights_only=False)["networks"]["g"])
    translators = get_family("stargan").translators(nets, options_from_dict("stargan", TINY))
    image = np.random.default_rng(0).integers(0, 256, (2, 24, 32, 3), dtype=np.uint8)
    outputs = {}
    for direction in manifest["directions"]:
        session = ort.InferenceSession(
            str(folder / f"{direction}.onnx"), providers=["CPUExecutionProvider"]
        )
        (got,) = session.run(None, {session.get_inputs()[0].name: image})
        with torch.no_grad():
            expected = translators[direction](torch.from_numpy(image)).numpy()
        assert got.shape == image.shape and got.dtype == np.uint8
        # Rounding of values within float error of a half may differ by one level.
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
        assert (got == expected).mean() > 0.99
        outputs[direction] = got
    assert not np.array_equal(outputs["to_day"], outputs["to_night"])


def test_the_whole_domain_translator_exports_with_its_int64_condition(tmp_path: Path) -> None:
    """One graph for every target: the one-hot built from int64 indices traces into ONNX,
    and a batch mixing targets equals the per-target translations."""
    nets = tiny_networks(seed=4)
    options = options_from_dict("stargan", TINY)
    conditional = get_family("stargan").conditional(nets, options)
    whole = DomainTranslator(conditional, 3, 3, len(DOMAINS)).eval()
    session = export_conditional_graph(whole, tmp_path / "whole.onnx")
    image = np.random.default_rng(1).integers(0, 256, (3, 20, 28, 3), dtype=np.uint8)
    domain = np.array([2, 0, 1], dtype=np.int64)
    (got,) = session.run(None, {"image": image, "domain": domain})
    with torch.no_grad():
        expected = whole(torch.from_numpy(image), torch.from_numpy(domain)).numpy()
        per_target = [
            whole(torch.from_numpy(image[i : i + 1]), torch.tensor([int(domain[i])])).numpy()[0]
            for i in range(3)
        ]
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    np.testing.assert_array_equal(expected, np.stack(per_target))


def export_conditional_graph(whole: torch.nn.Module, path: Path) -> ort.InferenceSession:
    """ONNX Runtime session of the (image, int64 domain) translator `whole` exported to
    `path` with a dynamic batch and a size a multiple of 4."""
    batch, height, width = torch.export.Dim("batch"), torch.export.Dim("h"), torch.export.Dim("w")
    example = (torch.zeros(2, 16, 16, 3, dtype=torch.uint8), torch.tensor([0, 1]))
    with torch.no_grad():
        program = torch.onnx.export(
            whole,
            example,
            input_names=["image", "domain"],
            output_names=["translated"],
            dynamo=True,
            dynamic_shapes=({0: batch, 1: 4 * height, 2: 4 * width}, {0: batch}),
        )
    program.save(str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
