"""`i2i translate` through a real gRPC server on 127.0.0.1: inputs, outputs, errors, exit codes."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from i2i.cli import main
from tests.client.conftest import MODEL, FakeServer, decode, encode, random_image


def write(path: Path, seed: int, fmt: str = "PNG") -> np.ndarray:
    """Write a small image and return its pixels as the file holds them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(random_image(seed=seed), fmt))
    return decode(path.read_bytes())


def translate(server: FakeServer, *args: str) -> int:
    """Run the command in this process; `args` come last, so they can replace --model."""
    return main(["translate", "--server", server.target, "--model", MODEL, "--no-progress", *args])


def inverted(pixels: np.ndarray, k: int = 0) -> np.ndarray:
    return (255 - pixels.astype(np.int16) + k).clip(0, 255).astype(np.uint8)


def test_files_folders_and_globs(fake_server: FakeServer, tmp_path: Path, capsys) -> None:
    a = write(tmp_path / "in" / "a.png", 1)
    write(tmp_path / "folder" / "c.png", 2)
    write(tmp_path / "folder" / "d.JPG", 3, "JPEG")
    write(tmp_path / "folder" / "sub" / "deep.png", 4)  # not without --recursive
    (tmp_path / "folder" / "notes.txt").write_text("not an image")
    e = write(tmp_path / "globbed" / "e.png", 5)
    write(tmp_path / "globbed" / "f.webp", 6, "WEBP")
    out = tmp_path / "out"
    rc = translate(
        fake_server,
        str(tmp_path / "in" / "a.png"),
        str(tmp_path / "folder"),
        str(tmp_path / "globbed" / "*.png"),
        "--out",
        str(out),
        "--direction",
        "A2B",
        "--concurrency",
        "3",
    )
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png", "d.png", "e.png"]
    np.testing.assert_array_equal(decode((out / "a.png").read_bytes()), inverted(a))
    np.testing.assert_array_equal(decode((out / "e.png").read_bytes()), inverted(e))
    stdout = capsys.readouterr().out
    assert "translated 4 of 4 images" in stdout and str(out) in stdout and "latency" in stdout

    # --recursive takes subfolders; JPEG output is written as .jpg.
    rc = translate(
        fake_server,
        str(tmp_path / "folder"),
        "--recursive",
        "--out",
        str(tmp_path / "out2"),
        "--direction",
        "B2A",
        "--format",
        "jpeg",
    )
    assert rc == 0
    written = sorted(
        p.relative_to(tmp_path / "out2").as_posix() for p in (tmp_path / "out2").rglob("*.*")
    )
    assert written == ["c.jpg", "d.jpg", "deep.jpg"]
    assert (tmp_path / "out2" / "c.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_same_stems_keep_their_folders_and_samples_are_numbered(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    x = write(tmp_path / "x" / "img.png", 1)
    write(tmp_path / "y" / "img.png", 2)
    out = tmp_path / "out"
    rc = translate(
        fake_server,
        str(tmp_path / "x"),
        str(tmp_path / "y" / "img.png"),
        "--out",
        str(out),
        "--direction",
        "A2B",
        "--num-samples",
        "2",
    )
    assert rc == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["x/img_0.png", "x/img_1.png", "y/img_0.png", "y/img_1.png"]
    np.testing.assert_array_equal(decode((out / "x" / "img_1.png").read_bytes()), inverted(x, 1))


def test_existing_outputs_are_not_overwritten(
    fake_server: FakeServer, tmp_path: Path, capsys
) -> None:
    write(tmp_path / "in" / "a.png", 1)
    b = write(tmp_path / "in" / "b.png", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.png").write_bytes(b"old")
    args = [str(tmp_path / "in"), "--out", str(out), "--direction", "A2B"]
    assert translate(fake_server, *args) == 2
    stderr = capsys.readouterr().err
    assert str(out / "b.png") in stderr and "--overwrite" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["b.png"]  # nothing written
    assert fake_server.servicer.attempts == 0  # nothing sent either

    assert translate(fake_server, *args, "--overwrite") == 0
    np.testing.assert_array_equal(decode((out / "b.png").read_bytes()), inverted(b))
    assert (out / "a.png").is_file()


def test_a_corrupt_file_is_reported_while_the_others_succeed(
    fake_server: FakeServer, tmp_path: Path, capsys
) -> None:
    write(tmp_path / "in" / "good1.png", 1)
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG but not really")
    write(tmp_path / "in" / "good2.png", 2)
    out = tmp_path / "out"
    rc = translate(fake_server, str(tmp_path / "in"), "--out", str(out), "--direction", "A2B")
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == ["good1.png", "good2.png"]
    captured = capsys.readouterr()
    assert "translated 2 of 3 images" in captured.out and "1 failed" in captured.out
    failures = [line for line in captured.err.splitlines() if line.startswith("failed:")]
    assert len(failures) == 1
    assert "bad.png" in failures[0] and "INVALID_ARGUMENT" in failures[0]


def test_retried_errors_do_not_fail_files(fake_server: FakeServer, tmp_path: Path) -> None:
    write(tmp_path / "in" / "a.png", 1)
    fake_server.servicer.fail(grpc.StatusCode.UNAVAILABLE, times=2)
    rc = translate(
        fake_server, str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--direction", "A2B"
    )
    assert rc == 0 and (tmp_path / "out" / "a.png").is_file()
    assert fake_server.servicer.attempts == 3


def test_token_file(fake_server: FakeServer, tmp_path: Path, capsys) -> None:
    fake_server.servicer.token = "s3cret"
    write(tmp_path / "in" / "a.png", 1)
    (tmp_path / "token").write_text("s3cret\n")
    args = [str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--direction", "A2B"]
    assert translate(fake_server, *args) == 2
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert translate(fake_server, *args, "--token-file", str(tmp_path / "token")) == 0
    assert (tmp_path / "out" / "a.png").is_file()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--direction", "C2D"], "has no direction 'C2D'; it has A2B, B2A"),
        (["--direction", "A2B", "--model", "nope"], "NOT_FOUND"),
        (["--direction", "A2B", "--num-samples", "0"], "--num-samples"),
        (["--direction", "A2B", "--tls-cert", "c.pem"], "--tls-key"),
        (["--direction", "A2B", "--backend", "pytorch"], "--backend"),
    ],
)
def test_usage_errors(fake_server: FakeServer, tmp_path: Path, capsys, args, words) -> None:
    write(tmp_path / "in" / "a.png", 1)
    assert translate(fake_server, str(tmp_path / "in"), "--out", str(tmp_path / "o"), *args) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_input_and_mode_errors(tmp_path: Path, capsys) -> None:
    out = ["--out", str(tmp_path / "o"), "--direction", "A2B"]
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "missing.png"), "--server", "127.0.0.1:1", "--model", "m"], "no such"),
        ([str(tmp_path / "empty"), "--server", "127.0.0.1:1", "--model", "m"], "no png"),
        ([str(tmp_path / "*.png"), "--server", "127.0.0.1:1", "--model", "m"], "matches no"),
        ([str(tmp_path), "--server", "127.0.0.1:1"], "--model NAME is required"),
        ([str(tmp_path), "--repository", str(tmp_path), "--model", "m", "--token", "t"], "--token"),
    ]
    for args, words in cases:
        assert main(["translate", *args, *out]) == 2
        assert words in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:  # argparse: exactly one of the modes
        main(["translate", str(tmp_path), *out, "--model", "m"])
    assert caught.value.code == 2
    assert "--server" in capsys.readouterr().err


def test_help_lists_the_modes(capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["translate", "--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--server", "--repository", "--checkpoint", "--overwrite", "--concurrency"):
        assert flag in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "translate" in capsys.readouterr().out
