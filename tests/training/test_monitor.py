"""What a run writes for people: loss log, TensorBoard events, sample grids; GPU paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.training import train
from i2i.training.monitor import image_grid, read_loss_log
from tests.conftest import tiny_config


def test_run_writes_logs_tensorboard_and_samples(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(tiny_dataset, max_steps=4, log_every=2, sample_every=2, tensorboard=True)
    summary = train(cfg, run)
    assert summary.step == 4 and summary.checkpoint == run / "latest.pt"
    records = read_loss_log(run / "losses.jsonl")
    assert [r["step"] for r in records] == [2, 4]
    assert {"cycle_a", "gan_ab", "d_b", "lr_g", "lr_d"} <= set(records[0])
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert "loss/cycle_a" in acc.Tags()["scalars"] and "samples" in acc.Tags()["images"]
    assert [e.step for e in acc.Scalars("loss/cycle_a")] == [2, 4]
    grids = sorted((run / "samples").glob("step_*.png"))
    assert [g.name for g in grids] == ["step_00000002.png", "step_00000004.png"]
    # 2 images of the batch x 2 rows (A->B->A, B->A->B) x 3 columns of 32 px, 2 px padding
    assert Image.open(grids[0]).size == (3 * 34 + 2, 4 * 34 + 2)


def test_image_grid_layout():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4), 200, np.uint8)  # grayscale cells are repeated to RGB
    grid = image_grid([[a, b]], pad=1)
    assert grid.shape == (6, 11, 3)
    assert (grid[1:5, 1:5] == 0).all() and (grid[1:5, 6:10] == 200).all() and grid[0, 0, 0] == 255


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", ["off", "fp16", "bf16"])
def test_cuda_training_with_mixed_precision(tiny_dataset, tmp_path, amp):
    cfg = tiny_config(tiny_dataset, max_steps=3, device="cuda", amp=amp, channels_last=True)
    summary = train(cfg, tmp_path / "run")
    assert summary.step == 3 and all(np.isfinite(list(summary.last_losses.values())))
