"""`i2i translate` end to end: through the real server, and locally from a repository or a
checkpoint, all three giving the same pixels as ONNX Runtime / PyTorch."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from i2i.cli import main
from tests.serving.conftest import MODEL, png_bytes, sample_image
from tests.serving.test_server import ort_translate


def write_inputs(folder: Path) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    images = {f"img{i}": sample_image(32, 36, seed=40 + i) for i in range(3)}
    for stem, pixels in images.items():
        (folder / f"{stem}.png").write_bytes(png_bytes(pixels))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return images


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())))


def test_server_and_local_modes_agree(shared_server, tiny_repository, tmp_path, capsys):
    images = write_inputs(tmp_path / "in")
    common = [str(tmp_path / "in"), "--direction", "A2B", "--no-progress"]
    modes = {
        "server": ["--server", shared_server.target, "--model", MODEL],
        "repository": ["--repository", str(tiny_repository), "--model", MODEL],
        "checkpoint": ["--checkpoint", str(tiny_repository.parent / "checkpoints" / "tiny.pt")],
    }
    for mode, flags in modes.items():
        out = tmp_path / mode
        rc = main(["translate", *common, *flags, "--out", str(out)])
        captured = capsys.readouterr()
        assert rc == 1, captured.err  # the broken file fails; the others are written
        assert "broken.png" in captured.err and "INVALID_ARGUMENT" in captured.err
        assert "translated 3 of 4" in captured.out
        assert sorted(p.name for p in out.iterdir()) == [f"{stem}.png" for stem in images]
        for stem, pixels in images.items():
            expected = ort_translate(tiny_repository, "A2B", pixels)
            got = read(out / f"{stem}.png")
            if mode == "checkpoint":  # PyTorch: within one level of ONNX Runtime
                assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
            else:
                np.testing.assert_array_equal(got, expected)


def test_local_mode_errors_exit_2(tiny_repository, tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(png_bytes(sample_image()))
    rc = main(
        [
            "translate",
            str(tmp_path / "a.png"),
            "--out",
            str(tmp_path / "out"),
            "--direction",
            "X2Y",
            "--repository",
            str(tiny_repository),
            "--model",
            MODEL,
            "--no-progress",
        ]
    )
    assert rc == 2
    assert "A2B, B2A" in capsys.readouterr().err
    assert not (tmp_path / "out" / "a.png").exists()
