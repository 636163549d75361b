"""DDP through torchrun (gloo on the CPU): two processes train, save and resume one run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from i2i.checkpoint import load_checkpoint
from i2i.training.monitor import read_loss_log

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
family: cyclegan
model: {netG: resnet_6blocks, netD: n_layers, n_layers_D: 2, ngf: 4, ndf: 4}
data: {preprocess: crop, load_size: 32, crop_size: 32, num_workers: 0}
batch_size: 2
n_epochs: 1
n_epochs_decay: 1
log_every: 1
tensorboard: false
progress: false
"""


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [*cmd, "-m", "i2i.cli", "train", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_torchrun_two_processes(tiny_dataset, tmp_path):
    (tmp_path / "ddp.yaml").write_text(CONFIG)
    run = tmp_path / "run"
    base = ["--config", str(tmp_path / "ddp.yaml"), "--data", str(tiny_dataset)]
    first = _torchrun(*base, "--out", str(run), "--max-steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("trained 2 steps") == 1  # only rank 0 reports
    ckpt = load_checkpoint(run / "latest.pt")
    # 8 images over 2 ranks with batch 2: 2 steps an epoch, each rank's RNG state kept.
    assert ckpt["step"] == 2 and ckpt["training_state"]["world_size"] == 2
    assert len(ckpt["training_state"]["rng"]) == 2
    second = _torchrun(*base, "--resume", str(run), "--max-steps", "4")
    assert second.returncode == 0, second.stderr[-3000:]
    assert [r["step"] for r in read_loss_log(run / "losses.jsonl")] == [1, 2, 3, 4]
    assert load_checkpoint(run / "latest.pt")["epoch"] == 2
