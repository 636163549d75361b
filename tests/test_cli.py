"""The command line, run as a user runs it: real processes, real files, exit codes, messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from i2i.checkpoint import load_checkpoint
from i2i.models import build_generator

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--config", "cyclegan-tiny", "--set", "model.ngf=4", "--set", "model.ndf=4",
    "--set", "data.num_workers=0", "--set", "tensorboard=false", "--no-progress",
    "--set", "data.load_size=32", "--set", "data.crop_size=32",
]  # fmt: skip


def i2i(*args: str, script: str = "i2i", cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a console script (from the venv when installed, else through the module)."""
    exe = shutil.which(script, path=str(Path(sys.executable).parent))
    entry = {
        "i2i": "main",
        "i2i-train": "train_main",
        "i2i-export": "export_main",
        "i2i-serve": "serve_main",
    }
    cmd = (
        [exe]
        if exe
        else [
            sys.executable,
            "-c",
            f"import sys; from i2i.cli import {entry[script]} as m; sys.exit(m())",
        ]
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env
    )


def _small_sample(data: Path) -> None:
    """A 32 px day2dusk sample dataset with 4 training images per domain."""
    result = i2i(
        "data",
        "sample",
        "--task",
        "day2dusk",
        "--out",
        str(data),
        "--size",
        "32",
        "--train",
        "4",
        "--test",
        "1",
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["data", "sample", "--help"],
        ["eval", "--help"],
        ["import", "cyclegan", "--help"],
        ["import", "pix2pix", "--help"],
        ["import", "unit", "--help"],
        ["import", "munit", "--help"],
        ["demo", "--help"],
        ["train", "--help"],
        ["export", "--help"],
        ["models", "list", "--help"],
        ["models", "show", "--help"],
    ],
)
def test_help_documents_every_command(args):
    result = i2i(*args)
    assert result.returncode == 0 and "usage:" in result.stdout


def test_models_families_lists_every_family_with_its_presets():
    from i2i.models import get_family, list_families
    from i2i.training.config import list_presets

    result = i2i("models", "families")
    assert result.returncode == 0, result.stderr
    blocks = {b.split(":")[0]: b for b in result.stdout.strip().split("\n\n")}
    assert sorted(blocks) == list_families()
    for name, block in blocks.items():
        assert f"{name}-tiny" in block and name in list_presets()
        assert ("style code of" in block) == (get_family(name).style_dim > 0)


def test_stage_helps():
    result = i2i("--help", script="i2i-train")
    assert result.returncode == 0 and "--resume" in result.stdout and "torchrun" in result.stdout
    result = i2i("--help", script="i2i-export")
    assert result.returncode == 0 and "--formats" in result.stdout and "--shapes" in result.stdout
    result = i2i("--help", script="i2i-serve")
    assert (
        result.returncode == 0 and "--max-delay-ms" in result.stdout and "SIGTERM" in result.stdout
    )
    result = i2i("serve", "--help")
    assert result.returncode == 0 and "--repository" in result.stdout
    result = i2i("--repository", ".", "--max-batch", "0", script="i2i-serve")
    assert result.returncode == 2 and "--max-batch must be at least 1" in result.stderr


def test_sample_train_resume_eval(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    result = i2i(
        "data",
        "sample",
        "--task",
        "gray2color",
        "--out",
        str(data),
        "--size",
        "32",
        "--train",
        "6",
        "--test",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((data / "dataset.json").read_text())["task"] == "gray2color"

    result = i2i(
        *TINY, "--data", str(data), "--out", str(run), "--max-steps", "2", script="i2i-train"
    )
    assert result.returncode == 0, result.stderr
    assert "trained 2 steps" in result.stdout and (run / "latest.pt").is_file()
    assert list((run / "samples").glob("*.png"))

    # Resume without --config: the run's own config is used; more steps continue it.
    result = i2i("--resume", str(run), "--max-steps", "3", "--no-progress", script="i2i-train")
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(run / "latest.pt")["step"] == 3
    # Changing what is computed on resume is refused, with the differing key named.
    result = i2i("--resume", str(run), "--set", "lr=0.1", "--no-progress", script="i2i-train")
    assert result.returncode == 2 and "lr: checkpoint 0.0002, now 0.1" in result.stderr

    result = i2i("eval", str(run), "--data", str(data))
    assert result.returncode == 0, result.stderr
    report = json.loads((run / "eval.json").read_text())
    assert set(report["directions"]) == {"A2B", "B2A"} and report["step"] == 3
    assert (run / "eval_grid.png").is_file()


def test_training_data_errors_come_before_training(tmp_path):
    (tmp_path / "data" / "trainA").mkdir(parents=True)
    result = i2i(
        *TINY, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), script="i2i-train"
    )
    assert result.returncode == 2
    assert (
        "trainA" in result.stderr
        and "no images" in result.stderr
        and "Traceback" not in result.stderr
    )
    result = i2i(*TINY, "--out", str(tmp_path / "run2"), script="i2i-train")
    assert result.returncode == 2 and "--data" in result.stderr
    result = i2i("--config", "nope", "--data", "x", "--out", "y", script="i2i-train")
    assert result.returncode == 2 and "presets: cogan, cogan-tiny, cyclegan," in result.stderr


def test_corrupt_image_is_named_or_skipped(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    _small_sample(data)
    bad = data / "trainB" / "zz_bad.png"
    bad.write_bytes(
        (data / "trainB").joinpath(sorted(os.listdir(data / "trainB"))[0]).read_bytes()[:50]
    )
    result = i2i(
        *TINY,
        "--data",
        str(data),
        "--out",
        str(run),
        "--max-steps",
        "8",
        "--set",
        "batch_size=1",
        script="i2i-train",
    )
    assert result.returncode == 2 and "zz_bad.png" in result.stderr
    result = i2i(
        *TINY,
        "--data",
        str(data),
        "--out",
        str(tmp_path / "run2"),
        "--max-steps",
        "1",
        "--set",
        "data.skip_bad_images=true",
        script="i2i-train",
    )
    assert result.returncode == 0, result.stderr
    assert "zz_bad.png" in result.stderr  # logged as skipped


def test_import_cyclegan_cli(tmp_path):
    torch.manual_seed(0)
    net = build_generator("resnet_6blocks", 3, 3, ngf=4, dropout=True)
    torch.save(net.state_dict(), tmp_path / "latest_net_G_A.pth")
    out = tmp_path / "m.pt"
    result = i2i(
        "import",
        "cyclegan",
        "--g-a",
        str(tmp_path / "latest_net_G_A.pth"),
        "--out",
        str(out),
        "--netG",
        "resnet_6blocks",
        "--ngf",
        "4",
    )
    assert result.returncode == 2 and "--dropout" in result.stderr and not out.exists()
    result = i2i(
        "import",
        "cyclegan",
        "--g-a",
        str(tmp_path / "latest_net_G_A.pth"),
        "--out",
        str(out),
        "--netG",
        "resnet_6blocks",
        "--ngf",
        "4",
        "--dropout",
    )
    assert result.returncode == 0, result.stderr
    assert "A2B" in result.stdout and load_checkpoint(out)["config"]["model"]["dropout"] is True


def test_sigint_stops_after_a_step_and_saves(tmp_path):
    import signal
    import time

    data, run = tmp_path / "data", tmp_path / "run"
    _small_sample(data)
    cmd = [
        sys.executable,
        "-m",
        "i2i.cli",
        "train",
        *TINY,
        "--data",
        str(data),
        "--out",
        str(run),
        "--set",
        "log_every=1",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    deadline = time.monotonic() + 120
    while not ((run / "losses.jsonl").is_file() and (run / "losses.jsonl").read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, (
            proc.stderr.read() if proc.stderr else ""
        )
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    step = load_checkpoint(run / "latest.pt")["step"]
    assert f"stopped at step {step}" in out and "--resume" in out
    logged = [json.loads(line)["step"] for line in (run / "losses.jsonl").read_text().splitlines()]
    assert logged[-1] == step  # the checkpoint holds exactly the last completed step
    result = i2i(
        "--resume", str(run), "--max-steps", str(step + 1), "--no-progress", script="i2i-train"
    )
    assert result.returncode == 0 and load_checkpoint(run / "latest.pt")["step"] == step + 1
