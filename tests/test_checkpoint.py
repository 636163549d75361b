"""Contract 1: checkpoints are plain data, written atomically, read with weights_only."""

from __future__ import annotations

import logging
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
    full = save_checkpoint(_payload(1, size=10_000), tmp_path / "full.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(full[: len(full) // 2])
    for mmap in (False, True):
        with pytest.raises(CheckpointError, match="not a readable checkpoint") as caught:
            load_checkpoint(tmp_path / "text.pt", mmap=mmap)
        assert "_use_new_zipfile_serialization" not in str(caught.value)  # mmap's complaint
        with pytest.raises(
            CheckpointError,
            match=rf"not a readable checkpoint, truncated or damaged \({len(full) // 2:,} bytes",
        ):
            load_checkpoint(tmp_path / "truncated.pt", mmap=mmap)
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
        with pytest.raises(CheckpointError, match="UnpicklingError") as caught:
            load_checkpoint(tmp_path / name)
        assert "truncated" not in str(caught.value)  # refused, not mistaken for a damaged file


def test_an_empty_file_is_called_empty(tmp_path):
    # torch says EOFError('') or, with mmap, something about _use_new_zipfile_serialization
    (tmp_path / "latest.pt").write_bytes(b"")
    for mmap in (False, True):
        with pytest.raises(CheckpointError, match=r"latest.pt: the file is empty \(0 bytes\)"):
            load_checkpoint(tmp_path / "latest.pt", mmap=mmap)


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


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_manager_falls_back_to_the_newest_intact_step_file(tmp_path, caplog):
    manager = CheckpointManager(tmp_path, keep_last=3)
    for step in (10, 20, 30):
        manager.save(_payload(step, size=10_000))
    _truncate(manager.latest_path)
    _truncate(tmp_path / "step_00000030.pt")
    with caplog.at_level(logging.WARNING, logger="i2i.checkpoint"):
        assert manager.load_latest(mmap=True, warn=False)[0].name == "step_00000020.pt"
        assert not caplog.records  # a peek (the CLI's, before train) says nothing
        path, payload = manager.load_latest()
    assert path == tmp_path / "step_00000020.pt" and payload["step"] == 20
    assert manager.find_latest() == path
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # load_latest, then find_latest (each a real use)
    assert "using step_00000020.pt (step 20)" in warnings[0]
    assert "latest.pt: not a readable checkpoint" in warnings[0]
    assert "step_00000030.pt: not a readable checkpoint" in warnings[0]

    manager.latest_path.write_bytes(b"")
    assert manager.load_latest()[0] == path
    assert "latest.pt: the file is empty (0 bytes)" in caplog.records[-1].getMessage()


def test_manager_lists_what_it_tried_when_nothing_is_intact(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    assert manager.load_latest() is None and manager.find_latest() is None
    for step in (1, 2):
        manager.save(_payload(step))
    manager.latest_path.write_bytes(b"")
    torch.save({"g": torch.zeros(1)}, tmp_path / "step_00000002.pt")
    _truncate(tmp_path / "step_00000001.pt")
    with pytest.raises(CheckpointError) as caught:
        manager.find_latest()
    message = str(caught.value)
    assert message.startswith(
        f"{tmp_path}: no intact checkpoint; tried latest.pt: the file is empty"
    )
    assert "step_00000002.pt: not an i2i checkpoint" in message
    assert "step_00000001.pt: not a readable checkpoint" in message
    assert manager.has_checkpoints()


def _kill_writer_mid_save(path: Path) -> None:
    """Run a process that keeps saving `path` and SIGKILL it while it writes a temporary file."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    pattern = f".{path.name}.*.tmp"
    before = set(path.parent.glob(pattern))
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], env=env)
    try:
        deadline = time.monotonic() + 60
        # Wait until a temporary file is being written, then kill the writer mid-save.
        while not set(path.parent.glob(pattern)) - before:
            assert proc.poll() is None and time.monotonic() < deadline, (
                "writer never started saving"
            )
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


def test_leftovers_of_killed_saves_are_removed_and_nothing_else(tmp_path, caplog):
    manager = CheckpointManager(tmp_path)
    for name in ("latest.pt", "step_00000007.pt"):
        save_checkpoint(_payload(1), tmp_path / name)
        # The writer may finish a rename just before the kill; kill until something is left.
        for _ in range(5):
            _kill_writer_mid_save(tmp_path / name)
            if list(tmp_path.glob(f".{name}.*.tmp")):
                break
    leftovers = {p: p.stat().st_size for p in tmp_path.glob(".*.tmp")}
    assert {p.name.rsplit(".", 2)[0] for p in leftovers} == {".latest.pt", ".step_00000007.pt"}
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_text("keep")
    (tmp_path / "samples").mkdir()
    keep = [
        "notes.tmp",  # a user's file
        ".latest.pt.tmp",  # no random part
        "latest.pt.abcd1234.tmp",  # no leading dot
        ".latest.pt.abcd1234.tmp.bak",
        ".latest.pt.ABCD1234.tmp",  # mkstemp draws lower case only
        ".model.onnx.abcd1234.tmp",  # not a run file (export's temporary files)
        ".step_x.pt.abcd1234.tmp",
        "samples/.latest.pt.abcd1234.tmp",  # not in the run folder itself
    ]
    for name in keep:
        (tmp_path / name).write_text("keep")
    (tmp_path / ".config.json.abcd1234.tmp").write_text("{")  # an interrupted config write
    (tmp_path / ".step_00000001.pt.abcd1234.tmp").symlink_to(outside / "target")
    (tmp_path / ".step_00000002.pt.abcd1234.tmp").mkdir()

    with caplog.at_level(logging.INFO, logger="i2i.checkpoint"):
        removed = manager.remove_temporary_files()
    expected = {**leftovers, tmp_path / ".config.json.abcd1234.tmp": 1}
    assert dict(removed) == expected
    assert not any(p.exists() for p in expected)
    assert all((tmp_path / name).read_text() == "keep" for name in keep)
    assert (outside / "target").read_text() == "keep"
    assert (tmp_path / ".step_00000001.pt.abcd1234.tmp").is_symlink()
    assert (tmp_path / ".step_00000002.pt.abcd1234.tmp").is_dir()
    assert load_checkpoint(tmp_path / "latest.pt")["step"] >= 1
    total = sum(expected.values())
    assert f"removed {len(expected)} temporary file(s) of interrupted saves ({total:,} bytes)" in (
        caplog.text
    )
    assert manager.remove_temporary_files() == []


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
