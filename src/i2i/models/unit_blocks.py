"""Building blocks of the UNIT and MUNIT families, export-friendly, with the references' names.

The modules reproduce the layer structure and the module/attribute names of the reference
implementations (mingyuliutw/UNIT and NVlabs/MUNIT, both ``networks.py``), so a state dict
saved by the reference loads into them as it is (``conv.weight``, ``norm.gamma``,
``model.0.model.1...``). What differs is how two normalisation layers compute, so that a
graph exported from them is plain and batch-independent:

* :class:`AdaptiveInstanceNorm2d` takes its per-sample scale and shift as an argument
  (``forward(x, params)``) instead of having them assigned to module attributes before each
  call, and normalises with per-sample, per-channel statistics directly. The reference
  reshapes the batch to one sample of N*C channels and calls batch norm in training mode,
  which computes the same numbers but exports as training-mode BatchNormalization.
* :class:`LayerNorm` computes the per-sample mean and unbiased standard deviation over
  (C, H, W) for any batch size; the reference branches on ``x.size(0) == 1`` (both branches
  compute the same thing).

Activations are not in place (the reference's are); the results are the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import init

ACTIVATIONS = ("relu", "lrelu", "prelu", "selu", "tanh", "none")
PAD_TYPES = ("reflect", "replicate", "zero")
CONV_NORMS = ("bn", "in", "ln", "adain", "none")
LINEAR_NORMS = ("bn", "ln", "none")
INIT_TYPES = ("gaussian", "kaiming", "xavier", "orthogonal", "default")


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ValueError naming the valid choices unless ``value`` is one of them."""
    if value not in choices:
        raise ValueError(f"unknown {key} {value!r}; expected one of: {', '.join(choices)}")


def make_activation(name: str) -> nn.Module | None:
    """The reference's activation by name (LeakyReLU slope 0.2); None for ``"none"``."""
    check_choice("activation", name, ACTIVATIONS)
    layers: dict[str, Callable[[], nn.Module]] = {
        "relu": nn.ReLU,
        "lrelu": lambda: nn.LeakyReLU(0.2),
        "prelu": nn.PReLU,
        "selu": nn.SELU,
        "tanh": nn.Tanh,
    }
    return layers[name]() if name != "none" else None


def make_pad(pad_type: str, padding: int) -> nn.Module:
    """Reflection, replication or zero padding of ``padding`` pixels on every side."""
    check_choice("pad_type", pad_type, PAD_TYPES)
    if pad_type == "reflect":
        return nn.ReflectionPad2d(padding)
    if pad_type == "replicate":
        return nn.ReplicationPad2d(padding)
    return nn.ZeroPad2d(padding)


class LayerNorm(nn.Module):
    """MUNIT's layer norm: per sample, ``(x - mean) / (std + eps)`` over all non-batch
    dimensions with the unbiased std, then a per-channel ``gamma`` and ``beta``.

    ``gamma`` starts uniform in [0, 1) as in the reference (one draw from torch's global
    RNG at construction).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.affine = affine
        self.eps = eps
        if affine:
            self.gamma = nn.Parameter(torch.empty(num_features).uniform_())
            self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        std = x.std(dim=dims, keepdim=True)  # unbiased, as the reference's Tensor.std()
        x = (x - mean) / (std + self.eps)
        if self.affine:
            shape = [1, -1] + [1] * (x.dim() - 2)
            x = x * self.gamma.view(*shape) + self.beta.view(*shape)
        return x


class AdaptiveInstanceNorm2d(nn.Module):
    """AdaIN: instance-normalise each sample's channels, then scale and shift them by
    per-sample parameters given with the input.

    ``forward(x, params)`` with ``params`` (N, 2C): the first C columns are the shift
    (the reference's "mean", assigned to its ``bias``), the next C the scale (its "std",
    assigned to its ``weight``). The statistics are per sample and channel over (H, W), the
    variance biased, as the reference's batch norm in training mode on a (1, N*C, H, W)
    view computes them. ``running_mean`` and ``running_var`` are the reference's unused
    buffers, kept so its state dicts load; they never change.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum  # unused, as in the reference
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    @property
    def num_params(self) -> int:
        """How many columns of the AdaIN parameter vector this layer takes."""
        return 2 * self.num_features

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        c = self.num_features
        shift = params[:, :c].reshape(-1, c, 1, 1)
        scale = params[:, c : 2 * c].reshape(-1, c, 1, 1)
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = x.var(dim=(2, 3), keepdim=True, correction=0)
        return (x - mean) * torch.rsqrt(var + self.eps) * scale + shift

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class Conv2dBlock(nn.Module):
    """Padding, convolution, optional normalisation, optional activation (the reference's
    ``Conv2dBlock``; the convolution always has a bias).

    With ``norm="adain"``, ``forward(x, adain_params)`` needs the (N, 2 * output_dim) AdaIN
    parameters of this layer.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        kernel_size: int,
        stride: int,
        padding: int = 0,
        norm: str = "none",
        activation: str = "relu",
        pad_type: str = "zero",
    ) -> None:
        super().__init__()
        check_choice("norm", norm, CONV_NORMS)
        self.pad = make_pad(pad_type, padding)
        self.norm: nn.Module | None
        if norm == "bn":
            self.norm = nn.BatchNorm2d(output_dim)
        elif norm == "in":
            self.norm = nn.InstanceNorm2d(output_dim)
        elif norm == "ln":
            self.norm = LayerNorm(output_dim)
        elif norm == "adain":
            self.norm = AdaptiveInstanceNorm2d(output_dim)
        else:
            self.norm = None
        self.activation = make_activation(activation)
        self.conv = nn.Conv2d(input_dim, output_dim, kernel_size, stride, bias=True)

    @property
    def num_adain_params(self) -> int:
        """Columns of AdaIN parameters this block takes (0 unless its norm is AdaIN)."""
        return self.norm.num_params if isinstance(self.norm, AdaptiveInstanceNorm2d) else 0

    def forward(self, x: torch.Tensor, adain_params: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv(self.pad(x))
        if isinstance(self.norm, AdaptiveInstanceNorm2d):
            if adain_params is None:
                raise ValueError("an AdaIN block needs its AdaIN parameters")
            x = self.norm(x, adain_params)
        elif self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class ResBlock(nn.Module):
    """Two 3x3 :class:`Conv2dBlock` (the second without activation) plus the input."""

    def __init__(
        self, dim: int, norm: str = "in", activation: str = "relu", pad_type: str = "zero"
    ) -> None:
        super().__init__()
        self.model = nn.Sequential(
            Conv2dBlock(dim, dim, 3, 1, 1, norm=norm, activation=activation, pad_type=pad_type),
            Conv2dBlock(dim, dim, 3, 1, 1, norm=norm, activation="none", pad_type=pad_type),
        )

    @property
    def num_adain_params(self) -> int:
        return sum(adain_param_count(block) for block in self.model)

    def forward(self, x: torch.Tensor, adain_params: torch.Tensor | None = None) -> torch.Tensor:
        return x + _run_blocks(self.model, x, adain_params)


class ResBlocks(nn.Module):
    """``num_blocks`` :class:`ResBlock` in sequence."""

    def __init__(
        self,
        num_blocks: int,
        dim: int,
        norm: str = "in",
        activation: str = "relu",
        pad_type: str = "zero",
    ) -> None:
        super().__init__()
        self.model = nn.Sequential(
            *(ResBlock(dim, norm, activation, pad_type) for _ in range(num_blocks))
        )

    @property
    def num_adain_params(self) -> int:
        return sum(adain_param_count(block) for block in self.model)

    def forward(self, x: torch.Tensor, adain_params: torch.Tensor | None = None) -> torch.Tensor:
        return _run_blocks(self.model, x, adain_params)


def adain_param_count(module: nn.Module) -> int:
    """Columns of AdaIN parameters ``module`` takes (its ``num_adain_params``, else 0)."""
    count = getattr(module, "num_adain_params", 0)
    return count if isinstance(count, int) else 0


def _run_blocks(
    blocks: nn.Sequential, x: torch.Tensor, adain_params: torch.Tensor | None
) -> torch.Tensor:
    """Apply ``blocks`` in order, each taking its own columns of ``adain_params`` in turn.

    The columns are consumed in module order, as the reference's ``assign_adain_params``
    hands them out.
    """
    offset = 0
    for block in blocks:
        needed = adain_param_count(block)
        if needed:
            assert adain_params is not None, "AdaIN blocks need AdaIN parameters"
            x = block(x, adain_params[:, offset : offset + needed])
            offset += needed
        else:
            x = block(x)
    return x


class ContentEncoder(nn.Module):
    """7x7 convolution, ``n_downsample`` 4x4 stride-2 convolutions (doubling the channels)
    and ``n_res`` residual blocks; ``output_dim`` channels at 1/2**n_downsample scale."""

    def __init__(
        self,
        n_downsample: int,
        n_res: int,
        input_dim: int,
        dim: int,
        norm: str,
        activ: str,
        pad_type: str,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            Conv2dBlock(input_dim, dim, 7, 1, 3, norm=norm, activation=activ, pad_type=pad_type)
        ]
        for _ in range(n_downsample):
            layers.append(
                Conv2dBlock(dim, 2 * dim, 4, 2, 1, norm=norm, activation=activ, pad_type=pad_type)
            )
            dim *= 2
        layers.append(ResBlocks(n_res, dim, norm=norm, activation=activ, pad_type=pad_type))
        self.model = nn.Sequential(*layers)
        self.output_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Decoder(nn.Module):
    """``n_res`` residual blocks (instance norm for UNIT, AdaIN for MUNIT), ``n_upsample``
    times nearest 2x upsampling and a 5x5 convolution with layer norm (halving the
    channels), then a 7x7 convolution to ``output_dim`` channels and tanh.

    With ``res_norm="adain"``, ``forward(x, adain_params)`` needs the (N,
    ``num_adain_params``) AdaIN parameters (the style MLP's output). With ``global_skip``
    the last convolution has no tanh: its output is the residual that the generator adds to
    an image (:func:`i2i.models.networks.global_skip_output`); the state dict's keys are the
    same either way.
    """

    def __init__(
        self,
        n_upsample: int,
        n_res: int,
        dim: int,
        output_dim: int,
        res_norm: str = "adain",
        activ: str = "relu",
        pad_type: str = "zero",
        global_skip: bool = False,
    ) -> None:
        super().__init__()
        self.global_skip = global_skip
        layers: list[nn.Module] = [ResBlocks(n_res, dim, res_norm, activ, pad_type=pad_type)]
        for _ in range(n_upsample):
            layers += [
                nn.Upsample(scale_factor=2),
                Conv2dBlock(dim, dim // 2, 5, 1, 2, norm="ln", activation=activ, pad_type=pad_type),
            ]
            dim //= 2
        out_activ = "none" if global_skip else "tanh"
        layers.append(
            Conv2dBlock(
                dim, output_dim, 7, 1, 3, norm="none", activation=out_activ, pad_type=pad_type
            )
        )
        self.model = nn.Sequential(*layers)

    def zero_output_layer(self) -> None:
        """Set the last convolution's weight and bias to zero: with ``global_skip`` the
        decoder then returns a zero residual, so its generator starts as the identity."""
        last = self.model[-1]
        assert isinstance(last, Conv2dBlock)
        with torch.no_grad():
            last.conv.weight.zero_()
            assert last.conv.bias is not None
            last.conv.bias.zero_()

    @property
    def num_adain_params(self) -> int:
        """Columns of AdaIN parameters the decoder takes (the reference's
        ``get_num_adain_params``); 0 without AdaIN."""
        return sum(adain_param_count(layer) for layer in self.model)

    def forward(self, x: torch.Tensor, adain_params: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_adain_params and adain_params is None:
            raise ValueError("this decoder has AdaIN layers: pass their parameters")
        return _run_blocks(self.model, x, adain_params)


class LinearBlock(nn.Module):
    """Linear layer (with bias), optional normalisation, optional activation."""

    def __init__(
        self, input_dim: int, output_dim: int, norm: str = "none", activation: str = "relu"
    ) -> None:
        super().__init__()
        check_choice("norm", norm, LINEAR_NORMS)
        self.fc = nn.Linear(input_dim, output_dim, bias=True)
        self.norm: nn.Module | None
        if norm == "bn":
            self.norm = nn.BatchNorm1d(output_dim)
        elif norm == "ln":
            self.norm = LayerNorm(output_dim)
        else:
            self.norm = None
        self.activation = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class MLP(nn.Module):
    """``n_blk`` :class:`LinearBlock`: input -> dim (activation) ... -> output (no
    activation). Accepts (N, input_dim) or anything that flattens to it, e.g. (N, S, 1, 1)."""

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        dim: int,
        n_blk: int,
        norm: str = "none",
        activ: str = "relu",
    ) -> None:
        super().__init__()
        layers = [LinearBlock(input_dim, dim, norm=norm, activation=activ)]
        layers += [LinearBlock(dim, dim, norm=norm, activation=activ) for _ in range(n_blk - 2)]
        layers += [LinearBlock(dim, output_dim, norm="none", activation="none")]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.flatten(1))


class MsImageDis(nn.Module):
    """The references' multi-scale discriminator: ``num_scales`` identical PatchGAN-like
    CNNs, the k-th judging the image average-pooled k times (3x3, stride 2).

    ``forward(x)`` returns one raw score map per scale, finest first. The losses (the
    reference's ``calc_dis_loss``/``calc_gen_loss``) live in ``i2i.training``.
    """

    def __init__(
        self,
        input_dim: int,
        dim: int = 64,
        n_layer: int = 4,
        norm: str = "none",
        activ: str = "lrelu",
        num_scales: int = 3,
        pad_type: str = "reflect",
    ) -> None:
        super().__init__()
        if n_layer < 1 or num_scales < 1:
            raise ValueError(
                f"the discriminator needs n_layer >= 1 and num_scales >= 1, got {n_layer} "
                f"and {num_scales}"
            )
        self.input_dim = input_dim
        self.dim = dim
        self.n_layer = n_layer
        self.norm = norm
        self.activ = activ
        self.num_scales = num_scales
        self.pad_type = pad_type
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.cnns = nn.ModuleList(self._make_net() for _ in range(num_scales))

    def _make_net(self) -> nn.Sequential:
        dim = self.dim
        layers: list[nn.Module] = [
            Conv2dBlock(self.input_dim, dim, 4, 2, 1, "none", self.activ, self.pad_type)
        ]
        for _ in range(self.n_layer - 1):
            layers.append(Conv2dBlock(dim, dim * 2, 4, 2, 1, self.norm, self.activ, self.pad_type))
            dim *= 2
        layers.append(nn.Conv2d(dim, 1, 1, 1, 0))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, model in enumerate(self.cnns):
            outputs.append(model(x))
            if index + 1 < len(self.cnns):
                x = self.downsample(x)
        return outputs


def discriminator_min_size(n_layer: int, num_scales: int) -> int:
    """The smallest image side an :class:`MsImageDis` with reflect padding takes.

    Each scale halves the side (rounding up); each of its ``n_layer`` 4x4 stride-2
    convolutions halves it (rounding down) and reflect-pads its input by one, which needs
    two pixels.
    """
    for side in range(1, 1 << 16):
        s = side
        ok = True
        for scale in range(num_scales):
            if scale:
                s = (s + 1) // 2
            t = s
            for _ in range(n_layer):
                if t < 2:
                    ok = False
                    break
                t //= 2
            if not ok:
                break
        if ok:
            return side
    raise ValueError(f"no image side fits n_layer {n_layer} and num_scales {num_scales}")


def weights_init(init_type: str) -> Callable[[nn.Module], None]:
    """The references' ``weights_init``: for ``module.apply``; re-draws the weight of every
    convolution and linear layer (bias to 0) from torch's global RNG.

    ``gaussian``: N(0, 0.02); ``kaiming``: He normal (fan in); ``xavier`` and
    ``orthogonal``: gain sqrt(2); ``default``: PyTorch's own initialisation is kept.
    """
    check_choice("init", init_type, INIT_TYPES)

    def init_fun(m: nn.Module) -> None:
        # The reference matches class names starting with "Conv" or "Linear" that have a
        # weight: Conv2d, ConvTranspose2d and Linear here (the *Block wrappers have none).
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            return
        if init_type == "gaussian":
            init.normal_(m.weight, 0.0, 0.02)
        elif init_type == "xavier":
            init.xavier_normal_(m.weight, gain=math.sqrt(2))
        elif init_type == "kaiming":
            init.kaiming_normal_(m.weight, a=0, mode="fan_in")
        elif init_type == "orthogonal":
            init.orthogonal_(m.weight, gain=math.sqrt(2))
        if m.bias is not None:
            init.constant_(m.bias, 0.0)

    return init_fun


def initialise(
    generators: list[nn.Module], discriminators: list[nn.Module], init_type: str
) -> None:
    """Initialise as the references' trainers do: ``init_type`` on every network in order
    (generators, then discriminators), then ``gaussian`` again on the discriminators."""
    with torch.no_grad():
        for net in (*generators, *discriminators):
            net.apply(weights_init(init_type))
        for net in discriminators:
            net.apply(weights_init("gaussian"))
