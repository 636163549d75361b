"""`i2i import pix2pix`: a reference-layout latest_net_G.pth becomes an i2i checkpoint.

The translation check uses tests/fixtures/pix2pix/, written by the reference's own code
(tests/fixtures/make_pix2pix_fixture.py); the other tests save i2i's generator, which has
the reference's keys, to make files of other architectures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from i2i.checkpoint import load_checkpoint, load_trained_networks
from i2i.importers import ImportError_, import_pix2pix
from i2i.models import Pix2PixOptions, build_generator, get_family, options_from_dict
from tests.test_cli import i2i

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pix2pix"
# The smallest U-Net that still is the reference's unet_128 (fixed 128 px).
TINY = {"ngf": 4, "netG": "unet_128"}


def _reference_file(path: Path, seed: int, **arch) -> torch.nn.Module:
    """Save a generator's bare state dict as the reference's save_networks does.

    i2i's generator has the reference's module structure, so its state dict has the
    reference's keys. Batch-norm statistics are given values a trained network would have,
    so the eval-mode output depends on them.
    """
    torch.manual_seed(seed)
    arch = {"netG": "unet_128", "ngf": 4, "norm": "batch", "dropout": True, **arch}
    net = build_generator(
        arch["netG"],
        3,
        arch.get("output_nc", 3),
        arch["ngf"],
        arch["norm"],
        arch["dropout"],
        init_gain=0.3,  # larger than the usual 0.02, so the tiny net's output is not flat grey
    )
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(100)
    torch.save(net.state_dict(), path)
    return net.eval()


def test_the_reference_networks_file_translates_like_the_reference(tmp_path):
    """tests/fixtures/pix2pix was written by the reference's own code (see
    tests/fixtures/make_pix2pix_fixture.py): its U-Net, its batch-norm statistics after a
    few train-mode passes, and its eval-mode output for a fixed input."""
    out = tmp_path / "x.pt"
    done = i2i(
        "import", "pix2pix", "--g", str(FIXTURE / "latest_net_G.pth"),
        "--netG", "unet_128", "--ngf", "2", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "direction A2B" in done.stdout
    ckpt = load_checkpoint(out)
    assert ckpt["family"] == "pix2pix" and set(ckpt["networks"]) == {"g"}
    assert ckpt["config"]["model"]["dropout"] is True and ckpt["config"]["model"]["norm"] == "batch"
    assert len(ckpt["imported_from"]["g"]["sha256"]) == 64
    image = np.load(FIXTURE / "input.npy")  # uint8 [1, 128, 128, 3]
    want = torch.from_numpy(np.load(FIXTURE / "output.npy"))  # float [1, 3, 128, 128]
    assert want.std() > 0.3  # a real picture, not a flat grey both sides could agree on
    payload, nets = load_trained_networks(out)
    x = torch.from_numpy(image).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        torch.testing.assert_close(nets["g"](x), want, rtol=0, atol=1e-5)
        options = options_from_dict("pix2pix", payload["config"]["model"])
        got = get_family("pix2pix").translators(nets, options)["A2B"](torch.from_numpy(image))
    want_u8 = ((want + 1) * 127.5).round().clamp(0, 255).permute(0, 2, 3, 1)
    assert got.dtype == torch.uint8 and got.shape == (1, 128, 128, 3)
    assert (got.int() - want_u8.int()).abs().max() <= 1


def test_the_reference_file_without_num_batches_tracked_still_translates_alike(tmp_path):
    """The reference's file as PyTorch < 0.4.1 would have saved it."""
    state = torch.load(FIXTURE / "latest_net_G.pth", weights_only=True)
    old = {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}
    assert len(old) < len(state)
    torch.save(old, tmp_path / "old.pth")
    opts = Pix2PixOptions(netG="unet_128", ngf=2)
    summary = import_pix2pix(tmp_path / "m.pt", g=tmp_path / "old.pth", options=opts)
    assert len(summary["filled_keys"]) == len(state) - len(old)
    _, nets = load_trained_networks(tmp_path / "m.pt")
    x = torch.from_numpy(np.load(FIXTURE / "input.npy")).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        torch.testing.assert_close(
            nets["g"](x), torch.from_numpy(np.load(FIXTURE / "output.npy")), rtol=0, atol=1e-5
        )


def test_b_to_a_names_the_direction_b2a(tmp_path):
    _reference_file(tmp_path / "g.pth", seed=2, output_nc=1)
    opts = Pix2PixOptions(**TINY, output_nc=1, direction="BtoA")
    assert (
        import_pix2pix(tmp_path / "m.pt", g=tmp_path / "g.pth", options=opts)["direction"] == "B2A"
    )
    payload, nets = load_trained_networks(tmp_path / "m.pt")
    options = options_from_dict("pix2pix", payload["config"]["model"])
    b2a = get_family("pix2pix").translators(nets, options)["B2A"]
    assert (b2a.in_channels, b2a.out_channels) == (3, 1)


@pytest.mark.parametrize(
    ("arch", "flags", "expected_hint"),
    [
        # A ResNet's dropout shifts the indices of its block's layers, so the file tells.
        ({"netG": "resnet_6blocks", "dropout": False}, {"netG": "resnet_6blocks"}, "--no-dropout"),
        ({"norm": "instance"}, {}, "--norm instance"),
        ({"netG": "unet_256"}, {}, "--netG unet_256"),
        ({"ngf": 8}, {}, "--ngf 8"),
    ],
)
def test_wrong_flags_get_a_plain_words_hint(tmp_path, arch, flags, expected_hint):
    _reference_file(tmp_path / "g.pth", seed=0, **arch)
    with pytest.raises(ImportError_, match="does not fit") as info:
        import_pix2pix(
            tmp_path / "m.pt", g=tmp_path / "g.pth", options=Pix2PixOptions(**{**TINY, **flags})
        )
    assert f"The file fits with: {expected_hint}" in str(info.value)
    assert not (tmp_path / "m.pt").exists()


def test_cli_imports_with_pix2pix_defaults_and_explains_a_mismatch(tmp_path):
    _reference_file(tmp_path / "latest_net_G.pth", seed=3, netG="unet_128")
    args = ["import", "pix2pix", "--g", str(tmp_path / "latest_net_G.pth")]
    done = i2i(*args, "--out", str(tmp_path / "a.pt"))
    assert done.returncode != 0  # the default --netG unet_256 does not fit a unet_128 file
    assert "The file fits with: --netG unet_128 --ngf 4" in done.stderr
    done = i2i(*args, "--netG", "unet_128", "--ngf", "4", "--out", str(tmp_path / "b.pt"))
    assert done.returncode == 0, done.stderr
    assert "direction A2B" in done.stdout
    model = load_checkpoint(tmp_path / "b.pt")["config"]["model"]
    assert (model["norm"], model["dropout"], model["netG"]) == ("batch", True, "unet_128")


def test_unet_dropout_flag_cannot_matter(tmp_path):
    # The U-Net's dropout layers come last in their blocks and hold no weights: files with
    # and without them have the same keys, and eval mode (how i2i runs) skips them anyway.
    ref = _reference_file(tmp_path / "g.pth", seed=4, dropout=False)
    import_pix2pix(tmp_path / "m.pt", g=tmp_path / "g.pth", options=Pix2PixOptions(**TINY))
    _, nets = load_trained_networks(tmp_path / "m.pt")
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        assert torch.equal(nets["g"](x), ref(x))


def _pre_041_file(path: Path, seed: int, **arch) -> tuple[torch.nn.Module, list[str]]:
    """A reference file as PyTorch < 0.4.1 saved it: BatchNorm without num_batches_tracked."""
    ref = _reference_file(path, seed=seed, **arch)
    state = torch.load(path, weights_only=True)
    removed = sorted(k for k in state if k.endswith(".num_batches_tracked"))
    for key in removed:
        del state[key]
    torch.save(state, path)
    return ref, removed


def test_files_without_num_batches_tracked_import_and_say_so(tmp_path):
    ref, removed = _pre_041_file(tmp_path / "old.pth", seed=5)
    assert removed  # the U-Net's BatchNorms
    summary = import_pix2pix(
        tmp_path / "m.pt", g=tmp_path / "old.pth", options=Pix2PixOptions(**TINY)
    )
    assert sorted(summary["filled_keys"]) == removed and summary["dropped_keys"] == []
    state = load_checkpoint(tmp_path / "m.pt")["networks"]["g"]
    for key in removed:
        assert state[key].dtype == torch.int64 and state[key].item() == 0
    _, nets = load_trained_networks(tmp_path / "m.pt")
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        assert torch.equal(nets["g"](x), ref(x))
    # A current file fills nothing.
    _reference_file(tmp_path / "new.pth", seed=5)
    new = import_pix2pix(tmp_path / "n.pt", g=tmp_path / "new.pth", options=Pix2PixOptions(**TINY))
    assert new["filled_keys"] == []


@pytest.mark.parametrize("also", ["running_mean", "weight"])
def test_other_missing_keys_are_still_refused(tmp_path, also):
    """Only a lone missing counter is filled; a BatchNorm without its statistics or weights
    is a different network and stays an error."""
    _, removed = _pre_041_file(tmp_path / "old.pth", seed=6)
    state = torch.load(tmp_path / "old.pth", weights_only=True)
    gone = removed[0].replace("num_batches_tracked", also)
    del state[gone]
    torch.save(state, tmp_path / "old.pth")
    with pytest.raises(ImportError_, match=r"missing key\(s\)") as info:
        import_pix2pix(tmp_path / "m.pt", g=tmp_path / "old.pth", options=Pix2PixOptions(**TINY))
    assert gone in str(info.value)
    assert not (tmp_path / "m.pt").exists()


def test_old_file_with_wrong_flags_still_gets_the_hint(tmp_path):
    _pre_041_file(tmp_path / "old.pth", seed=7, ngf=8)
    with pytest.raises(ImportError_, match="The file fits with: --ngf 8"):
        import_pix2pix(tmp_path / "m.pt", g=tmp_path / "old.pth", options=Pix2PixOptions(**TINY))
