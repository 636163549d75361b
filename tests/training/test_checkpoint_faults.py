"""Faults in a run folder's checkpoints, met as a user meets them: real `i2i-train` runs.

A save killed with SIGKILL leaves its temporary file (removed when the run resumes); a
damaged `latest.pt` falls back to the newest intact step file, with a warning; a checkpoint
copied in from another run is refused before anything in the folder changes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from i2i.checkpoint import load_checkpoint
from i2i.training import train
from i2i.training.monitor import read_loss_log
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _train_cmd() -> list[str]:
    """The `i2i-train` console script of this environment (or the module if not installed)."""
    exe = shutil.which("i2i-train", path=str(Path(sys.executable).parent))
    if exe:
        return [exe]
    return [
        sys.executable,
        "-c",
        "import sys; from i2i.cli import train_main; sys.exit(train_main())",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def i2i_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_train_cmd(), *args, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
    )


def _temporary_files(run: Path) -> dict[Path, int]:
    return {p: p.stat().st_size for p in run.glob(".*.tmp")}


def test_resume_removes_the_temporary_files_of_saves_killed_midway(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    # The tiny preset's networks (ngf 16, ~12 MB checkpoints) saved after every step: a
    # save is in progress most of the time.
    start = [
        *("--config", "cyclegan-tiny", "--data", str(tiny_dataset), "--out", str(run)),
        *("--set", "data.load_size=32", "--set", "data.crop_size=32"),
        *("--set", "data.num_workers=0", "--set", "tensorboard=false"),
        *("--set", "save_every=1", "--max-steps", "100000"),
    ]
    checkpoint_temps = (".latest.pt.*.tmp", ".step_*.pt.*.tmp")

    def saving() -> set[Path]:
        return {p for pattern in checkpoint_temps for p in run.glob(pattern)}

    # Each start removes what earlier kills left, and a kill just after a rename leaves
    # nothing: kill until a checkpoint's temporary file is left.
    for _ in range(5):
        before = saving()
        resumable = list(run.glob("*.pt")) if run.exists() else []
        args = ["--resume", str(run), "--max-steps", "100000"] if resumable else start
        proc = subprocess.Popen(
            [*_train_cmd(), *args, "--no-progress"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        try:
            deadline = time.monotonic() + 120
            # Kill a save after the first: the run then has a checkpoint to resume from.
            while not ((run / "latest.pt").exists() and saving() - before):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "i2i-train never started a save"
                time.sleep(0.002)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
            if proc.stderr:
                proc.stderr.close()
        if saving():
            break
    assert saving(), "every kill came just after a save finished"
    leftovers = _temporary_files(run)  # maybe also config.json's, if killed while writing it
    others = ["notes.tmp", ".latest.pt.tmp", ".model.onnx.abcd1234.tmp", "samples/x.tmp"]
    for name in others:
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).write_text("not i2i's leftover")

    result = i2i_train("--resume", str(run), "--max-steps", "1")  # resumes, trains nothing
    assert result.returncode == 0, result.stderr
    total = sum(leftovers.values())
    assert f"removed {len(leftovers)} temporary file(s) of interrupted saves ({total:,} bytes)" in (
        result.stderr
    )
    assert not any(p.exists() for p in leftovers)
    assert all((run / name).read_text() == "not i2i's leftover" for name in others)


def _run_with_step_files(data: Path, run: Path, steps: int) -> None:
    train(tiny_config(data, max_steps=steps, save_every=1, keep_last=3), run)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_resume_falls_back_past_a_damaged_latest_checkpoint(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    _run_with_step_files(tiny_dataset, run, steps=3)
    _truncate(run / "latest.pt")
    _truncate(run / "step_00000003.pt")

    result = i2i_train("--resume", str(run), "--max-steps", "4")
    assert result.returncode == 0, result.stderr
    [warning] = [ln for ln in result.stderr.splitlines() if "newest intact" in ln]  # once
    assert f"{run}: using step_00000002.pt (step 2), the newest intact checkpoint" in warning
    assert "latest.pt: not a readable checkpoint" in warning
    assert "step_00000003.pt: not a readable checkpoint" in warning
    assert f"resuming {run} at step 2" in result.stderr
    assert [r["step"] for r in read_loss_log(run / "losses.jsonl")] == [1, 2, 3, 4]
    assert load_checkpoint(run / "latest.pt")["step"] == 4

    # An empty latest.pt (torch would talk about _use_new_zipfile_serialization)
    (run / "latest.pt").write_bytes(b"")
    result = i2i_train("--resume", str(run), "--max-steps", "5")
    assert result.returncode == 0, result.stderr
    assert "rejected latest.pt: the file is empty (0 bytes)" in result.stderr
    assert "using step_00000004.pt (step 4)" in result.stderr
    assert load_checkpoint(run / "latest.pt")["step"] == 5

    for path in [run / "latest.pt", *run.glob("step_*.pt")]:
        _truncate(path)
    result = i2i_train("--resume", str(run), "--max-steps", "6")
    assert result.returncode == 2
    assert f"error: {run}: no intact checkpoint; tried latest.pt: not a readable" in result.stderr
    for step in (5, 4, 3):
        assert f"step_0000000{step}.pt: not a readable checkpoint" in result.stderr


def test_resume_refuses_a_checkpoint_copied_from_another_run(tiny_dataset, tmp_path):
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    train(tiny_config(tiny_dataset, max_steps=2), run_a)
    config_b = tiny_config(tiny_dataset, max_steps=2, lr=1e-3)
    config_b.model["ngf"] = 8
    train(config_b, run_b)
    shutil.copyfile(run_a / "latest.pt", run_b / "latest.pt")
    config_json = (run_b / "config.json").read_bytes()

    result = i2i_train("--resume", str(run_b), "--max-steps", "4")
    assert result.returncode == 2
    assert (
        f"error: {run_b / 'latest.pt'} does not belong to the run in {run_b}: its config differs "
        f"from {run_b / 'config.json'} (lr: config.json 0.001, checkpoint 0.0002; model.ngf: "
        "config.json 8, checkpoint 4)"
    ) in result.stderr
    assert (run_b / "config.json").read_bytes() == config_json
    assert load_checkpoint(run_b / "latest.pt")["step"] == 2

    # With the run's own config given explicitly, the same refusal (not a config mismatch).
    (tmp_path / "b.json").write_text(config_json.decode())
    result = i2i_train("--resume", str(run_b), "--config", str(tmp_path / "b.json"))
    assert result.returncode == 2 and "does not belong to the run" in result.stderr
    assert json.loads((run_b / "config.json").read_text())["lr"] == 1e-3
