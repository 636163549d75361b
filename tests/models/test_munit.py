"""The MUNIT family: content/style codes, functional AdaIN, layer norm, translators, export."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch.export import Dim

from i2i.models import MUNITOptions, create_networks, get_family
from i2i.models.munit import AdaINGen
from i2i.models.unit_blocks import AdaptiveInstanceNorm2d, LayerNorm

TINY = {
    "gen_dim": 4,
    "n_res": 2,
    "mlp_dim": 8,
    "dis_dim": 4,
    "dis_n_layer": 2,
    "num_scales": 2,
}


def _x(n: int = 2, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _images(n: int, h: int, w: int, c: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, c), dtype=torch.uint8, generator=g)


def reference_adain(x: torch.Tensor, params: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The reference's AdaIN: batch norm in training mode on a (1, N*C, H, W) view, the
    parameters' first C columns as bias and the next C as weight."""
    b, c = x.shape[:2]
    out = F.batch_norm(
        x.reshape(1, b * c, *x.shape[2:]),
        torch.zeros(b * c),
        torch.ones(b * c),
        params[:, c : 2 * c].reshape(-1),
        params[:, :c].reshape(-1),
        True,
        0.1,
        eps,
    )
    return out.view(*x.shape)


def reference_layer_norm(x: torch.Tensor, norm: LayerNorm) -> torch.Tensor:
    """The reference's LayerNorm, with its branch on the batch size."""
    shape = [-1] + [1] * (x.dim() - 1)
    if x.size(0) == 1:
        mean = x.view(-1).mean().view(*shape)
        std = x.view(-1).std().view(*shape)
    else:
        mean = x.view(x.size(0), -1).mean(1).view(*shape)
        std = x.view(x.size(0), -1).std(1).view(*shape)
    y = (x - mean) / (std + norm.eps)
    gshape = [1, -1] + [1] * (x.dim() - 2)
    return y * norm.gamma.view(*gshape) + norm.beta.view(*gshape)


def test_defaults_are_the_reference_config() -> None:
    o = MUNITOptions()
    assert (o.gen_dim, o.style_dim, o.mlp_dim, o.n_downsample, o.n_res) == (64, 8, 256, 2, 4)
    assert (o.gen_activ, o.gen_pad_type, o.init) == ("relu", "reflect", "kaiming")
    assert (o.dis_dim, o.dis_norm, o.dis_activ, o.dis_n_layer, o.num_scales, o.dis_pad_type) == (
        64,
        "none",
        "lrelu",
        4,
        3,
        "reflect",
    )
    assert (MUNITOptions(input_dim_a=1).input_nc, MUNITOptions(input_dim_b=1).output_nc) == (1, 1)
    with pytest.raises(ValueError, match="style_dim must be >= 1"):
        MUNITOptions(style_dim=0)
    family = get_family("munit")
    assert family.style_dim == 8
    assert family.style_dim_for(MUNITOptions(style_dim=16)) == 16
    assert get_family("unit").style_dim_for(None) == 0


def test_encode_decode_shapes() -> None:
    gen = AdaINGen(3, dim=4, style_dim=8, n_downsample=2, n_res=2, mlp_dim=8).eval()
    x = _x(size=32)
    with torch.no_grad():
        content, style = gen.encode(x)
        assert content.shape == (2, 16, 8, 8) and style.shape == (2, 8, 1, 1)
        out = gen.decode(content, style)
        assert out.shape == (2, 3, 32, 32) and out.abs().max() <= 1
        # A style as (N, S) gives the same image as (N, S, 1, 1).
        assert torch.equal(gen.decode(content, style.flatten(1)), out)
        assert torch.equal(gen(x), out)
    # The MLP makes exactly the decoder's AdaIN parameters: 2 blocks x 2 convs x 2 x 16.
    assert gen.dec.num_adain_params == 128 == gen.mlp.model[-1].fc.out_features


def test_decoder_keeps_no_state_between_calls() -> None:
    gen = AdaINGen(3, dim=4, style_dim=8, n_downsample=1, n_res=1, mlp_dim=8).eval()
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    content = gen.encode(_x())[0]
    s1, s2 = torch.randn(2, 8), torch.randn(2, 8)
    with torch.no_grad():
        first = gen.decode(content, s1)
        assert not torch.allclose(gen.decode(content, s2), first)
        assert torch.equal(gen.decode(content, s1), first)
    adain = [m for m in gen.modules() if isinstance(m, AdaptiveInstanceNorm2d)]
    assert len(adain) == 2 and not any(hasattr(m, "weight") for m in adain)
    after = gen.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # buffers never change
    with pytest.raises(ValueError, match="AdaIN"):
        gen.dec(content)


@pytest.mark.parametrize("batch", [1, 3])
def test_adain_equals_the_reference_per_sample(batch: int) -> None:
    torch.manual_seed(batch)
    norm = AdaptiveInstanceNorm2d(5)
    x = torch.randn(batch, 5, 6, 7) * 3 + 1
    params = torch.randn(batch, 10)
    out = norm(x, params)
    assert torch.allclose(out, reference_adain(x, params), atol=1e-5)
    # Each sample's result is its own, whatever else is in the batch.
    for i in range(batch):
        assert torch.allclose(out[i : i + 1], norm(x[i : i + 1], params[i : i + 1]), atol=1e-6)


@pytest.mark.parametrize("batch", [1, 3])
def test_layer_norm_equals_the_reference_per_sample(batch: int) -> None:
    torch.manual_seed(batch)
    norm = LayerNorm(4)
    with torch.no_grad():
        norm.beta.normal_()
    x = torch.randn(batch, 4, 5, 6) * 2 - 1
    out = norm(x)
    assert torch.allclose(out, reference_layer_norm(x, norm), atol=1e-5)
    for i in range(batch):
        assert torch.allclose(out[i : i + 1], norm(x[i : i + 1]), atol=1e-6)


def test_translators_and_style_encoders() -> None:
    torch.manual_seed(0)
    nets = create_networks("munit", TINY, input_dim_b=1)
    family = get_family("munit")
    translators = family.translators(nets, None)
    encoders = family.style_encoders(nets, None)
    assert set(translators) == set(encoders) == {"A2B", "B2A"}
    a2b, b2a = translators["A2B"], translators["B2A"]
    assert (a2b.in_channels, a2b.out_channels, a2b.style_dim) == (3, 1, 8)
    assert (b2a.in_channels, b2a.out_channels) == (1, 3)
    # A2B's style comes from a domain B image, B2A's from a domain A image.
    assert (encoders["A2B"].in_channels, encoders["B2A"].in_channels) == (1, 3)
    assert encoders["A2B"].encoder is nets["gen_b"].enc_style
    image, ref = _images(3, 32, 40, 3, seed=1), _images(3, 32, 40, 1, seed=2)
    with torch.no_grad():
        style = encoders["A2B"](ref)
        assert style.dtype == torch.float32 and style.shape == (3, 8)
        out = a2b(image, style)
        x = image.float().permute(0, 3, 1, 2) / 127.5 - 1
        want = nets["gen_b"].decode(nets["gen_a"].encode(x)[0], style)
        # Batched translation equals one image at a time.
        singles = torch.cat([a2b(image[i : i + 1], style[i : i + 1]) for i in range(3)])
    assert out.shape == (3, 32, 40, 1) and out.dtype == torch.uint8
    expected = torch.round((want + 1) * 127.5).clamp(0, 255).permute(0, 2, 3, 1)
    assert torch.equal(out, expected.to(torch.uint8))
    assert (out.int() - singles.int()).abs().max() <= 1
    assert not any(m.training for t in (a2b, encoders["A2B"]) for m in t.modules())
    assert family.translators({"gen_b": nets["gen_b"]}, None) == {}
    assert family.style_encoders({"gen_b": nets["gen_b"]}, None) == {}


@pytest.mark.parametrize(
    ("style", "message"),
    [
        (torch.randn(2, 8, dtype=torch.float64), "float32 style batch"),
        (torch.randn(2, 8, 1, 1), "float32 style batch"),
        (torch.randn(2, 7), r"\[N, 8\]"),
        (torch.randn(3, 8), "N = 2"),
    ],
)
def test_translator_rejects_bad_styles(style: torch.Tensor, message: str) -> None:
    translator = get_family("munit").translators(create_networks("munit", TINY), None)["A2B"]
    with pytest.raises(ValueError, match=message):
        translator(_images(2, 32, 32), style)


def test_shape_rule_covers_the_style_encoder() -> None:
    rule = get_family("munit").shape_rule(MUNITOptions(**TINY))
    assert (rule.multiple_of, rule.smallest) == (4, 16)
    nets = create_networks("munit", TINY)
    encoder = get_family("munit").style_encoders(nets, None)["A2B"]
    translator = get_family("munit").translators(nets, None)["A2B"]
    with torch.no_grad():
        assert encoder(_images(1, 16, 20)).shape == (1, 8)
        assert translator(_images(1, 16, 20), torch.zeros(1, 8)).shape == (1, 16, 20, 3)
        with pytest.raises(RuntimeError, match="[Pp]adding"):
            encoder(_images(1, 12, 20))


def _onnx_ops(model: onnx.ModelProto) -> set[str]:
    ops = {node.op_type for node in model.graph.node}
    for function in model.functions:
        ops |= {node.op_type for node in function.node}
    return ops


def test_onnx_export_without_batch_norm() -> None:
    """The style translator (two inputs) and the style encoder export with dynamic batch and
    size, contain no BatchNormalization, and ONNX Runtime computes what PyTorch does."""
    torch.manual_seed(0)
    nets = create_networks("munit", TINY)
    family = get_family("munit")
    translator = family.translators(nets, None)["A2B"]
    encoder = family.style_encoders(nets, None)["A2B"]
    batch, h, w = Dim("batch", min=1, max=64), Dim("h", min=4, max=256), Dim("w", min=4, max=256)
    image_dims = {0: batch, 1: 4 * h, 2: 4 * w}
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for module, inputs, names, dynamic in (
            (
                translator,
                (_images(2, 32, 32), torch.randn(2, 8)),
                ["image", "style"],
                (image_dims, {0: batch}),
            ),
            (encoder, (_images(2, 32, 32),), ["image"], (image_dims,)),
        ):
            program = torch.onnx.export(
                module,
                inputs,
                input_names=names,
                output_names=["output"],
                opset_version=18,
                dynamo=True,
                dynamic_shapes=dynamic,
                verbose=False,
            )
            assert program is not None
            model = program.model_proto
            assert "BatchNormalization" not in _onnx_ops(model)
            session = ort.InferenceSession(
                model.SerializeToString(), providers=["CPUExecutionProvider"]
            )
            for n, side in ((1, 16), (3, 40)):
                feeds = {"image": rng.integers(0, 256, (n, side, side + 8, 3), dtype=np.uint8)}
                if "style" in names:
                    feeds["style"] = rng.standard_normal((n, 8)).astype(np.float32)
                got = session.run(None, feeds)[0]
                want = module(*(torch.from_numpy(feeds[k]) for k in names)).numpy()
                assert got.shape == want.shape and got.dtype == want.dtype
                if got.dtype == np.uint8:
                    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
                else:
                    np.testing.assert_allclose(got, want, atol=1e-5)
