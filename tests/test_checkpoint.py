"""Contract 1: checkpoints are plain data, written atomically, read with weights_only."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from i2i.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    CheckpointManager,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]


def _payload(step: int, size: int = 4) -> dict:
    return make_checkpoint(
        family="cyclegan",
        config={"family": "cyclegan", "model": {"ngf": 4}},
        domains=["A", "B"],
        networks={"g_ab": {"w": torch.full((size,), float(step))}},
        step=step,
    )


def test_round_trip_and_validation(tmp_path):
    path = save_checkpoint(_payload(3), tmp_path / "c.pt")
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and loaded["format_version"] == FORMAT_VERSION
    assert torch.equal(loaded["networks"]["g_ab"]["w"], torch.full((4,), 3.0))
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    full = save_checkpoint(_payload(1, size=10_000), tmp_path / "full.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(full[: len(full) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "truncated.pt")
    torch.save({"g": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an i2i checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    future = _payload(1)
    future["format_version"] = FORMAT_VERSION + 1
    torch.save(future, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version"):
        load_checkpoint(tmp_path / "future.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_objects_are_refused(tmp_path):
    payload = _payload(1)
    payload["extra"] = _Evil()
    with (tmp_path / "evil.pt").open("wb") as f:
        pickle.dump(payload, f)  # an attacker's file, not produced by save_checkpoint
    torch.save({**_payload(1), "extra": _Evil()}, tmp_path / "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(CheckpointError):
            load_checkpoint(tmp_path / name)


def test_manager_keeps_last_k_and_latest(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (10, 20, 30):
        manager.save(_payload(step))
    assert [p.name for p in manager.step_paths()] == ["step_00000020.pt", "step_00000030.pt"]
    assert load_checkpoint(manager.find_latest())["step"] == 30
    manager.latest_path.unlink()
    assert manager.find_latest().name == "step_00000030.pt"


_WRITER = """
import sys, torch
from i2i.checkpoint import make_checkpoint, save_checkpoint
path, = sys.argv[1:]
step = 100
while True:  # keep overwriting with large payloads until killed
    save_checkpoint(make_checkpoint(family="cyclegan", config={}, domains=["A", "B"],
        networks={"g_ab": {"w": torch.full((8_000_000,), float(step))}}, step=step), path)
    step += 1
"""


def test_kill_during_save_leaves_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(_payload(1), path)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], env=env)
    try:
        deadline = time.monotonic() + 60
        # Wait until a temporary file is being written, then kill the writer mid-save.
        while not list(tmp_path.glob(".latest.pt.*.tmp")):
            assert proc.poll() is None and time.monotonic() < deadline, (
                "writer never started saving"
            )
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    loaded = load_checkpoint(path)  # whatever finished last, never a half-written file
    assert loaded["step"] >= 1
    w = loaded["networks"]["g_ab"]["w"]
    assert torch.all(w == float(loaded["step"]))
