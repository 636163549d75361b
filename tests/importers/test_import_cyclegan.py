"""`i2i import cyclegan`: reference-layout generator files become an i2i checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from i2i.checkpoint import load_checkpoint, load_trained_networks
from i2i.importers import ImportError_, import_cyclegan
from i2i.models import CycleGANOptions, build_generator

TINY = {"ngf": 4, "netG": "resnet_6blocks"}


def _reference_file(path: Path, seed: int, pre_04: bool = False, **arch) -> torch.nn.Module:
    """Save a generator's bare state dict as the reference's save_networks does."""
    torch.manual_seed(seed)
    arch = {"netG": "resnet_6blocks", "ngf": 4, "norm": "instance", "dropout": False, **arch}
    net = build_generator(arch["netG"], 3, 3, arch["ngf"], arch["norm"], arch["dropout"])
    state = net.state_dict()
    if pre_04:  # PyTorch < 0.4 saved InstanceNorm running statistics; the reference strips them
        for name, module in net.named_modules():
            if isinstance(module, torch.nn.InstanceNorm2d):
                state[f"{name}.running_mean"] = torch.zeros(module.num_features)
                state[f"{name}.running_var"] = torch.ones(module.num_features)
    torch.save(state, path)
    return net.eval()


def test_round_trip_gives_the_same_outputs(tmp_path):
    ref_a = _reference_file(tmp_path / "latest_net_G_A.pth", seed=1)
    ref_b = _reference_file(tmp_path / "latest_net_G_B.pth", seed=2, pre_04=True)
    summary = import_cyclegan(
        tmp_path / "model.pt",
        g_a=tmp_path / "latest_net_G_A.pth",
        g_b=tmp_path / "latest_net_G_B.pth",
        options=CycleGANOptions(**TINY),
    )
    assert summary["directions"] == ["A2B", "B2A"]
    assert len(summary["dropped_keys"]["g_ba"]) == 2 * 17  # 17 InstanceNorms in ResNet-6
    ckpt = load_checkpoint(tmp_path / "model.pt")
    assert ckpt["family"] == "cyclegan" and ckpt["config"]["model"]["ngf"] == 4
    assert len(ckpt["imported_from"]["g_ab"]["sha256"]) == 64
    _, nets = load_trained_networks(tmp_path / "model.pt")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(nets["g_ab"](x), ref_a(x))
        assert torch.equal(nets["g_ba"](x), ref_b(x))


def test_single_direction_file(tmp_path):
    _reference_file(
        tmp_path / "latest_net_G.pth", seed=3, netG="unet_128", norm="batch", dropout=True
    )
    opts = CycleGANOptions(netG="unet_128", ngf=4, norm="batch", dropout=True)
    import_cyclegan(tmp_path / "m.pt", g_a=tmp_path / "latest_net_G.pth", options=opts)
    _, nets = load_trained_networks(tmp_path / "m.pt")
    assert set(nets) == {"g_ab"}


@pytest.mark.parametrize(
    ("arch", "flags", "expected_hint"),
    [
        ({"dropout": True}, {}, "--dropout"),
        ({}, {"dropout": True}, "--no-dropout"),
        ({"netG": "resnet_9blocks"}, {}, "--netG resnet_9blocks"),
        ({"ngf": 8}, {}, "--ngf 8"),
        ({"norm": "batch"}, {}, "--norm batch"),
        ({"netG": "unet_128"}, {}, "--netG unet_128"),
    ],
)
def test_mismatch_is_explained(tmp_path, arch, flags, expected_hint):
    _reference_file(tmp_path / "g.pth", seed=0, **arch)
    with pytest.raises(ImportError_, match="does not fit") as info:
        import_cyclegan(
            tmp_path / "m.pt", g_a=tmp_path / "g.pth", options=CycleGANOptions(**{**TINY, **flags})
        )
    assert expected_hint in str(info.value)
    assert not (tmp_path / "m.pt").exists()


def test_foreign_and_missing_files(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ImportError_, match="not a readable"):
        import_cyclegan(tmp_path / "m.pt", g_a=tmp_path / "junk.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ImportError_, match="expected a generator state dict"):
        import_cyclegan(tmp_path / "m.pt", g_a=tmp_path / "list.pth")
    with pytest.raises(ImportError_, match="no such file"):
        import_cyclegan(tmp_path / "m.pt", g_a=tmp_path / "absent.pth")
    with pytest.raises(ImportError_, match="at least one"):
        import_cyclegan(tmp_path / "m.pt")


def test_batch_norm_files_without_num_batches_tracked(tmp_path):
    """PyTorch < 0.4.1 saved BatchNorm without num_batches_tracked: filled with 0, reported."""
    ref = _reference_file(tmp_path / "g.pth", seed=4, norm="batch")
    state = torch.load(tmp_path / "g.pth", weights_only=True)
    removed = sorted(k for k in state if k.endswith(".num_batches_tracked"))
    assert len(removed) == 17  # BatchNorms in ResNet-6
    torch.save({k: v for k, v in state.items() if k not in removed}, tmp_path / "g.pth")
    opts = CycleGANOptions(**TINY, norm="batch")
    summary = import_cyclegan(tmp_path / "m.pt", g_a=tmp_path / "g.pth", options=opts)
    assert sorted(summary["filled_keys"]["g_ab"]) == removed
    assert summary["dropped_keys"]["g_ab"] == []
    _, nets = load_trained_networks(tmp_path / "m.pt")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(nets["g_ab"](x), ref(x))
    # Without the running statistics too, the file is still refused.
    del state[removed[0].replace("num_batches_tracked", "running_var")]
    torch.save({k: v for k, v in state.items() if k not in removed}, tmp_path / "g.pth")
    with pytest.raises(ImportError_, match="missing key"):
        import_cyclegan(tmp_path / "m2.pt", g_a=tmp_path / "g.pth", options=opts)
