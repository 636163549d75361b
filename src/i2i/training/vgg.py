"""The domain-invariant perceptual loss of UNIT/MUNIT, on local VGG16 weights only.

As the references' ``compute_vgg_loss``: both images go through VGG16 up to relu5_3 (with
the references' network, which has no max-pool between conv4_3 and conv5_1, so the
features are at 1/8 of the image size), each feature map is instance-normalised (no
affine), and the loss is the mean squared difference.

Nothing is downloaded: ``loss.vgg_weights`` must name a local file holding a VGG16 state
dict in one of these key layouts (tensors only; it is read with ``weights_only=True``):

- torchvision's ``vgg16`` (``features.0.weight`` ... ``features.28.bias``; ``classifier.*``
  keys are ignored), for example the file torchvision caches as
  ``~/.cache/torch/hub/checkpoints/vgg16-397923af.pth``. Its inputs are prepared as
  torchvision's: RGB in [0, 1], normalised with the ImageNet mean and std.
- the state dict of torchvision's ``vgg16().features`` alone (``0.weight`` ... ``28.bias``),
  prepared the same way.
- the references' own ``vgg16.weight`` (``conv1_1.weight`` ... ``conv5_3.bias``, converted
  from the Caffe/Torch7 VGG16), prepared as the references' ``vgg_preprocess``: BGR in
  [0, 255] minus the Caffe mean (103.939, 116.779, 123.680).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError

# VGG16's convolution channels; "M" is a 2x2 max-pool. Layer indices follow torchvision's
# `features` (each conv is followed by a ReLU), so its state dict keys load as they are.
_CFG: list[int | str] = [
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
]  # fmt: skip
# conv name (the references' Vgg16) -> index in torchvision's features.
REFERENCE_NAMES = {
    "conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12,
    "conv3_3": 14, "conv4_1": 17, "conv4_2": 19, "conv4_3": 21, "conv5_1": 24, "conv5_2": 26,
    "conv5_3": 28,
}  # fmt: skip
FOURTH_POOL = 23  # torchvision's pool after conv4_3; the references' Vgg16 has none
CAFFE_MEAN_BGR = (103.939, 116.779, 123.680)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG16Features(nn.Module):
    """VGG16 up to relu5_3 as the references use it, frozen, in eval mode.

    ``features`` has torchvision's layer indices (the fourth pool, index 23, is an
    identity, as in the references' network). ``caffe`` selects the input preparation:
    True for the references' Caffe weights, False for torchvision's.
    """

    def __init__(self, caffe: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                assert isinstance(item, int)
                layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU()]
                channels = item
        layers[FOURTH_POOL] = nn.Identity()
        self.features = nn.Sequential(*layers)
        self.caffe = caffe
        self.mean: torch.Tensor
        self.std: torch.Tensor
        if caffe:
            mean = torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
            std = torch.ones(1, 3, 1, 1)
        else:
            mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.requires_grad_(False)
        self.eval()

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (RGB) -> the input the weights were trained on."""
        # Caffe: RGB -> BGR and [-1, 1] -> [0, 255]; torchvision: [-1, 1] -> [0, 1].
        x = x.flip(1) * 127.5 + 127.5 if self.caffe else x * 0.5 + 0.5
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu5_3 features of images in [-1, 1]."""
        return self.features(self.preprocess(x))


def perceptual_loss(vgg: nn.Module, img: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The references' ``compute_vgg_loss``: MSE of instance-normalised VGG features."""
    a, b = F.instance_norm(vgg(img).float()), F.instance_norm(vgg(target).float())
    return torch.mean((a - b) ** 2)


def load_perceptual_network(path: str | os.PathLike[str]) -> VGG16Features:
    """A frozen :class:`VGG16Features` with the weights in the local file ``path``.

    Raises:
        ConfigError: no path, no such file, not a state dict, or not VGG16's layers.
    """
    if not str(path):
        raise ConfigError(
            "loss.vgg_w > 0 needs loss.vgg_weights: the path of a local VGG16 state dict "
            "(torchvision's vgg16 file, or the reference's vgg16.weight); i2i never "
            "downloads weights. Set loss.vgg_w=0 to train without the perceptual term."
        )
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"loss.vgg_weights: {file} is not a file")
    try:
        raw = torch.load(file, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        raise ConfigError(
            f"loss.vgg_weights: cannot read {file} as a PyTorch state dict ({exc})"
        ) from exc
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ConfigError(f"loss.vgg_weights: {file} does not hold a state dict of tensors")
    state, caffe = _features_state(raw, file)
    with torch.random.fork_rng(devices=[]):  # the initial weights are replaced: leave the
        net = VGG16Features(caffe=caffe)  # training's random stream as it was
    expected = net.features.state_dict()
    missing = sorted(set(expected) - set(state), key=lambda k: (_index(k), k))
    if missing:
        raise ConfigError(
            f"loss.vgg_weights: {file} lacks VGG16 layers ({', '.join(missing[:4])}"
            f"{' ...' if len(missing) > 4 else ''}); expected torchvision's vgg16 keys "
            "(features.0.weight ... features.28.bias) or the reference's "
            "(conv1_1.weight ... conv5_3.bias)"
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise ConfigError(
                f"loss.vgg_weights: {file}: {key} has shape {tuple(state[key].shape)}, "
                f"VGG16 has {tuple(tensor.shape)}"
            )
    net.features.load_state_dict({k: state[k] for k in expected})
    return net


def _features_state(
    raw: dict[str, torch.Tensor], file: Path
) -> tuple[dict[str, torch.Tensor], bool]:
    """(state dict keyed like ``features``, whether the weights are the references' Caffe)."""
    if any(k.split(".")[0] in REFERENCE_NAMES for k in raw):
        state = {}
        for key, tensor in raw.items():
            name, _, kind = key.partition(".")
            if name in REFERENCE_NAMES:
                state[f"{REFERENCE_NAMES[name]}.{kind}"] = tensor
        return state, True
    if any(k.startswith("features.") for k in raw):
        return {
            k.removeprefix("features."): v for k, v in raw.items() if k.startswith("features.")
        }, False
    if any(re.fullmatch(r"\d+\.(weight|bias)", k) for k in raw):
        return dict(raw), False
    raise ConfigError(
        f"loss.vgg_weights: {file} is not a VGG16 state dict (keys such as "
        f"{', '.join(sorted(raw)[:3]) or 'none'}); expected torchvision's vgg16 keys "
        "(features.0.weight ...) or the reference's (conv1_1.weight ...)"
    )


def _index(key: str) -> int:
    return int(key.split(".")[0])
